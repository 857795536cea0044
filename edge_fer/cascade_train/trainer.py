"""The stage loop of the pico learner: sample, mine, boost, checkpoint.

Every stage (Markus et al. 2013, as in the reference learner):
  1. positives: every training face jittered and mirrored afresh; those the cascade so far still
     accepts are kept with their scores (the fraction kept estimates the cascade's TPR);
  2. negatives: `neg_ratio` x as many windows from the negative images that the cascade still
     accepts (bootstrapping; the fraction of draws kept estimates its FPR per window); learning
     stops once that is <= target_fpr;
  3. trees are added (GentleBoost, weights exp(-y * score)) until the stage reaches max_fpr on
     its training negatives at the threshold that keeps min_tpr of its positives, or until the
     stage's tree budget is spent; that threshold goes on the stage's last tree, the others get
     -1337 (never reject), which is how a stage is written in the pico format.
After every stage the cascade (pico format) and state.json (options, seeds, generator states,
per-stage records, elapsed time) are written atomically to the output folder; `resume` continues
from them and produces the same cascade as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_fer import fileio
from edge_fer.cascade_train import bootstrap, learner
from edge_fer.cascade_train.annotations import (
    InputReport,
    list_images,
    read_box_file,
    read_webfaces,
    split_images,
    split_paths,
)
from edge_fer.cascade_train.samples import (
    FaceTable,
    ImageStore,
    Windows,
    jittered_positives,
    load_annotated,
)
from edge_fer.detect.cascade import Cascade
from edge_fer.errors import UserError
from edge_fer.imageio import imwrite
from edge_fer.limits import check_number

STATE_FILE = "state.json"
CASCADE_FILE = "cascade.pico"
FORMAT_VERSION = 1

# options that name data: a resume compares them by the place they resolve to
PATH_KEYS = ("webfaces", "boxes", "backgrounds")

# upper bounds of options that size arrays: beyond them a run only runs out of memory
MAX_JITTER = 1000  # windows per face per stage (default 6)
MAX_NEG_RATIO = 100.0  # negatives per positive (default 0.5)
MAX_DRAWS = 10**15  # windows tried per stage (default 2e10; the kernels count in int64)

# options that define the learning problem: a resumed run must use the same ones
LEARNING_KEYS = (
    "webfaces",
    "boxes",
    "backgrounds",
    "val_fraction",
    "bg_val_fraction",
    "min_face",
    "max_faces",
    "max_images",
    "depth",
    "tests",
    "stage_trees",
    "min_tpr",
    "max_fpr",
    "jitter",
    "pos_jitter",
    "scale_jitter",
    "neg_ratio",
    "neg_annotated_share",
    "neg_annotated_min_fpr",
    "scan_share",
    "max_draws",
    "threshold_on",
    "seed",
)


@dataclass
class TrainConfig:
    out: str
    webfaces: list[str] = field(default_factory=list)
    boxes: list[str] = field(default_factory=list)
    backgrounds: list[str] = field(default_factory=list)
    val_fraction: float = 0.1  # last fraction of WebFaces images (name order) held out
    bg_val_fraction: float = 0.1  # last fraction of each background folder held out
    min_face: int = 20  # smallest face (px) used as a positive, and smallest negative window
    max_faces: int = 0  # 0: all; else a seeded subset (small runs)
    max_images: int = 0  # 0: all annotated images; else the first N in name order
    depth: int = 6
    tests: int = 1024  # random pixel tests tried per node
    stage_trees: list[int] = field(
        default_factory=lambda: [
            1,
            1,
            1,
            1,
            2,
            3,
            4,
            5,
            10,
            20,
            20,
            20,
            20,
            20,
            20,
            30,
            30,
            30,
            30,
            40,
        ]
    )  # tree budget of stage i (the last value repeats)
    min_tpr: list[float] = field(default_factory=lambda: [0.98, 0.985, 0.99, 0.995, 0.997])
    max_fpr: float = 0.5
    target_fpr: float = 1e-6  # stop when the mined FPR per window is at most this
    max_stages: int = 30
    jitter: int = 6  # windows per face per stage (alternately mirrored)
    pos_jitter: float = 0.05  # centre moved by up to this fraction of the size
    scale_jitter: float = 0.08  # size scaled by up to 1 +- this
    neg_ratio: float = 0.5  # negatives per positive in a stage
    neg_annotated_share: float = 0.5  # share of negative draws from annotated images
    # ... while the cascade accepts more than this fraction of windows; below it the windows
    # that still pass in annotated images are more and more the faces nobody annotated
    neg_annotated_min_fpr: float = 1e-3
    scan_share: float = 0.5  # share of negative sizes drawn like a multi-scale scan
    max_draws: int = 20_000_000_000  # windows tried per stage when mining negatives
    # stage thresholds keep min_tpr of the stage's own training positives (the reference
    # learner), or of "fresh" ones (a second, independent jitter that the stage does not learn
    # from; honest, but the stages then barely reject anything: see docs/cascade.md)
    threshold_on: str = "train"
    time_budget_h: float = 0.0  # 0: none; no new stage starts after this much time
    seed: int = 0
    threads: int = 0  # 0: numba's default
    verbose: bool = False

    def tree_budget(self, stage: int) -> int:
        return int(self.stage_trees[min(stage, len(self.stage_trees) - 1)])

    def stage_tpr(self, stage: int) -> float:
        return float(self.min_tpr[min(stage, len(self.min_tpr) - 1)])

    def check(self) -> None:
        """Every option, before the output folder is made or any data is read: NaN slipped
        through `x <= 0` tests (a traceback later), a negative --max-images sliced data off
        without a word, a huge --jitter ran out of memory."""
        if not str(self.out):  # before: Path("") is ".", and the messages said "--out ."
            raise UserError("is empty, which names no folder: give the run a folder", param="out")
        if not self.webfaces and not self.boxes:
            raise UserError("no annotated faces given (--webfaces DIR and/or --boxes FILE)")
        # the messages name the fields; the CLI puts the flags (same names) in their place
        if not 1 <= self.depth <= 10:
            raise UserError(f"must be in 1..10, got {self.depth}", param="depth")
        if not 1 <= self.tests <= 1 << 16:
            raise UserError(f"must be in 1..65536, got {self.tests}", param="tests")
        if not self.stage_trees or min(self.stage_trees) < 1:
            raise UserError("must be a list of positive tree counts", param="stage_trees")
        if not self.min_tpr or not all(0.0 < t <= 1.0 for t in self.min_tpr):
            raise UserError("values must be in (0, 1]", param="min_tpr")
        if not 0.0 < self.max_fpr <= 1.0:
            raise UserError(f"must be in (0, 1], got {self.max_fpr}", param="max_fpr")
        if not 0.0 <= self.target_fpr < 1.0:
            raise UserError(f"must be in [0, 1), got {self.target_fpr}", param="target_fpr")
        if self.max_stages < 1:
            raise UserError(f"must be >= 1, got {self.max_stages}", param="max_stages")
        _check_int(self.jitter, "jitter", 1, MAX_JITTER)
        if not 0 <= self.pos_jitter < 0.5:  # (one message named both jitters)
            raise UserError(f"must be in [0, 0.5), got {self.pos_jitter}", param="pos_jitter")
        if not 0 <= self.scale_jitter < 1:
            raise UserError(f"must be in [0, 1), got {self.scale_jitter}", param="scale_jitter")
        if self.min_face < 8:
            raise UserError(f"must be >= 8 pixels, got {self.min_face}", param="min_face")
        check_number(self.neg_ratio, "neg_ratio", 0.0, MAX_NEG_RATIO, lo_open=True)
        check_number(self.neg_annotated_min_fpr, "neg_annotated_min_fpr", 0.0, 1.0)
        check_number(self.neg_annotated_share, "neg_annotated_share", 0.0, 1.0)
        check_number(self.scan_share, "scan_share", 0.0, 1.0)
        _check_int(self.max_draws, "max_draws", 1, MAX_DRAWS)
        if self.threshold_on not in ("fresh", "train"):
            raise UserError(
                f"must be fresh or train, got {self.threshold_on!r}", param="threshold_on"
            )
        # the last fraction of the images is held out: 1 (or more) would hold out everything
        check_number(self.val_fraction, "val_fraction", 0.0, 1.0, hi_open=True)
        check_number(self.bg_val_fraction, "bg_val_fraction", 0.0, 1.0, hi_open=True)
        _check_int(self.seed, "seed", 0)  # numpy's generators take no negative seed
        _check_int(self.max_images, "max_images", 0)  # 0: all; [:-N] dropped the last N
        _check_int(self.max_faces, "max_faces", 0)
        # 0: no limit; a negative budget ended the run before its first stage
        check_number(self.time_budget_h, "time_budget_h", 0.0)

    def learning_options(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in LEARNING_KEYS}


@dataclass
class TrainData:
    store: ImageStore
    faces: FaceTable
    source: bootstrap.NegativeSource
    source_bg: bootstrap.NegativeSource  # backgrounds only (= source when there are none)
    report: InputReport
    summary: dict


def _check_int(value, param: str, lo: int, hi: int | None = None) -> None:
    """UserError naming `param` unless `value` is an integer in lo..hi."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and value >= lo and (hi is None or value <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi:g}"
        raise UserError(f"must be an integer {rng}, got {value!r}", param=param)


