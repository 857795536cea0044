"""`edge-fer eval`, `edge-fer classify` and `edge-fer models`.

eval and classify run an exported ONNX model through ONNX Runtime and need no torch; the
default model is the one bundled in edge_fer/assets. `models` lists the training zoo (torch).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from edge_fer import fileio
from edge_fer.cli.common import HelpFormatter, add_skip_bad, thread_count
from edge_fer.cli.options import input_path

SPLIT_CHOICES = ("train", "public-test", "private-test", "test", "all")


def _model_args(p) -> None:
    p.add_argument(
        "--model",
        type=input_path,
        default=None,
        help="exported .onnx model (default: the bundled model)",
    )
    p.add_argument(
        "--backend",
        default="onnxruntime",
        choices=("onnxruntime", "tensorrt"),
        help="inference engine",
    )
    p.add_argument("--threads", type=thread_count, default=0,
                   help="inference threads (0: the backend's default)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64, help="faces per inference call")
    p.add_argument(
        "--tta",
        default="auto",
        choices=("auto", "none", "flip", "zoom-flip"),
        help="test-time augmentation: average the probabilities of the face's mirror "
        "image (flip) and of a 10%% zoom (zoom-flip: 4 views, 4x the work); auto: "
        "what the model's metadata recommends (the bundled model: zoom-flip)",
    )


def register(sub) -> None:
    fmt = HelpFormatter
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a labelled dataset",
        description="Accuracy, top-2 accuracy, macro-F1, per-class metrics, "
        "confusion matrix and latency of an exported model on a dataset: "
        "fer2013.csv, FER2013 image folders (split by file-name prefix), one folder "
        "per class, or JAFFE file names. A model trained with --align gets the faces "
        "aligned on their eyes first, as its training faces were.",
        epilog="Labels: by default every dataset class must exist in the model's "
        "vocabulary. --label-set/--classes evaluate in another vocabulary instead: "
        "dataset classes and model outputs are mapped onto it "
        "(edge_fer.labels.mapping; model probabilities of classes that merge are "
        "summed), dataset samples with no counterpart are dropped and counted, "
        "model classes with no counterpart lose their probability mass. "
        "--label-set dataset compares on the dataset's vocabulary (e.g. a dataset with "
        "contempt and no neutral, or 3 valence groups); the summary and the JSON "
        "('vocabulary') say which classes were compared, which model classes were "
        "dropped or merged, and which dataset classes had no counterpart.",
        formatter_class=fmt,
    )
    p.add_argument("--data", type=input_path, required=True, help="dataset folder or fer2013.csv")
    p.add_argument(
        "--split",
        default=None,
        choices=SPLIT_CHOICES,
        help="FER2013 split (test = public + private); other layouts evaluate all "
        "their images [default: private-test]",
    )
    _model_args(p)
    p.add_argument(
        "--json",
        dest="json_out",
        default=None,
        metavar="OUT",
        help="write the full report as JSON here ('-': stdout)",
    )
    p.add_argument(
        "--png",
        default=None,
        help="confusion-matrix image [default: OUT with .png when --json is a file]",
    )
    voc = p.add_mutually_exclusive_group()
    voc.add_argument(
        "--label-set",
        default=None,
        help="evaluate in this named vocabulary: fer2013, affectnet8, multipie6, "
        "grouped6, grouped3; or 'dataset': the dataset's own classes that the model's "
        "classes map onto (cross-dataset evaluation)",
    )
    voc.add_argument(
        "--classes", default=None, help="evaluate in this vocabulary, comma-separated class names"
    )
    add_skip_bad(p, "--data", "the summary and the JSON report: skipped_entries")
    p.add_argument(
        "--layout",
        default=None,
        choices=("fer2013-csv", "fer2013-folder", "class-folders", "jaffe"),
        help="dataset layout [default: detected]",
    )
    p.add_argument(
        "--latency-samples",
        type=int,
        default=200,
        help="faces timed one at a time for the batch-1 latency (0: skip)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not cache the decoded dataset")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="let --json/--png replace a file that is not an earlier eval's report or image "
        "(those are replaced anyway)",
    )
    p.set_defaults(func=run_eval)

    c = sub.add_parser(
        "classify",
        help="classify already-cropped face images",
        description="Print the expression of each face image (an already-cropped "
        "face). A folder stands for its images at any depth (a dataset's class folders), "
        "a quoted glob for the images it matches (GIFs are not listed; a GIF named here "
        "is classified on its first frame). A model trained with --align "
        "gets each face aligned on its eyes first, as its training faces were.",
        epilog="An image that cannot be used (unreadable, not an image, over the size "
        "limits, too small) is skipped with a warning line naming it, as run and detect "
        "skip it; the others are still classified and printed. Exit codes: 0 all "
        "classified, 1 some skipped, 2 a mistake (a missing file, a folder of no image) "
        "or no image usable (docs/runtime.md, Photos).",
        formatter_class=fmt,
    )
    c.add_argument("images", nargs="+", metavar="FACE_IMAGE")
    _model_args(c)
    c.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"path", "label", "probs": {class: p}}',
    )
    # default None, filled in by run_classify: given with --json, it is refused
    c.add_argument("--top", type=int, default=None,
                   help="classes shown per line (default 3); not with --json, whose probs "
                   "hold every class")  # fmt: skip
    c.set_defaults(func=run_classify)

    # fmt: off
    m = sub.add_parser("models", help="list the model zoo (params, MACs) and the bundled model",
                       description="The architectures `edge-fer train --arch` accepts, with "
                       "parameters and multiply-accumulates per face (needs the train extra for "
                       "torch).", formatter_class=fmt)
    # fmt: on
    m.add_argument("--input-size", type=int, default=48, help="input side for the MACs")
    m.add_argument("--num-classes", type=int, default=7, help="classes of the head")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(func=run_models)


# -- eval ---------------------------------------------------------------------------------


def load_classifier(args):
    from edge_fer.classify import Classifier
    from edge_fer.errors import UserError

    if args.threads < 0:
        raise UserError("--threads must be >= 0")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    return Classifier.load(
        args.model, backend=args.backend, threads=args.threads or None, tta=args.tta
    )


def eval_dataset(
    clf,
    data: str,
    split: str | None = None,
    layout: str | None = None,
    skip_bad: bool = False,
    target: tuple[str, ...] | None = None,
    batch_size: int = 64,
    latency_samples: int = 200,
    cache: bool = True,
    progress: bool = True,
) -> dict:
    """The evaluation behind `edge-fer eval` (also used by benchmarks/zoo_table.py)."""
    from edge_fer import __version__
    from edge_fer.data import load_dataset
    from edge_fer.data.loaders import detect_layout
    from edge_fer.evaluate import evaluate

    path = Path(data)
    layout = layout or detect_layout(path)
    if layout.startswith("fer2013"):
        split = split or "private-test"
    else:
        if split not in (None, "all"):
            print(
                f"note: a {layout} dataset has no {split} split; evaluating all its images",
                file=sys.stderr,
            )
        split = "all"
    faces = load_dataset(
        path, split, size=clf.input_size, layout=layout, skip_bad=skip_bad, cache=cache
    )
    rep = evaluate(
        clf,
        faces,
        target=target,
        batch_size=batch_size,
        latency_samples=latency_samples,
        progress=progress,
    )
    info = clf.info()
    info.pop("provenance", None)
    head = {
        "model": str(clf.path),
        "model_info": info,
        "data": str(path),
        "layout": layout,
        "split": split,
        "edge_fer_version": __version__,
    }
    # which entries --skip-bad skipped (the first SKIPPED_KEPT), not only how many
    return {**head, **rep, "skipped_entries": list(faces.skipped_entries)}


def _target(args):
    from edge_fer import labels as L
    from edge_fer.errors import UserError

    if args.label_set is not None:  # "" is a mistake, not "not given"
        name = args.label_set.strip().lower()
        if name == "dataset":
            return "dataset"
        if name not in L.VOCABULARIES:  # (vocabulary() would say `name`)
            raise UserError(
                f"{args.label_set!r} is an unknown label set; choose dataset, "
                f"{', '.join(L.VOCABULARIES)}",
                param="label_set",
            )
        return L.vocabulary(name)
    if args.classes is not None:
        names = tuple(L.canonical(c) for c in args.classes.split(",") if c.strip())
        if not names:
            raise UserError("--classes names no class")
        return names
    return None


def _eval_report(path: str) -> dict | None:
    """The report `edge-fer eval --json` wrote at `path`, or None for any other file."""
    return fileio.json_with_keys(
        path, {"accuracy", "per_class", "confusion_matrix", "edge_fer_version"}
    )


def _is_eval_report(path: str) -> bool:
    return _eval_report(path) is not None


def _report_names(report: str, png: str) -> bool:
    """Whether `report` is an earlier eval's report whose confusion matrix is `png` (eval
    images written before 2026-12-05 carry no mark of their own)."""
    named = (_eval_report(report) or {}).get("confusion_png")
    try:
        return isinstance(named, str) and os.path.samefile(named, png)
    except (OSError, ValueError):
        return False


def _check_outputs(args, png: str | None) -> None:
    """--json and --png must not overwrite the model, the dataset (a file, or an image in the
    dataset's folder) or each other: checked before the evaluation runs."""
    from edge_fer.classify import default_model_path
    from edge_fer.errors import UserError
    from edge_fer.evaluate import is_eval_png
    from edge_fer.fileio import check_collisions, inside
    from edge_fer.imageio import IMAGE_EXTS

    # the image made beside --json when --png is not given is named as such, not as a --png
    # the user never passed
    png_name = "--png" if args.png else "the confusion matrix beside --json,"
    outputs = [("--json", args.json_out if args.json_out != "-" else None), (png_name, png)]
    for name, path in outputs:  # said now, not after the work (missing folders are made)
        # "reports/" named a folder, and a file "reports" (and "reports.png") was written
        if path:
            fileio.check_output_file(path, f"{name} {path}")
        if path and not fileio.is_stream(path):
            # a folder no file can be made in (/proc, read-only) was found after the work,
            # and named the PNG derived from --json rather than the flag given
            try:
                fileio.check_file_can_be_made(path, "")
            except UserError as exc:
                raise UserError(f"{name} {exc.message}") from None
    if args.latency_samples < 0:
        raise UserError(
            f"--latency-samples must be >= 0 (0: no timing), got {args.latency_samples}"
        )
    inputs = [("--data", args.data)]
    try:
        inputs.append(
            ("--model", args.model)
            if args.model
            else ("the bundled model", str(default_model_path()))
        )
    except UserError:
        pass
    check_collisions(outputs, inputs)
    if Path(args.data).is_dir():
        for name, out in outputs:  # as given and resolved: a symlink in it is part of it
            if out and inside(out, args.data) and Path(out).suffix.lower() in IMAGE_EXTS:
                raise UserError(
                    f"{name} {out} is inside --data {args.data} and named like an "
                    "image: an output must not overwrite the dataset"
                )
    # after the collisions and the dataset: an input named as the output is said as such.
    # An earlier eval's report and image are replaced; any other file only with --force: a
    # model named by mistake (`--json vgg.onnx`), a config.json or a photo.png were replaced
    json_out = outputs[0][1]

    def our_png(path: str) -> bool:  # an image made before the mark: its report names it
        return is_eval_png(path) or bool(json_out and _report_names(json_out, path))

    fileio.check_replaceable(f"{outputs[0][0]} {json_out}", json_out, _is_eval_report,
                             "eval report", args.force)  # fmt: skip
    fileio.check_replaceable(f"{png_name} {png}", png, our_png, "eval image", args.force)
    # the image is always PNG: conf.jpg held PNG bytes under a JPEG name (a device such as
    # /dev/null is written through, whatever its name)
    if args.png and Path(args.png).suffix.lower() != ".png" and not fileio.is_stream(args.png):
        raise UserError(f"--png {args.png}: the confusion matrix is a PNG image; name it .png")


def run_eval(args) -> int:
    from edge_fer.errors import UserError
    from edge_fer.evaluate import draw_confusion, summary_text, write_png

    target = _target(args)
    png = args.png
    # a PNG beside a report file, not beside a device or pipe (before: --json /dev/stdout made
    # a regular file /dev/stdout.png)
    if (
        png is None
        and args.json_out
        and args.json_out != "-"
        and not fileio.is_stream(args.json_out)
    ):
        png = str(Path(args.json_out).with_suffix(".png"))
    _check_outputs(args, png)
    clf = load_classifier(args)
    try:
        rep = eval_dataset(
            clf,
            args.data,
            args.split,
            args.layout,
            args.skip_bad,
            target,
            args.batch_size,
            args.latency_samples,
            cache=not args.no_cache,
            progress=not args.no_progress,
        )
    finally:
        clf.close()
    if png:
        title = (
            f"{Path(rep['model']).name} on {Path(rep['data']).name} {rep['split']}: "
            f"acc {rep['accuracy']:.3f}  macro-F1 {rep['macro_f1']:.3f}  n {rep['n']}"
        )
        write_png(draw_confusion(rep["confusion_matrix"], rep["labels"], title), png)
        rep["confusion_png"] = str(png)
    text = summary_text(rep)
    if rep.get("skipped_entries"):  # the summary counts them; name them (the first ones)
        from edge_fer.data.faceset import skipped_text

        lines = text.split("\n")
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("data ")), len(lines))
        lines.insert(at, f"skipped   {skipped_text(rep['skipped_entries'], rep['skipped'])}")
        text = "\n".join(lines)
    if args.json_out == "-":
        print(text, file=sys.stderr)
        try:
            print(fileio.dumps(rep))
        except ValueError as exc:
            raise UserError(f"--json -: {fileio.first_line(exc)}") from None
    else:
        if args.json_out:
            try:
                Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # save_json says what is wrong with the path, in one line
            fileio.save_json(args.json_out, rep, "--json")
        print(text)
        if args.json_out:
            print(f"report    {args.json_out}" + (f"  confusion matrix {png}" if png else ""))
        elif png:
            print(f"confusion matrix {png}")
    return 0


