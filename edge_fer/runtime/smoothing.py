"""Per-track smoothing of class probabilities (exponential moving average), and per-track tallies.

    ema = TrackSmoother(classes, alpha=0.3)
    p = ema.update(track_id, probs, t=timestamp)   # smoothed probabilities for this track
    ema.summary()                                  # per track: dominant label and time shares

`alpha` is the weight of the newest frame: 1.0 is no smoothing; 0.3 settles within ~5 frames.
A track's first observation is taken as is. Time shares count the frames on which each label
was the smoothed top-1, weighted by the time to the track's next frame (so dropped frames of a
live source do not skew them).

A frame where the tracker holds a face it no longer detects (a turned head) goes through
`hold` instead of `update`: the running average is not changed, the frame counts with the
label held (and in `held_frames`), and `hold` returns the probabilities held. A frame on which
the face was detected but not classified (the pipeline's `classify_every`) goes through
`carry`: the same, without counting as held.

Memory stays bounded on a run of any length: a dead track's running average is dropped
(`drop`), and the statistics of at most `keep_ended` (1000) ended tracks are kept for the
summary, the most recently ended ones; older ones are counted in `omitted`. `update`, `hold`,
`drop` and `summary` may be called from different threads (a periodic summary while frames flow).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrackStats:
    id: int
    first_frame: int
    last_frame: int
    first_t: float
    last_t: float
    frames: int = 0
    label_frames: np.ndarray | None = None  # frames with each label on top
    label_time: np.ndarray | None = None  # seconds with each label on top
    prob_sum: np.ndarray | None = None
    held_frames: int = 0  # frames reported with the label held (tracker following, `hold`)
    _last_top: int = -1
    _last_t: float = 0.0
    extra: dict = field(default_factory=dict)


KEEP_ENDED = 1000


class TrackSmoother:
    def __init__(self, classes, alpha: float = 0.3, keep_ended: int = KEEP_ENDED) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        if keep_ended < 0:
            raise ValueError("keep_ended must be >= 0")
        self.classes = tuple(classes)
        self.alpha = float(alpha)
        self.keep_ended = int(keep_ended)
        self._state: dict[int, np.ndarray] = {}
        self.stats: dict[int, TrackStats] = {}
        self._ended: OrderedDict[int, None] = OrderedDict()  # ids of ended tracks, oldest first
        self.omitted = 0  # ended tracks whose statistics were let go (beyond keep_ended)
        self._lock = threading.Lock()

    def update(
        self, track_id: int, probs: np.ndarray, frame: int = 0, t: float = 0.0
    ) -> np.ndarray:
        with self._lock:
            return self._update(track_id, probs, frame, t)

    def hold(self, track_id: int, frame: int = 0, t: float = 0.0) -> np.ndarray | None:
        """A frame of the track without a new observation: its smoothed probabilities as they
        are (None when it was never classified), counted as a frame with its label held."""
        return self.carry(track_id, frame, t, held=True)

    def carry(
        self, track_id: int, frame: int = 0, t: float = 0.0, held: bool = False
    ) -> np.ndarray | None:
        """A frame of the track that was not classified: its smoothed probabilities as they
        are (None when it was never classified); `held`: counted in `held_frames` too."""
        with self._lock:
            prev = self._state.get(track_id)
            if prev is None:
                return None
            s = self._update(track_id, prev, frame, t, held=True)
            if held:
                self.stats[track_id].held_frames += 1
            return s

    def _update(self, track_id: int, probs, frame: int, t: float, held: bool = False):
        p = np.asarray(probs, np.float64)
        if track_id in self._ended:  # seen again after drop(): live, not ended
            del self._ended[track_id]
        prev = self._state.get(track_id)
        if held:
            s = p
        else:
            s = p.copy() if prev is None else self.alpha * p + (1.0 - self.alpha) * prev
        self._state[track_id] = s
        c = len(s)
        st = self.stats.get(track_id)
        if st is None:
            st = TrackStats(
                track_id,
                frame,
                frame,
                t,
                t,
                label_frames=np.zeros(c, np.int64),
                label_time=np.zeros(c),
                prob_sum=np.zeros(c),
            )
            self.stats[track_id] = st
        # a TrackStats is only made just above, with all three arrays
        assert st.label_frames is not None and st.label_time is not None
        assert st.prob_sum is not None
        if st._last_top >= 0:
            st.label_time[st._last_top] += max(t - st._last_t, 0.0)
        top = int(np.argmax(s))
        st.frames += 1
        st.label_frames[top] += 1
        st.prob_sum += s
        st.last_frame = frame
        st.last_t = t
        st._last_top = top
        st._last_t = t
        return s.astype(np.float32)

    def drop(self, track_id: int) -> None:
        """A track died: forget its running average; its statistics stay for the summary,
        for the `keep_ended` most recently ended tracks."""
        with self._lock:
            self._state.pop(track_id, None)
            if track_id not in self.stats:
                return  # never classified
            self._ended[track_id] = None
            while len(self._ended) > self.keep_ended:
                old, _ = self._ended.popitem(last=False)
                self.stats.pop(old, None)
                self.omitted += 1

    def summary(self, frame_interval: float = 0.0) -> list[dict]:
        """Per track: frames, seconds, dominant label, and the share of time of each label."""
        with self._lock:
            return self._summary(frame_interval)

    def _summary(self, frame_interval: float) -> list[dict]:
        out = []
        for tid in sorted(self.stats):
            st = self.stats[tid]
            # made by _update, with all three arrays
            assert st.label_frames is not None and st.label_time is not None
            assert st.prob_sum is not None
            time = st.label_time.copy()
            if st._last_top >= 0:
                time[st._last_top] += frame_interval  # the last frame lasts one interval
            total_t = float(time.sum())
            if total_t > 0:
                share = time / total_t
            else:
                share = st.label_frames / max(st.frames, 1)
            dom = int(np.argmax(share))
            out.append(
                {
                    "id": tid,
                    "first_frame": st.first_frame,
                    "last_frame": st.last_frame,
                    "frames": st.frames,
                    "held_frames": st.held_frames,
                    "seconds": round(st.last_t - st.first_t + frame_interval, 3),
                    "dominant": self._name(dom),
                    "dominant_share": round(float(share[dom]), 4),
                    "share": {
                        self._name(i): round(float(v), 4) for i, v in enumerate(share) if v > 0
                    },
                    "mean_probs": {
                        self._name(i): round(float(v), 4)
                        for i, v in enumerate(st.prob_sum / max(st.frames, 1))
                    },
                }
            )
        return out

    def _name(self, i: int) -> str:
        return self.classes[i] if i < len(self.classes) else str(i)