def _nfaces(images: list) -> int:
    return sum(len(im.faces) for im in images)


def load_data(cfg: TrainConfig, log: Callable[[str], None]) -> TrainData:
    t0 = time.perf_counter()
    report = InputReport()
    images = []
    n_img = n_face = val_img = val_face = 0  # WebFaces images and faces, and those held out
    for wf in cfg.webfaces:
        ims, rep = read_webfaces(wf)
        report.merge(rep)
        kept = split_images(ims, "train", cfg.val_fraction)
        n_img, val_img = n_img + len(ims), val_img + len(ims) - len(kept)
        n_face, val_face = n_face + _nfaces(ims), val_face + _nfaces(ims) - _nfaces(kept)
        images += kept
    for bf in cfg.boxes:
        ims, rep = read_box_file(bf)
        report.merge(rep)
        images += ims
    if cfg.max_images:
        images = images[: cfg.max_images]
    bg_paths = []  # listed before the faces are decoded: a mistake here costs no wait
    for d in cfg.backgrounds:
        found = list_images(d)
        mine = split_paths(found, "train", cfg.bg_val_fraction)
        if not mine:  # before: an empty folder trained on annotated images alone, silently
            why = f"all {len(found)} held out by --bg-val-fraction" if found else "none in it"
            raise UserError(f"{d} holds no image to train on ({why})", param="backgrounds")
        bg_paths += mine
    threads = max(1, min(8, os.cpu_count() or 1))
    store = ImageStore()
    faces, ann_idx, ann_boxes = load_annotated(images, store, report, cfg.min_face, threads)
    nfaces_all = len(faces)
    if cfg.max_faces and len(faces) > cfg.max_faces:
        pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(faces))[: cfg.max_faces])
        faces = FaceTable(faces.img[pick], faces.row[pick], faces.col[pick], faces.size[pick])
    if len(faces) == 0 and val_face:
        # before: "no positives: ... (the annotations list no faces)" when the validation split
        # had taken every face
        n = _nfaces(images)
        left = f"{n} faces for training, none usable" if n else "no face for training"
        bad = "".join(f"; {line}" for line in report.lines())
        raise UserError(
            f"{cfg.val_fraction:g} holds out {val_img} of the {n_img} WebFaces images "
            f"({val_face} of {n_face} faces) for validation, which leaves {left} (no positive "
            f"of at least {cfg.min_face} px){bad}: lower it",
            param="val_fraction",
        )
    if len(faces) == 0:
        bad = "; ".join(report.lines()) or "the annotations list no faces"
        raise UserError(f"no positives: no usable face of at least {cfg.min_face} px ({bad})")
    bg_idx = [k for k in store.add_paths(bg_paths, report, threads) if k >= 0]

    def usable(k: int) -> bool:
        return min(store.shape(k)) - 3 >= cfg.min_face

    bg_ok = [k for k in bg_idx if usable(k)]
    keep = [i for i, k in enumerate(ann_idx) if usable(k)]
    ann_ok = [ann_idx[i] for i in keep]
    ann_bx = [ann_boxes[i] for i in keep]
    share = cfg.neg_annotated_share
    if not bg_ok and share < 1.0:
        share = 1.0
    if not ann_ok and share > 0.0:
        share = 0.0
    source = bootstrap.NegativeSource.build(bg_ok, ann_ok, ann_bx, share)
    source_bg = bootstrap.NegativeSource.build(bg_ok, [], [], 0.0) if bg_ok else source
    if len(source) == 0:
        raise UserError(
            "no negative images: give --backgrounds DIR (face-free images) or allow negatives "
            "from annotated images (--neg-annotated-share > 0)"
        )
    store.arrays()
    summary = {
        "annotated_images": len(ann_idx),
        "faces": len(faces),
        "faces_usable": nfaces_all,
        "background_images": len(bg_ok),
        "negative_images": {"background": len(bg_ok), "annotated": len(ann_ok) if share else 0},
        "megapixels": round(store.megapixels, 1),
        "bad_input": report.to_json(),
        "load_seconds": round(time.perf_counter() - t0, 1),
    }
    log(
        f"data: {len(faces)} faces for positives in {len(ann_idx)} annotated images, "
        f"{len(bg_ok)} background images, {store.megapixels:.0f} Mpx, "
        f"loaded in {summary['load_seconds']} s"
    )
    for line in report.lines():
        log(f"data: {line}")
    return TrainData(store, faces, source, source_bg, report, summary)