# -- classify -----------------------------------------------------------------------------

MIN_SIDE = 8


def _expand(paths: list[str]) -> list[Path]:
    """The images named: a folder's at any depth (a dataset's class folders), a quoted glob's
    as run and detect list them. A name that cannot be an input (missing, a pipe) or a folder
    or glob of no image is the user's mistake: one line before the model loads, as in detect."""
    from edge_fer.errors import UserError
    from edge_fer.imageio import image_files, printable
    from edge_fer.runtime.sources import (
        SourceSpec,
        has_glob,
        list_images,
        named_file_problem,
        named_input,
        no_images,
    )

    out: list[Path] = []
    for s in paths:
        if not s.strip():  # Path("") is ".": the whole working folder was classified
            raise UserError("an empty IMAGE name; give a file, folder or quoted glob")
        # file:// as run reads it; other URIs refused in one line
        s = named_input(s, "classify", "image files, folders and globs")
        p = Path(s)
        if p.is_dir():
            out.extend(image_files(p) or no_images(f"folder {printable(p)}"))
        elif has_glob(s) and not p.exists():  # a quoted pattern, as run and detect take it
            spec = SourceSpec(s, "images", s, False, "images")
            out.extend(Path(f) for f in list_images(spec, lead=""))
        else:
            why = named_file_problem(p)
            if why:
                raise UserError(f"{printable(p)}: {why}")
            out.append(p)
    return out


