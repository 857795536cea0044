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

With `min_score`, a track is confirmed, and reported, only while the moving average of its
detection scores (weight `score_smoothing` for the newest) clears it: faces score far higher
than the steady false positives a background can hold for minutes (a bookshelf, a poster), and
one frame's score says less than many frames' average.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


def suppress_nested(boxes: np.ndarray, overlap: float = 0.5) -> np.ndarray:
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

    @property
    def confirmed(self) -> bool:
        return self.id > 0

    def predicted(self) -> np.ndarray:
        """Where the box should be now: moved by its velocity, for at most 2 frames (a coasting
        track's velocity is a guess that grows stale)."""
        p = self.box.copy()
        p[:2] += self.velocity * min(self.misses + 1, 2)
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
    ) -> None:
        if not 0.0 <= iou_threshold < 1.0:
            raise ValueError("iou_threshold must be in [0, 1)")
        if min_hits < 1 or max_misses < 0:
            raise ValueError("min_hits must be >= 1 and max_misses >= 0")
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

    def update(self, boxes, scores=None, frame: int | None = None) -> list[Track]:
        """Advance one frame with its detections; returns the confirmed tracks matched now."""
        self.frame = self.frame + 1 if frame is None else int(frame)
        det = np.asarray(boxes, np.float64).reshape(-1, np.shape(boxes)[-1] if len(boxes) else 4)
        if scores is None:
            scores = det[:, 4] if det.shape[1] > 4 else np.zeros(len(det))
        det = det[:, :4]
        for t in self.tracks:
            t.det_index = -1
        preds = np.array([t.predicted() for t in self.tracks]).reshape(-1, 4)
        last = np.array([t.box for t in self.tracks]).reshape(-1, 4)
        iou = np.maximum(iou_matrix(preds, det), iou_matrix(last, det))
        ok = (iou >= self.iou_threshold) & (iou > 0)
        est = np.array([self._established(t) for t in self.tracks], bool)
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
            conf = np.array([t.confirmed for t in self.tracks], float)
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
        for i, t in enumerate(self.tracks):
            if i not in matched_t:
                t.misses += 1
                t.streak = 0
                t.age += 1
                if not t.confirmed:
                    continue  # a tentative track dies at its first miss
                if t.misses > (
                    self.max_misses_established if self._established(t) else self.max_misses
                ):
                    self.deaths += 1
                    self.dead.append(t)
                    continue
            survivors.append(t)
        # no birth on a part of an established face (chin, forehead boxes beside it)
        holders = np.array([t.box for t in survivors if self._established(t)]).reshape(-1, 4)
        for di in range(len(det)):
            if di not in matched_d and not self._part_of(det[di], holders):
                t = Track(
                    0,
                    det[di].copy(),
                    float(scores[di]),
                    score_avg=float(scores[di]),
                    first_frame=self.frame,
                    last_frame=self.frame,
                    det_index=di,
                    _tmp_key=self._next_tmp,
                )
                self._next_tmp += 1
                survivors.append(t)
                self._maybe_confirm(t)
        self.tracks = survivors
        out = [t for t in self.tracks if t.confirmed and t.det_index >= 0 and self._strong(t)]
        out.sort(key=lambda t: t.id)
        return out

    def _hit(self, t: Track, box: np.ndarray, score: float, di: int) -> None:
        old_c = t.box[:2] + t.box[2:] / 2
        new_c = box[:2] + box[2:] / 2
        steps = t.misses + 1
        t.velocity = (1 - self.vel_alpha) * t.velocity + self.vel_alpha * (new_c - old_c) / steps
        a = self.box_alpha
        t.box = a * box + (1 - a) * (t.box + np.r_[t.velocity * min(steps, 2), 0, 0])
        t.score = score
        t.score_avg = (1 - self.score_alpha) * t.score_avg + self.score_alpha * score
        t.hits += 1
        t.streak += 1
        t.misses = 0
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

    def _maybe_confirm(self, t: Track) -> None:
        if not t.confirmed and t.streak >= self.min_hits and self._strong(t):
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
        return ended