class _CascadeBuilder:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        nn, nl = (1 << depth) - 1, 1 << depth
        self.codes = np.zeros((0, nn, 4), np.int8)
        self.leaves = np.zeros((0, nl), np.float32)
        self.thr = np.zeros(0, np.float32)

    @property
    def ntrees(self) -> int:
        return int(self.thr.shape[0])

    def add(self, codes: np.ndarray, leaves: np.ndarray, thr: float) -> None:
        self.codes = np.concatenate([self.codes, codes[None]])
        self.leaves = np.concatenate([self.leaves, leaves[None].astype(np.float32)])
        self.thr = np.concatenate([self.thr, np.array([thr], np.float32)])

    def arrays(self):
        # the kernels want at least one tree slot; ntrees = 0 means "accept everything"
        if self.ntrees == 0:
            nn, nl = (1 << self.depth) - 1, 1 << self.depth
            return (
                self.depth,
                np.zeros((1, nn, 4), np.int8),
                np.zeros((1, nl), np.float32),
                np.zeros(1, np.float32),
                0,
            )
        return self.depth, self.codes, self.leaves, self.thr, self.ntrees

    def cascade(self) -> Cascade:
        return Cascade(tdepth=self.depth, codes=self.codes, leaves=self.leaves, thresholds=self.thr)

    @classmethod
    def from_cascade(cls, c: Cascade, ntrees: int) -> _CascadeBuilder:
        b = cls(c.tdepth)
        b.codes = c.codes[:ntrees].copy()
        b.leaves = c.leaves[:ntrees].copy()
        b.thr = c.thresholds[:ntrees].copy()
        return b


