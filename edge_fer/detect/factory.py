"""Detectors built from resolved settings (`edge_fer.detect.config.resolve`).

    pick = DetectorPicker(cascade, DetectorOptions(), upscaling=True)  # checks the options
    detector = pick(frame.shape)      # the cascade for this frame size, built on first use
    settings = pick.resolved(frame.shape)  # every value it and the run use

A detector is built whole from a `ResolvedDetector` (no code sets its attributes afterwards);
each cascade file and each verifier is loaded once per picker and shared by its detectors.
"""

from __future__ import annotations

from pathlib import Path

from edge_fer.detect.config import (
    CascadeSettings,
    DetectorOptions,
    ResolvedDetector,
    cascade_for_frame,
    resolve,
    shorter_side,
)
from edge_fer.errors import UserError


class DetectorPicker:
    """Detectors for frames of any size: the cascade per `cascade_for_frame` (the low-resolution
    one for small frames unless `cascade` is given), its settings resolved for the frame's
    size, the detector built on first use and kept (with its temporal memory).

    upscaling: the caller detects on an upscaled copy of frames under `upscale_to` (edge-fer
    run), which also sets their scale factor; without it nothing is upscaled (edge-fer detect,
    calibration). track_min_score: the tracker's option (`TrackerOptions.min_score`).
    stills: the frames are unrelated photos (one frame of memory and the cascade's
    single-image threshold, unless the options say otherwise; see `config.resolve`).
    A bad option, cascade, settings file or verifier fails here, before any input is read.
    """

    def __init__(
        self,
        cascade: str | Path | None,
        opts: DetectorOptions,
        threads: int | None = None,
        *,
        upscaling: bool = False,
        track_min_score: float | None = None,
        stills: bool = False,
    ) -> None:
        if not isinstance(opts, DetectorOptions):  # None was an AttributeError further in
            raise UserError(f"must be a DetectorOptions, got {type(opts).__name__}", param="opts")
        self.cascade, self.opts, self.threads = cascade, opts, threads
        self.upscaling, self.track_min_score = upscaling, track_min_score
        self.stills = stills
        self._loaded: dict[Path, tuple[object, CascadeSettings]] = {}  # cascade, its settings
        self._verifiers: dict = {}  # (path, min_prob) -> Verifier, shared by the detectors
        self._built: dict[tuple, object] = {}  # _detector_key(settings) -> detector
        self._by_side: dict[int, tuple[ResolvedDetector, object]] = {}  # shorter side -> both
        self.used: set[str] = set()  # names of the cascades that scanned a frame
        self.get((0, 0))  # a frame of unknown size: the default cascade

    def resolved(self, shape) -> ResolvedDetector:
        """The settings for frames of `shape` (rows, cols, ...)."""
        return self.get(shape)[0]

    def get(self, shape) -> tuple[ResolvedDetector, object]:
        """(settings, detector) for frames of `shape`."""
        side = shorter_side(shape, "shape")
        hit = self._by_side.get(side)
        if hit is None:
            path = cascade_for_frame(self.cascade, side)
            casc, settings = self._load(path)
            r = resolve(
                self.opts,
                settings,
                tuple(shape)[:2],
                upscaling=self.upscaling,
                track_min_score=self.track_min_score,
                stills=self.stills,
            )
            key = _detector_key(r)
            if key not in self._built:
                self._built[key] = build_detector(
                    r, self.threads, cascade=casc, verifiers=self._verifiers
                )
            hit = self._by_side[side] = (r, self._built[key])
        return hit

    def __call__(self, shape):
        r, det = self.get(shape)
        if r.cascade is not None:
            self.used.add(r.cascade.name)
        return det

    def reset(self) -> None:
        """Forget every detector's temporal memory (between unrelated inputs)."""
        for det in self._built.values():
            det.reset()  # type: ignore[attr-defined]

    def _load(self, path: Path):
        if path not in self._loaded:
            from edge_fer.detect.cascade import Cascade

            casc = Cascade.load(path)  # the cascade's own errors before its settings'
            self._loaded[path] = (casc, CascadeSettings.for_cascade(path))
        return self._loaded[path]


def _detector_key(r: ResolvedDetector) -> tuple:
    """What a detector is built from (not the upscaling or the tracker's gate)."""
    return (r.cascade, tuple(sorted(r.detector_args().items())), r.verifier, r.verifier_min_prob)


def build_detector(
    resolved: ResolvedDetector,
    threads: int | None = None,
    *,
    cascade=None,
    verifiers: dict | None = None,
):
    """One detector, behind its verifier when one is set, from resolved settings. cascade: the
    loaded `Cascade` (default: loaded from `resolved.cascade`); verifiers: loaded verifiers,
    by (path, min_prob), shared between builds (filled here)."""
    from edge_fer.detect.cascade import Cascade
    from edge_fer.detect.detector import Detector

    if cascade is None:
        if resolved.cascade is None:
            raise ValueError("resolved settings without a cascade")
        cascade = Cascade.load(resolved.cascade)
    det = Detector(cascade, threads=threads, **resolved.detector_args())
    if resolved.verifier is None:
        return det
    from edge_fer.detect.verifier import VerifiedDetector, Verifier

    verifiers = {} if verifiers is None else verifiers
    key = (resolved.verifier, resolved.verifier_min_prob)
    if key not in verifiers:
        verifiers[key] = Verifier.load(resolved.verifier, min_prob=resolved.verifier_min_prob)
    return VerifiedDetector(det, verifiers[key])