def _read_face(p: Path):
    """(grayscale uint8 image, None) or (None, why it cannot be used): run's and detect's
    reasons (one function, load_image), and a size too small for a face."""
    import cv2

    from edge_fer.runtime.sources import load_image

    img, why = load_image(str(p), cv2.IMREAD_GRAYSCALE)  # sizes from the header first
    if img is None:
        return None, why
    if min(img.shape[:2]) < MIN_SIDE:
        h, w = img.shape[:2]
        return None, f"{w}x{h} is too small for a face crop (at least {MIN_SIDE}x{MIN_SIDE})"
    return img, None


def run_classify(args) -> int:
    from edge_fer.errors import UserError

    if args.top is not None and args.json:  # before: ignored, every class printed
        raise UserError(
            "--top is for the text lines; --json prints every class's probability (probs) "
            "and the label"
        )
    if args.top is None:
        args.top = 3
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    from edge_fer.imageio import printable

    paths = _expand(args.images)  # a mistake in the names fails before the model loads
    clf = load_classifier(args)
    failed = 0
    try:
        for i in range(0, len(paths), args.batch_size):
            chunk = paths[i : i + args.batch_size]
            ok_paths, faces = [], []
            for p in chunk:
                img, why = _read_face(p)
                if img is None:
                    failed += 1
                    _skip(p, why, len(paths))
                else:
                    ok_paths.append(p)
                    faces.append(img)
            probs = clf.predict_faces(faces)  # aligned first when the model was trained so
            for p, pr in zip(ok_paths, probs):
                order = pr.argsort()[::-1]
                label = clf.classes[order[0]]
                if args.json:
                    rec = {
                        "path": str(p),
                        "label": label,
                        "probs": {c: round(float(v), 6) for c, v in zip(clf.classes, pr)},
                    }
                    try:  # strict JSON Lines: no NaN/Infinity
                        print(fileio.dumps(rec, indent=None))
                    except ValueError as exc:
                        from edge_fer.errors import UserError

                        raise UserError(f"{p}: {fileio.first_line(exc)}") from None
                else:
                    rest = ", ".join(f"{clf.classes[k]} {pr[k]:.2f}" for k in order[1 : args.top])
                    line = f"{printable(p)}: {label} {pr[order[0]]:.2f}"  # one line, any name
                    print(line + (f"  ({rest})" if rest else ""))
            sys.stdout.flush()
    finally:
        clf.close()
    return _classify_exit(failed, len(paths))