def _eval(data: TrainData, win: Windows, casc) -> tuple[np.ndarray, np.ndarray]:
    return learner.score_windows(data.store, win, *casc)


def _tree_output(
    data: TrainData, win: Windows, codes: np.ndarray, leaves: np.ndarray, depth: int
) -> np.ndarray:
    one = (
        depth,
        codes[None],
        leaves[None][:, :].astype(np.float32),
        np.array([-np.inf], np.float32),
        1,
    )
    return _eval(data, win, one)[1]


def _mosaic(path: Path, data: TrainData, win: Windows, side: int) -> None:
    """A side x side grid of windows (48 px each, evenly spread over `win`), for inspection."""
    import cv2

    n = min(len(win), side * side)
    tile = 48
    canvas = np.zeros((side * tile, side * tile), np.uint8)
    for q, i in enumerate(np.linspace(0, len(win) - 1, n).astype(int)):
        img = data.store.image(int(win.img[i]))
        r, c, s = int(win.r[i]), int(win.c[i]), int(win.s[i])
        h = s // 2
        crop = img[max(r - h, 0) : r + h, max(c - h, 0) : c + h]
        if crop.size == 0:
            continue
        if win.sgn[i] < 0:
            crop = crop[:, ::-1]
        y, x = divmod(q, side)
        canvas[y * tile : (y + 1) * tile, x * tile : (x + 1) * tile] = cv2.resize(
            np.ascontiguousarray(crop), (tile, tile)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    imwrite(path, canvas)


def _fmt_time(s: float) -> str:
    s = round(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _check_new_out(out: Path, cfg: TrainConfig) -> None:
    """A new run goes into a new or empty folder, outside its data: it wrote cascade.pico and
    state.json over a user's files, and into the WebFaces or backgrounds folders."""
    from edge_fer.fileio import inside

    for flag, paths in (("--webfaces", cfg.webfaces), ("--boxes", cfg.boxes),
                        ("--backgrounds", cfg.backgrounds)):  # fmt: skip
        for p in paths:
            if inside(out, p) or inside(p, out):
                raise UserError(f"--out {out} is, lies in or holds {flag} {p}; give the run a "
                                "folder of its own")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} holds other files and no run ({STATE_FILE}); give the "
                        "run a new or empty folder")  # fmt: skip


