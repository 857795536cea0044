"""An IoU face tracker: stable ids across frames, track birth after a few hits, death after misses.

    tracker = IoUTracker(iou_threshold=0.2, min_hits=2, max_misses=10)
    for boxes in frames:                        # boxes: (n, 4) x, y, w, h (+ optional score)
        tracks = tracker.update(boxes)          # confirmed tracks matched in this frame
        for t in tracks: t.id, t.box, t.det_index

Matching is greedy on IoU (highest pair first) against each track's predicted box (its last box
moved by its smoothed velocity), so a face that pans keeps its id. A new detection starts a
tentative track; it is confirmed, and only then gets an id, after `min_hits` consecutive hits,
so a one-frame false positive never consumes an id. A confirmed track that is not matched for
more than `max_misses` frames dies. Ids are 1, 2, 3, ... in birth order and never reused.

An *established* track (seen on at least `established_hits` frames: a face, not a flicker) gets
more: it picks its detection before younger tracks do, it also accepts a detection whose centre
lies within `reach` x its size when their sizes differ by at most 1.6x (a nod or a jerk at 20 fps
moves a small face further than IoU allows), it survives `max_misses_established` missed frames
(hands over the face, a turn away), and no new track is started on a detection that lies
mostly (`part_overlap`) inside it: detectors fire on chins and foreheads next to a face, and
those part-of-face boxes must not steal the face's id when it reappears.

A scene's first frame (a stream's, or the first after `finish()`: a cut) has no frame before it
to confirm anything, and every face already in the scene is born there; with `min_hits_first`
= 1 the tracks born on it are confirmed at once, as a photo's are (the detector holds that frame
to its one-frame bar, since its memory was reset with the tracker).

With `min_score`, a track is confirmed, and reported, only while the moving average of its
detection scores (weight `score_smoothing` for the newest) clears it: faces score far higher
than the steady false positives a background can hold for minutes (a bookshelf, a poster), and
one frame's score says less than many frames' average.

Following (`follow_frames` > 0 and `update(..., gray=frame)`): a face that turns away or looks
down stops being detected long before it leaves. When an established track's detection is
missed, the track is followed by appearance instead: a gray patch of the face, at TEMPLATE x
TEMPLATE pixels, is matched by normalised cross-correlation (`cv2.matchTemplate`,
TM_CCOEFF_NORMED) in a window around the predicted box (nearer the prediction preferred), and
the box moves to the best match (its size is kept). The patch it starts from is the newest of
the last LAG + 1 detected ones that looks like the ones before it (the detector pools its
last frames and reports a vanished face's box for a frame or two more: that background must not
become the template, and a turning face changes only a little from frame to frame); it adapts to
what it follows (a turning face changes), but a match must still resemble that detected patch.
Such a track is *held*: reported with `held` True and `match` (the correlation) for at most
`follow_frames` frames and `follow_seconds` seconds after its last detection, while the match
stays at least `follow_match`. When a limit is reached or the match drops, the track is no
longer reported and coasts as before (a detection may still take it up again with its id,
until it has missed `max_misses_established` frames); it is not followed again before it is
detected again. Tentative and young tracks are never followed: a false positive seen on a few
frames must not be extended. Cost: well under a millisecond a frame per face at any size (the
patch and the window are scaled to the template's size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_fer.errors import UserError

TEMPLATE = 24  # px: the side a followed face's patch is matched at (cost ~ the square of it)
SEARCH = 0.5  # the search window reaches this x the box's size beyond the predicted box
LAG = 4  # detections kept before the last one, to start following from (_last_steady)
ADAPT = 0.15  # weight of the newest followed patch in the adaptive template
STEADY = 0.5  # a detected patch that correlates less with the one before is left out
START_MARGIN = 0.1  # the first followed frame's match must clear follow_match by this much
ANCHOR_SLACK = 0.2  # a followed patch may match the detected template this much less
MOTION = 0.5  # penalty on the correlation per (distance from the prediction / box size)^2


@dataclass
class TrackerOptions:
    """The tracker's settings as a user gives them (`edge-fer run`'s tracker flags)."""

    iou: float = 0.2
    min_hits: int = 2
    max_misses: int = 15
    hold: int = 45  # missed frames an established face track survives (hands, a turn away)
    # report a track only while the moving average of its scores is at least this; None: the
    # cascade's `track_min_score` setting, else no such gate
    min_score: float | None = None
    # an established face whose detection is missed is followed by appearance and reported as
    # held for at most this many frames and seconds after its last detection (0: never)
    follow: int = 40
    follow_seconds: float = 2.0
    follow_match: float = 0.6  # ... while the normalised correlation of the match is at least this

    def follow_kwargs(self) -> dict:
        """The following options as IoUTracker's keyword arguments (UserError naming the
        option when one is out of range)."""
        from edge_fer.errors import UserError

        for name, ok, rule in (
            ("follow", self.follow >= 0, ">= 0 frames (0: off)"),
            ("follow_seconds", 0 <= self.follow_seconds < math.inf, ">= 0 seconds, finite"),
            ("follow_match", -1.0 <= self.follow_match <= 1.0, "in [-1, 1]"),
        ):
            if not ok:
                raise UserError(f"must be {rule}, got {getattr(self, name)}", param=name)
        return {
            "follow_frames": self.follow,
            "follow_seconds": self.follow_seconds,
            "follow_match": self.follow_match,
        }


# a box lying this much inside a larger one is dropped (`run` and `detect` alike); on the
# WebFaces validation tuning half it removed 4 of 389 boxes, all false, and no found face
NESTED_OVERLAP = 0.5


def suppress_nested(boxes: np.ndarray, overlap: float = NESTED_OVERLAP) -> np.ndarray:
    """Drop every box that lies at least `overlap` inside a larger one (rows x, y, w, h, ...).

    PICO's clustering merges windows that overlap by IoU; a mouth or chin found inside a face
    has a small IoU with it but lies mostly inside it. Returns the kept rows, in input order.
    """
    b = np.asarray(boxes, np.float64)
    n = len(b)
    if n < 2 or overlap <= 0:
        return b
    area = b[:, 2] * b[:, 3]
    x2, y2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(x2[:, None], x2[None]) - np.maximum(b[:, 0][:, None], b[:, 0][None])
    ih = np.minimum(y2[:, None], y2[None]) - np.maximum(b[:, 1][:, None], b[:, 1][None])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    inside = inter / np.maximum(area[:, None], 1e-12)  # [i, j]: share of box i inside box j
    larger = area[None, :] > area[:, None]
    drop = ((inside >= overlap) & larger).any(axis=1)
    return b[~drop]


def outermost(faces: list, overlap: float = NESTED_OVERLAP) -> list:
    """`suppress_nested` for a detector's list of detections (x, y, w, h properties): the
    ones kept, in their order."""
    if len(faces) < 2:
        return list(faces)
    b = np.array([[f.x, f.y, f.w, f.h, i] for i, f in enumerate(faces)], np.float64)
    return [faces[int(i)] for i in suppress_nested(b, overlap)[:, 4]]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) with every box in b (m, 4); boxes are x, y, w, h."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    a = np.asarray(a, np.float64)[:, :4]
    b = np.asarray(b, np.float64)[:, :4]
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0][:, None], b[:, 0][None])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1][:, None], b[:, 1][None])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class Track:
    id: int  # 0 while tentative, then a positive id that never changes
    box: np.ndarray  # x, y, w, h (smoothed)
    score: float = 0.0  # detection score of the last match
    score_avg: float = 0.0  # moving average of the match scores (the first score at birth)
    hits: int = 1  # matches in total
    streak: int = 1  # consecutive matches (for birth)
    misses: int = 0  # consecutive frames without a match
    age: int = 1  # frames since it was created
    first_frame: int = 0
    last_frame: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    det_index: int = -1  # index of the detection it matched in the last update (-1: none)
    _tmp_key: int = 0
    since_box: int = 0  # frames since the box was last set (by a detection or by following)
    held: bool = False  # followed by appearance in the last update (not detected)
    match: float = 0.0  # the correlation of that match
    held_frames: int = 0  # frames it was held, in all
    last_t: float | None = None  # timestamp of its last detection
    # float32 TEMPLATE x TEMPLATE patches of its last LAG + 1 detections, oldest first
    patches: list = field(default_factory=list)
    anchor: np.ndarray | None = None  # the detected patch following started from
    template: np.ndarray | None = None  # what following matches: adapted as it goes

    @property
    def confirmed(self) -> bool:
        return self.id > 0

    def predicted(self) -> np.ndarray:
        """Where the box should be now: moved by its velocity, for at most 2 frames (a coasting
        track's velocity is a guess that grows stale)."""
        p = self.box.copy()
        p[:2] += self.velocity * min(self.since_box + 1, 2)
        return p


def centre_affinity(
    a: np.ndarray, b: np.ndarray, reach: float, max_ratio: float = 1.6
) -> np.ndarray:
    """(n, m) in [0, 1]: 1 - centre distance / (reach x size of a), where the sizes of a and b
    differ by at most max_ratio; 0 elsewhere. Boxes are x, y, w, h."""
    if len(a) == 0 or len(b) == 0 or reach <= 0:
        return np.zeros((len(a), len(b)), np.float64)
    a = np.asarray(a, np.float64)[:, :4]
    b = np.asarray(b, np.float64)[:, :4]
    ca, cb = a[:, :2] + a[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    d = np.linalg.norm(ca[:, None] - cb[None], axis=2)
    sa, sb = np.sqrt(a[:, 2] * a[:, 3]), np.sqrt(b[:, 2] * b[:, 3])
    ratio = np.maximum(sa[:, None], sb[None]) / np.maximum(np.minimum(sa[:, None], sb[None]), 1e-9)
    aff = 1.0 - d / np.maximum(reach * sa[:, None], 1e-9)
    return np.where(ratio <= max_ratio, np.clip(aff, 0.0, 1.0), 0.0)


class IoUTracker:
    def __init__(
        self,
        iou_threshold: float = 0.2,
        min_hits: int = 2,
        max_misses: int = 10,
        box_smoothing: float = 0.5,
        velocity_smoothing: float = 0.5,
        established_hits: int = 10,
        max_misses_established: int | None = None,
        reach: float = 0.6,
        part_overlap: float = 0.2,
        min_score: float | None = None,
        score_smoothing: float = 0.05,
        follow_frames: int = 0,
        follow_seconds: float | None = None,
        follow_match: float = 0.6,
        min_hits_first: int | None = None,
    ) -> None:
        from edge_fer.limits import check_count

        # (min_hits 1.5 became 1; a string was a TypeError from a comparison)
        for name, v, lowest in (("min_hits", min_hits, 1), ("max_misses", max_misses, 0),
                                ("established_hits", established_hits, 1),
                                ("follow_frames", follow_frames, 0)):  # fmt: skip
            check_count(v, name, lowest)
        for name, x in (("iou_threshold", iou_threshold), ("reach", reach),
                        ("part_overlap", part_overlap), ("box_smoothing", box_smoothing),
                        ("velocity_smoothing", velocity_smoothing),
                        ("score_smoothing", score_smoothing), ("follow_match", follow_match)):  # fmt: skip
            if isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
                raise UserError(f"must be a number, got {x!r}", param=name)
        if not 0.0 <= iou_threshold < 1.0:
            raise ValueError("iou_threshold must be in [0, 1)")
        if min_hits < 1 or max_misses < 0:
            raise ValueError("min_hits must be >= 1 and max_misses >= 0")
        if min_hits_first is not None and not 1 <= min_hits_first <= min_hits:
            raise ValueError("min_hits_first must be in 1..min_hits")
        if max_misses_established is None:
            max_misses_established = 3 * max_misses
        if established_hits < 1 or max_misses_established < max_misses:
            raise ValueError(
                "established_hits must be >= 1 and max_misses_established >= max_misses"
            )
        if reach < 0 or not 0.0 <= part_overlap <= 1.0:
            raise ValueError("reach must be >= 0 and part_overlap in [0, 1]")
        if not 0.0 < score_smoothing <= 1.0:
            raise ValueError("score_smoothing must be in (0, 1]")
        if follow_frames < 0 or (follow_seconds is not None and follow_seconds < 0):
            raise ValueError("follow_frames and follow_seconds must be >= 0")
        if not -1.0 <= follow_match <= 1.0:
            raise ValueError("follow_match must be in [-1, 1]")
        self.follow_frames = int(follow_frames)
        self.follow_seconds = None if follow_seconds is None else float(follow_seconds)
        self.follow_match = float(follow_match)
        self.held_total = 0  # track-frames reported as held, in all
        self.min_score = None if min_score is None else float(min_score)
        self.score_alpha = float(score_smoothing)
        self.established_hits = int(established_hits)
        self.max_misses_established = int(max_misses_established)
        self.reach = float(reach)
        self.part_overlap = float(part_overlap)
        if not 0.0 < box_smoothing <= 1.0 or not 0.0 <= velocity_smoothing <= 1.0:
            raise ValueError("smoothing factors must be in (0, 1]")
        self.iou_threshold = float(iou_threshold)
        self.min_hits = int(min_hits)
        # for tracks born on a scene's first frame (None: min_hits)
        self.min_hits_first = self.min_hits if min_hits_first is None else int(min_hits_first)
        self._scene_start = True  # the next frame is a scene's first
        self.max_misses = int(max_misses)
        self.box_alpha = float(box_smoothing)
        self.vel_alpha = float(velocity_smoothing)
        self.tracks: list[Track] = []
        self.frame = -1
        self._next_id = 1
        self._next_tmp = 1
        self.births = 0
        self.deaths = 0
        self.dead: list[Track] = []  # confirmed tracks that died in the last update

    def reset(self) -> None:
        """Forget every track (ids keep counting up: an id is never given twice)."""
        self.tracks = []
        self.dead = []
        self._scene_start = True

    def update(
        self,
        boxes,
        scores=None,
        frame: int | None = None,
        gray: np.ndarray | None = None,
        t: float | None = None,
    ) -> list[Track]:
        """Advance one frame with its detections; returns the confirmed tracks matched now and,
        given the frame (`gray`, 2-D uint8, the coordinates of the boxes), the ones followed
        in it (`held`). `t`: the frame's timestamp in seconds, for `follow_seconds`."""
        self.frame = self.frame + 1 if frame is None else int(frame)
        first, self._scene_start = self._scene_start, False
        follow = gray is not None and self.follow_frames > 0
        det, scores = _detections(boxes, scores)
        for tr in self.tracks:
            tr.det_index = -1
        preds = np.array([tr.predicted() for tr in self.tracks]).reshape(-1, 4)
        last = np.array([tr.box for tr in self.tracks]).reshape(-1, 4)
        iou = np.maximum(iou_matrix(preds, det), iou_matrix(last, det))
        ok = (iou >= self.iou_threshold) & (iou > 0)
        est = np.array([self._established(tr) for tr in self.tracks], bool)
        # affinity in [0, 1]: IoU where it passes, else (established tracks) closeness of centres
        aff = np.where(ok, iou, 0.0)
        if est.any() and len(det):
            near = np.maximum(
                centre_affinity(preds[est], det, self.reach),
                centre_affinity(last[est], det, self.reach),
            )
            aff[est] = np.where(ok[est], aff[est], near * self.iou_threshold)
            ok[est] |= near > 0
        # greedy: established tracks first, then confirmed, then tentative; by affinity within
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if iou.size:
            conf = np.array([tr.confirmed for tr in self.tracks], float)
            rank = np.where(ok, aff + 2.0 * conf[:, None] + 4.0 * est[:, None], -1.0)
            for flat in np.argsort(-rank, axis=None):
                ti, di = divmod(int(flat), iou.shape[1])
                if rank[ti, di] < 0:
                    break
                if ti in matched_t or di in matched_d:
                    continue
                matched_t.add(ti)
                matched_d.add(di)
                self._hit(self.tracks[ti], det[di], float(scores[di]), di)
        survivors: list[Track] = []
        self.dead = []
        for i, tr in enumerate(self.tracks):
            if i in matched_t:
                tr.last_t = t
                if follow and gray is not None and tr.confirmed:  # (follow: gray is given)
                    self._refresh_template(tr, gray)
            else:
                tr.misses += 1
                tr.streak = 0
                tr.age += 1
                if not tr.confirmed:
                    continue  # a tentative track dies at its first miss
                was_held, tr.held = tr.held, False
                if follow and gray is not None and self._follow(tr, gray, t, was_held):
                    survivors.append(tr)  # followed: alive whatever its misses
                    continue
                tr.since_box += 1
                if tr.misses > (
                    self.max_misses_established if self._established(tr) else self.max_misses
                ):
                    self.deaths += 1
                    self.dead.append(tr)
                    continue
            survivors.append(tr)
        # no birth on a part of an established face (chin, forehead boxes beside it)
        holders = np.array([tr.box for tr in survivors if self._established(tr)]).reshape(-1, 4)
        for di in range(len(det)):
            if di not in matched_d and not self._part_of(det[di], holders):
                nt = Track(
                    0,
                    det[di].copy(),
                    float(scores[di]),
                    score_avg=float(scores[di]),
                    first_frame=self.frame,
                    last_frame=self.frame,
                    det_index=di,
                    _tmp_key=self._next_tmp,
                    last_t=t,
                )
                self._next_tmp += 1
                survivors.append(nt)
                self._maybe_confirm(nt, self.min_hits_first if first else self.min_hits)
        self.tracks = survivors
        out = [
            tr
            for tr in self.tracks
            if tr.confirmed and (tr.det_index >= 0 or tr.held) and self._strong(tr)
        ]
        out.sort(key=lambda tr: tr.id)
        self.held_total += sum(tr.held for tr in out)
        return out

    # ---- following by appearance ------------------------------------------------------------
    def _refresh_template(self, tr: Track, gray: np.ndarray) -> None:
        """Keep the patch of the box just detected (the last LAG + 1), for following it when
        detection misses it. Not simply the last one: the detector pools its last frames, so
        for a few frames after a face vanished it still reports a box where the face was, and
        a template of that background would be followed with a near-perfect match."""
        patch = _patch(gray, tr.box)
        if patch is not None:
            tr.patches = [*tr.patches[-LAG:], patch]

    def _last_steady(self, patches: list) -> np.ndarray:
        """The newest patch that looks like the ones before it: each is compared with the last
        one kept (the oldest is kept), and one that correlates with it below STEADY is left
        out. A face changes a little from frame to frame as it turns or moves; the background
        the detector still reports for a frame or two after a face vanished does not look like
        the face before it."""
        kept = patches[0]
        for p in patches[1:]:
            if _ncc(p, kept) >= STEADY:
                kept = p
        return kept

    def _follow(self, tr: Track, gray: np.ndarray, t: float | None, was_held: bool) -> bool:
        """Move a missed established track's box to its best template match; True (and
        `tr.held`) while the match holds within the time limits."""
        if not tr.patches or not self._established(tr) or not self._strong(tr):
            return False
        if not was_held and tr.misses != 1:  # lost once: only a detection brings it back
            return False
        if tr.misses > self.follow_frames:
            return False
        limit = self.follow_seconds
        if limit is not None and t is not None and tr.last_t is not None and t - tr.last_t > limit:
            return False
        if not was_held:
            tr.template = tr.anchor = self._last_steady(tr.patches)
        # both set when following started: a track is held only by this method
        assert tr.template is not None and tr.anchor is not None
        found = _match(gray, tr.template, tr.predicted())
        # starting takes a clearer match than going on: a face just missed has barely changed,
        # while the window where a face vanished can hold a chance match as good as the bar
        bar = self.follow_match + (0.0 if was_held else START_MARGIN)
        if found is None or found[1] < bar:
            return False
        box, score, patch = found
        # the adaptive template follows a face that changes as it turns; the detected one keeps
        # it from drifting off the face (onto hair, a shoulder, the background)
        if _ncc(patch, tr.anchor) < self.follow_match - ANCHOR_SLACK:
            return False
        tr.template = (1 - ADAPT) * tr.template + ADAPT * patch
        c_old = tr.box[:2] + tr.box[2:] / 2
        c_new = box[:2] + box[2:] / 2
        steps = tr.since_box + 1
        tr.velocity = (1 - self.vel_alpha) * tr.velocity + self.vel_alpha * (c_new - c_old) / steps
        tr.box = box
        tr.since_box = 0
        tr.held = True
        tr.match = score
        tr.held_frames += 1
        return True

    def _hit(self, t: Track, box: np.ndarray, score: float, di: int) -> None:
        old_c = t.box[:2] + t.box[2:] / 2
        new_c = box[:2] + box[2:] / 2
        steps = t.since_box + 1
        t.velocity = (1 - self.vel_alpha) * t.velocity + self.vel_alpha * (new_c - old_c) / steps
        a = self.box_alpha
        t.box = a * box + (1 - a) * (t.box + np.r_[t.velocity * min(steps, 2), 0, 0])
        t.score = score
        t.score_avg = (1 - self.score_alpha) * t.score_avg + self.score_alpha * score
        t.hits += 1
        t.streak += 1
        t.misses = 0
        t.since_box = 0
        t.held = False
        t.age += 1
        t.last_frame = self.frame
        t.det_index = di
        self._maybe_confirm(t)

    def _established(self, t: Track) -> bool:
        return t.confirmed and t.hits >= self.established_hits

    def _part_of(self, box: np.ndarray, holders: np.ndarray) -> bool:
        if not len(holders) or self.part_overlap >= 1.0:
            return False
        x2, y2 = box[0] + box[2], box[1] + box[3]
        iw = np.minimum(x2, holders[:, 0] + holders[:, 2]) - np.maximum(box[0], holders[:, 0])
        ih = np.minimum(y2, holders[:, 1] + holders[:, 3]) - np.maximum(box[1], holders[:, 1])
        inside = np.clip(iw, 0, None) * np.clip(ih, 0, None) / max(box[2] * box[3], 1e-12)
        return bool((inside >= self.part_overlap).any())

    def _strong(self, t: Track) -> bool:
        """Its average match score clears min_score (always, without one)."""
        return self.min_score is None or t.score_avg >= self.min_score

    def _maybe_confirm(self, t: Track, need: int | None = None) -> None:
        need = self.min_hits if need is None else need
        if not t.confirmed and t.streak >= need and self._strong(t):
            t.id = self._next_id
            self._next_id += 1
            self.births += 1

    def active(self) -> list[Track]:
        """All confirmed tracks still alive (matched now or coasting)."""
        return [t for t in self.tracks if t.confirmed]

    def finish(self) -> list[Track]:
        """End of stream, a scene cut or the next photo: every confirmed track still alive
        (matched or coasting) dies now, the tentative ones are dropped; returns the confirmed.
        Ids keep counting up, so a face after a cut gets a new one."""
        ended = self.active()
        self.deaths += len(ended)
        self.tracks = []
        self._scene_start = True
        return ended


def _patch(gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The box's pixels at TEMPLATE x TEMPLATE (float32); None when it is not wholly inside."""
    x, y, w, h = (int(v) for v in np.rint(box[:4]))
    if w < 4 or h < 4 or x < 0 or y < 0 or x + w > gray.shape[1] or y + h > gray.shape[0]:
        return None
    return cv2.resize(
        gray[y : y + h, x : x + w], (TEMPLATE, TEMPLATE), interpolation=cv2.INTER_AREA
    ).astype(np.float32)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two patches of the same size."""
    r = float(cv2.matchTemplate(a, b, cv2.TM_CCOEFF_NORMED)[0, 0])
    return r if np.isfinite(r) else 0.0


def _match(gray: np.ndarray, template: np.ndarray, box: np.ndarray):
    """(box, correlation, patch) of the template's best match in a window SEARCH x the box's
    size around `box`, at the template's scale (nearer `box` preferred, see MOTION); None
    when the window leaves no room to search."""
    x, y, w, h = (float(v) for v in box[:4])
    if w < 4 or h < 4:
        return None
    kx, ky = TEMPLATE / w, TEMPLATE / h
    x0 = max(int(np.floor(x - SEARCH * w)), 0)
    y0 = max(int(np.floor(y - SEARCH * h)), 0)
    x1 = min(int(np.ceil(x + w + SEARCH * w)), gray.shape[1])
    y1 = min(int(np.ceil(y + h + SEARCH * h)), gray.shape[0])
    sw, sh = round((x1 - x0) * kx), round((y1 - y0) * ky)
    if sw <= TEMPLATE or sh <= TEMPLATE:
        return None
    region = cv2.resize(gray[y0:y1, x0:x1], (sw, sh), interpolation=cv2.INTER_AREA)
    region = region.astype(np.float32)
    res = cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED)
    # prefer the prediction: a face moves little in a frame, a look-alike spot further off
    # (hair, a shoulder) must match clearly better to win
    px, py = (x - x0) * kx, (y - y0) * ky  # the prediction in the result map
    yy, xx = np.ogrid[: res.shape[0], : res.shape[1]]
    d2 = ((xx - px) / TEMPLATE) ** 2 + ((yy - py) / TEMPLATE) ** 2
    _, _, _, (bx, by) = cv2.minMaxLoc(np.nan_to_num(res, nan=-1.0) - MOTION * d2)
    best = float(res[by, bx])
    if not np.isfinite(best):
        return None
    patch = region[by : by + TEMPLATE, bx : bx + TEMPLATE]
    return np.array([x0 + bx / kx, y0 + by / ky, w, h]), best, patch


def _detections(boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    """`boxes` (n, 4) x, y, w, h (or (n, 5) with the score last) and `scores` (n,) as float
    arrays; a UserError naming the parameter for anything else (a NaN box became a confirmed
    track with a new id each frame; None, 2 columns or too few scores were numpy errors)."""
    try:
        det = np.asarray([] if boxes is None else boxes, np.float64)
    except (TypeError, ValueError):
        raise UserError(f"must be an (n, 4) or (n, 5) array of numbers, got {type(boxes).__name__}",
                        param="boxes") from None  # fmt: skip
    if det.size == 0:
        det = det.reshape(0, 4)
    if det.ndim == 1:
        det = det[None]  # one box
    if det.ndim != 2 or det.shape[1] not in (4, 5):
        raise UserError(f"must be (n, 4) x, y, w, h or (n, 5) with a score, got shape "
                        f"{det.shape}", param="boxes")  # fmt: skip
    if not np.isfinite(det).all() or (det[:, 2:4] < 0).any():
        raise UserError("must be finite, with widths and heights >= 0", param="boxes")
    if scores is None:
        sc = det[:, 4] if det.shape[1] > 4 else np.zeros(len(det))
    else:
        try:
            sc = np.asarray(scores, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise UserError("must be numbers, one per box", param="scores") from None
        if len(sc) != len(det) or not np.isfinite(sc).all():
            raise UserError(f"must be one finite number per box ({len(det)} boxes), got "
                            f"{len(sc)} values", param="scores")  # fmt: skip
    return det[:, :4], sc