def _skip(p: Path, why: str, total: int) -> None:
    """One warning line for an image that cannot be used, as run and detect say it; the
    user's mistake in one line when it was the only one."""
    from edge_fer.errors import UserError
    from edge_fer.imageio import printable
    from edge_fer.runtime.sources import skip_line

    if total == 1:
        raise UserError(f"{printable(p)}: {why}")
    print(f"edge-fer classify: warning: {skip_line(p, why)}", file=sys.stderr, flush=True)


def _classify_exit(skipped: int, total: int) -> int:
    """As run and detect (docs/runtime.md, Photos): 2 when no image could be used, 1 when
    some were skipped and the others classified, else 0."""
    from edge_fer.errors import UserError
    from edge_fer.runtime.sources import skipped_error

    if skipped and skipped == total:
        raise UserError(f"none of the {total} images could be used (listed above)")
    if skipped:
        print(f"edge-fer classify: error: {skipped_error(skipped, total, 'images')}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


# -- models -------------------------------------------------------------------------------


def run_models(args) -> int:
    from edge_fer.errors import UserError
    from edge_fer.preprocess import check_train_size

    rows = []
    check_train_size(args.input_size)
    if not 2 <= args.num_classes <= 1000:
        raise UserError(f"--num-classes must be in 2..1000, got {args.num_classes}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(
            "`edge-fer models` needs torch to build the architectures: "
            "python3 -m pip install '.[train]' in the edge-fer checkout"
        ) from None
    from edge_fer.models import create_model, list_models, model_info

    for name in list_models():
        kw = {"input_size": args.input_size} if name == "cnn4" else {}
        try:
            model = create_model(name, num_classes=args.num_classes, **kw)
            info = model_info(model, args.input_size, 1)
        except (RuntimeError, ValueError) as exc:  # a side too small for its downsampling
            raise UserError(
                f"{name} cannot take {args.input_size}x{args.input_size} inputs "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from None
        rows.append({"arch": name, **info, "about": _about(type(model).__doc__)})
    bundled = _bundled_info()
    if args.json:
        print(json.dumps({"zoo": rows, "bundled": bundled}, indent=2))
        return 0
    print(
        f"{'arch':<14} {'params':>10} {'MMACs':>9}  about  (input 1x{args.input_size}x"
        f"{args.input_size}, {args.num_classes} classes)"
    )
    for r in rows:
        print(f"{r['arch']:<14} {r['params']:>10,} {r['macs'] / 1e6:>9.1f}  {r['about']}")
    if bundled:
        print(
            f"\nbundled default model: {bundled['path']} ({bundled.get('arch', '?')}, "
            f"{len(bundled['classes'])} classes)"
        )
    else:
        print("\nno bundled default model in this install")
    return 0


def _about(doc: str | None) -> str:
    """The first sentence of a docstring, its wrapped lines joined (before: the first line
    alone, "... four residual depthwise-separable")."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    # a sentence ends at ". " before a capital ("et al. 2017" does not end one)
    return re.split(r"(?<=\.)\s+(?=[A-Z`])", para, maxsplit=1)[0]


def _bundled_info() -> dict | None:
    from edge_fer.classify import Classifier
    from edge_fer.errors import UserError

    try:
        with Classifier.load(threads=1) as clf:
            info = clf.info()
            info.pop("provenance", None)
            return info
    except UserError:
        return None