def _same_option(key: str, saved, given) -> bool:
    """Whether a resumed run's option is the run's own: the data folders and files by the
    place they resolve to (wf, wf/ and /abs/wf are one folder), the rest as recorded."""
    if key in PATH_KEYS and isinstance(saved, list) and isinstance(given, list):
        return [os.path.realpath(str(p)) for p in saved] == [
            os.path.realpath(str(p)) for p in given
        ]
    return json.dumps(saved) == json.dumps(given)


def _resume_point(
    state: dict, state_path: Path, casc_path: Path, depth: int
) -> tuple[np.random.Generator, np.ndarray, Cascade | None]:
    """The generators and the cascade a resume continues from, every part of `state` it reads
    checked before the data is loaded: a damaged or hand-edited state.json, or a cascade.pico of
    another depth, was a KeyError or a numpy ValueError after minutes of loading images."""

    def bad(why: str) -> UserError:
        return UserError(f"{state_path} is not a train-cascade state ({why}); use a new --out")

    for key, kind in (("options", dict), ("data", dict), ("stages", list), ("rng", dict),
                      ("lanes", list)):  # fmt: skip
        if not isinstance(state.get(key), kind):
            raise bad(f"no {key!r} {kind.__name__}")
    for key in ("stage", "ntrees"):
        v = state.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"{key!r} is {v!r}, not a count")
    if not isinstance(state.get("elapsed_s"), (int, float)) or isinstance(state["elapsed_s"], bool):
        raise bad(f"'elapsed_s' is {state.get('elapsed_s')!r}, not seconds")
    last = state["stages"][-1] if state["stages"] else {"cascade_fpr_before": 1, "stage_fpr": 1}
    if not isinstance(last, dict) or not all(
        isinstance(last.get(k), (int, float)) for k in ("cascade_fpr_before", "stage_fpr")
    ):  # the next stage's FPR guess
        raise bad("its last stage record has no FPRs")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state["rng"]
        lanes = np.array([int(x) for x in state["lanes"]], dtype=np.uint64)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise bad(f"its generator states: {type(exc).__name__}: {exc}") from None
    if lanes.shape != (bootstrap.NLANES,):
        raise bad(f"{len(lanes)} mining lanes, not {bootstrap.NLANES}")
    ntrees = state["ntrees"]
    casc = Cascade.load(casc_path) if ntrees else None
    if casc is not None and casc.ntrees < ntrees:
        raise UserError(f"{casc_path} has fewer trees than {state_path} records")
    if casc is not None and casc.tdepth != depth:
        ran = state["options"].get("depth")
        if ran == casc.tdepth:  # the run's own cascade: the option changed, not the file
            raise UserError(
                f"--depth {depth} differs from the run's {ran}: resume with --depth {ran}, "
                "or start a new run (another --out)"
            )
        raise UserError(
            f"{casc_path} has trees of depth {casc.tdepth}, but the run learns depth {depth}: "
            "it is not this run's cascade"
        )
    return rng, lanes, casc


def _no_tree_reason(state: dict, cfg: TrainConfig, exhausted) -> str:
    """One line: why a run ended before its first tree."""
    why = state.get("stop_reason")
    if why == "negatives_exhausted" and exhausted:
        got, want, draws = exhausted
        return (
            f"learned no tree: stage 1 found {got} of the {want} negative windows it needs in "
            f"{draws} draws (--max-draws {cfg.max_draws}); give more or larger --backgrounds "
            "images, or raise --max-draws"
        )
    if why == "time_budget":
        return f"learned no tree: --time-budget {cfg.time_budget_h:g} h ran out before stage 1"
    return f"learned no tree ({why}): not enough positives and negatives to learn a stage"


def train(
    cfg: TrainConfig,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict:
    """Learn a cascade into cfg.out; returns the final state (also in cfg.out/state.json)."""
    if log is None:

        def log(msg: str) -> None:
            print(msg, flush=True)

    cfg.check()
    out = Path(cfg.out)
    state_path = out / STATE_FILE
    casc_path = out / CASCADE_FILE
    if cfg.threads:
        import numba

        numba.set_num_threads(max(1, min(cfg.threads, numba.config.NUMBA_NUM_THREADS)))

    state: dict | None = None
    resumed: tuple[np.random.Generator, np.ndarray, Cascade | None] | None = None
    if state_path.exists():
        if not resume:
            raise UserError(f"{out} already holds a training run: use --resume or a new --out")
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {state_path}: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
            raise UserError(f"{state_path} was written by another version of the trainer")
        resumed = _resume_point(state, state_path, casc_path, cfg.depth)
        saved = state["options"]
        mine = cfg.learning_options()
        diff = [k for k in LEARNING_KEYS if not _same_option(k, saved.get(k), mine[k])]
        if diff:
            k = diff[0]
            raise UserError(
                f"--resume with different options than the run in {out} ({k}: "
                f"{saved.get(k)!r} there, {mine[k]!r} now); repeat its options or use a new --out"
            )
    elif resume:
        # a run stopped before its first stage ended removes what it wrote (below), so the
        # advice "add --resume" cannot apply to it; a mistyped --out must not start a new run
        raise UserError(
            f"nothing to resume in {out} (no {STATE_FILE}; a run stopped before its first "
            "stage ended leaves none): run the command without --resume"
        )
    else:
        _check_new_out(out, cfg)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None

    try:
        data = load_data(cfg, log)
        return _learn(cfg, out, data, state, resumed, log, command)
    except BaseException as exc:
        # no positives, no tree, Ctrl-C before stage 1 ended: a new run left nothing to resume,
        # only an empty folder or debug images, which --resume refused ("nothing to resume")
        # and a rerun refused too ("holds other files")
        if state is None and not state_path.exists():
            _remove_unfinished(out, created)
            if isinstance(exc, KeyboardInterrupt):
                gone = f"removed {out}" if not out.exists() else f"{out} left as it was"
                log(f"stopped before stage 1 ended: nothing to resume ({gone}); start again")
        raise


def _remove_unfinished(out: Path, created: bool) -> None:
    """What a new run wrote into `out` before its first state.json, and `out` itself if the
    run made it: only the run's own files by name (the folder was new or empty when it
    started), never a file someone put there meanwhile."""
    debug = out / "debug"
    for f in [out / CASCADE_FILE, *sorted(debug.glob("negatives_*.png"))]:
        with contextlib.suppress(OSError):
            f.unlink()
    for d in (debug, out) if created else (debug,):
        with contextlib.suppress(OSError):  # not empty: someone else's files are in it
            d.rmdir()


def _learn(
    cfg: TrainConfig,
    out: Path,
    data: TrainData,
    state: dict | None,
    resumed: tuple[np.random.Generator, np.ndarray, Cascade | None] | None,
    log: Callable[[str], None],
    command: str | None,
) -> dict:
    """The stages of `train` on loaded data, from `state` (None: a new run)."""
    state_path = out / STATE_FILE
    casc_path = out / CASCADE_FILE
    pix, off, H, W = data.store.arrays()

    if state is None:
        rng = np.random.default_rng(cfg.seed)
        lanes = bootstrap.seed_lanes(rng)
        builder = _CascadeBuilder(cfg.depth)
        state = {
            "format": FORMAT_VERSION,
            "options": cfg.learning_options(),
            "data": data.summary,
            "stage": 0,
            "ntrees": 0,
            "stages": [],
            "elapsed_s": 0.0,
            "done": False,
            "stop_reason": None,
            "command": command,
        }
    else:
        if state["data"].get("faces") != data.summary["faces"]:
            raise UserError(
                f"the data changed since the run in {out} started "
                f"({state['data'].get('faces')} faces then, {data.summary['faces']} now)"
            )
        assert resumed is not None
        rng, lanes, casc = resumed
        builder = (
            _CascadeBuilder.from_cascade(casc, state["ntrees"])
            if casc
            else _CascadeBuilder(cfg.depth)
        )
        log(f"resuming at stage {state['stage'] + 1} with {builder.ntrees} trees")
        reason = state.get("stop_reason")
        if state.get("done") and (
            (reason == "max_stages" and state["stage"] < cfg.max_stages)
            or reason == "time_budget"
            or (reason == "target_fpr" and cfg.target_fpr < state.get("final_fpr_estimate", 0))
        ):
            state["done"] = False
        elif state.get("done"):
            log(f"the run in {out} is complete ({state.get('stop_reason')})")
            return state

    exhausted: tuple[int, int, int] | None = None
    t_start = time.perf_counter() - float(state["elapsed_s"])
    smin = int(cfg.min_face)
    smax = 1 << 20

    def checkpoint() -> None:
        state["ntrees"] = builder.ntrees
        state["rng"] = rng.bit_generator.state
        state["lanes"] = [int(x) for x in lanes]
        state["elapsed_s"] = round(time.perf_counter() - t_start, 2)
        if builder.ntrees:  # atomic (edge_fer.fileio): a resume finds the old or the new
            fileio.write_bytes(casc_path, builder.cascade().to_bytes())
        fileio.write_json(state_path, state, indent=1)

    while True:
        stage = int(state["stage"])
        if stage >= cfg.max_stages:
            state["done"], state["stop_reason"] = True, "max_stages"
            break
        if cfg.time_budget_h and time.perf_counter() - t_start >= cfg.time_budget_h * 3600:
            state["done"], state["stop_reason"] = True, "time_budget"
            break
        ts = time.perf_counter()
        casc = builder.arrays()
        # 1. positives
        pos = jittered_positives(
            data.faces, rng, cfg.jitter, cfg.pos_jitter, cfg.scale_jitter, smin
        )
        ok, psc = _eval(data, pos, casc)
        cascade_tpr = float(ok.mean()) if len(pos) else 0.0
        pos, psc = pos.take(np.flatnonzero(ok)), psc[ok]
        cal, csc = Windows.empty(), np.zeros(0, np.float32)
        if cfg.threshold_on == "fresh":
            cal = jittered_positives(
                data.faces, rng, cfg.jitter, cfg.pos_jitter, cfg.scale_jitter, smin
            )
            okc, csc = _eval(data, cal, casc)
            cal, csc = cal.take(np.flatnonzero(okc)), csc[okc]
        if len(pos) == 0 or (cfg.threshold_on == "fresh" and len(cal) == 0):
            state["done"], state["stop_reason"] = True, "no_positives_left"
            break
        # 2. negatives
        want = max(1, round(cfg.neg_ratio * len(pos)))
        fpr_guess = 1.0
        if state["stages"]:
            last = state["stages"][-1]
            fpr_guess = max(last["cascade_fpr_before"] * last["stage_fpr"], 1e-12)
        source = data.source if fpr_guess > cfg.neg_annotated_min_fpr else data.source_bg
        burst = bootstrap.burst_for(want / fpr_guess, len(source))
        # no need to draw more than it takes to show that the FPR is below the target
        limit = cfg.max_draws
        if cfg.target_fpr > 0:
            limit = min(limit, math.ceil(want / cfg.target_fpr))
        tm = time.perf_counter()
        neg, nsc, draws = bootstrap.mine_negatives(
            (pix, off, H, W),
            source,
            casc,
            lanes,
            want,
            smin,
            smax,
            limit,
            cfg.scan_share,
            burst,
        )
        mine_s = time.perf_counter() - tm
        cascade_fpr = len(neg) / max(draws, 1)
        if cfg.verbose and len(neg):
            _mosaic(out / "debug" / f"negatives_{stage + 1:02d}.png", data, neg, 10)
        if cascade_fpr <= cfg.target_fpr:
            state["done"], state["stop_reason"] = True, "target_fpr"
            state["final_fpr_estimate"] = cascade_fpr
            log(f"cascade FPR {cascade_fpr:.2e} per window <= target {cfg.target_fpr:.1e}: done")
            break
        # too few to learn from; with few faces `want` itself is below 10, and all of them
        # found is not "exhausted" (a run on 3 faces stopped at once with 0 trees)
        if len(neg) < min(want, max(10, want // 100)):
            state["done"], state["stop_reason"] = True, "negatives_exhausted"
            state["final_fpr_estimate"] = cascade_fpr
            log(f"only {len(neg)} of {want} negatives in {draws} draws (--max-draws): stopping")
            exhausted = (len(neg), want, draws)
            break
        # 3. boost the stage
        win = Windows.concat([pos, neg])
        ispos = np.zeros(len(win), np.bool_)
        ispos[: len(pos)] = True
        scores = np.concatenate([psc, nsc]).astype(np.float32)
        min_tpr = cfg.stage_tpr(stage)
        budget = cfg.tree_budget(stage)
        tl = time.perf_counter()
        thr = np.float32(0.0)
        tpr = fpr = tpr_train = 1.0
        new = 0
        for _ in range(budget):
            wt = learner.boost_weights(ispos, scores)
            codes, leaves, node = learner.grow_tree(
                pix, off, H, W, win, ispos, wt, cfg.depth, cfg.tests, rng
            )
            scores = (scores + leaves[node]).astype(np.float32)
            if len(cal):
                csc = (csc + _tree_output(data, cal, codes, leaves, cfg.depth)).astype(np.float32)
                thr = learner.stage_threshold(csc, min_tpr)
                tpr = float((csc > thr).mean())
            else:
                thr = learner.stage_threshold(scores[ispos], min_tpr)
                tpr = float((scores[ispos] > thr).mean())
            tpr_train = float((scores[ispos] > thr).mean())
            fpr = float((scores[~ispos] > thr).mean())
            builder.add(codes, leaves, float(learner.SKIP_THRESHOLD))
            new += 1
            if cfg.verbose:
                log(
                    f"  tree {builder.ntrees}: stage TPR {tpr:.4f} (training positives "
                    f"{tpr_train:.4f}) FPR {fpr:.4f} thr {thr:.4f}"
                )
            if fpr <= cfg.max_fpr:
                break
        builder.thr[-1] = thr
        learn_s = time.perf_counter() - tl
        rec = {
            "stage": stage + 1,
            "trees": new,
            "total_trees": builder.ntrees,
            "threshold": float(thr),
            "min_tpr": min_tpr,
            "stage_tpr": round(tpr, 5),
            "stage_tpr_train": round(tpr_train, 5),
            "stage_fpr": round(fpr, 5),
            "cascade_tpr_before": round(cascade_tpr, 5),
            "cascade_fpr_before": float(f"{cascade_fpr:.4g}"),
            "positives": len(pos),
            "negatives": len(neg),
            "draws": draws,
            "mine_s": round(mine_s, 2),
            "learn_s": round(learn_s, 2),
            "seconds": round(time.perf_counter() - ts, 2),
        }
        state["stages"].append(rec)
        state["stage"] = stage + 1
        checkpoint()
        log(
            f"stage {stage + 1}: {new} trees (total {builder.ntrees}) | stage TPR {tpr:.4f} "
            f"FPR {fpr:.3f} | cascade before: TPR {cascade_tpr:.4f} FPR {cascade_fpr:.2e} | "
            f"samples {len(pos)}+ {len(neg)}- ({draws:.3g} draws) | "
            f"{rec['seconds']:.1f} s (mine {mine_s:.1f}) | elapsed "
            f"{_fmt_time(time.perf_counter() - t_start)}"
        )
    if builder.ntrees == 0:
        # no cascade to write: a run that "finished" with exit 0 named a cascade.pico that did
        # not exist, and its state.json made the folder a complete run that --resume skipped
        # (`train` removes the folder if the run made it)
        raise UserError(_no_tree_reason(state, cfg, exhausted))
    checkpoint()
    log(
        f"finished ({state['stop_reason']}): {builder.ntrees} trees in {state['stage']} stages, "
        f"{_fmt_time(state['elapsed_s'])}; cascade: {casc_path}"
    )
    return state


# a list longer than this is a typo: stages past the list repeat its last value, and
# "1x999999999999" was a MemoryError traceback while the list was built
MAX_LIST = 1000


def parse_list(text: str, kind: type, param: str | None = None, limit: int = MAX_LIST) -> list:
    """'1,1,2,3x4,10' -> [1, 1, 2, 3, 3, 3, 3, 10] (NxK repeats N K times); at most `limit`
    values. UserError (about `param`, "the list" when None) for text that is no such list."""
    param = param or "the list"
    out: list = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "x" in part:
                v, n = part.split("x")
                count = int(n)
                if count < 1:  # (0 or a negative count dropped the value silently)
                    raise UserError(f"repeat counts must be >= 1, got {part!r}", param=param)
                if count > limit - len(out):  # before the list is built
                    raise UserError(
                        f"has more than {limit} values (at {part!r}); the last value "
                        "repeats by itself",
                        param=param,
                    )
                out += [kind(v)] * count
            else:
                out.append(kind(part))
        except ValueError:
            raise UserError(
                f"must be numbers like '1,1,2,20x4', got {text!r}", param=param
            ) from None
        if len(out) > limit:
            raise UserError(f"has more than {limit} values", param=param)
    if not out:
        raise UserError(f"is empty: {text!r}", param=param)
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `edge-fer train-cascade`")
