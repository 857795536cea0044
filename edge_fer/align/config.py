"""Settings of the eye-model learner (kept apart from the learner: the CLI reads the defaults
without importing numba)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LearnConfig:
    stages: int = 8
    trees_per_stage: int = 16
    depth: int = 6
    candidates: int = 64  # random tests tried per node
    starts: int = 12  # perturbed starts per training eye
    infer_starts: int = 15  # starts at inference (the median is taken)
    shrinkage: float = 0.6
    scale_first: float = 0.75  # stage scales, face-size units, geometric first -> last
    scale_last: float = 0.12
    start_noise: float = 0.06  # start jitter, face-size units (sd)
    scale_noise: float = 0.1  # start scale jitter (sd of log)
    box_shift: float = 0.06  # training box jitter, face-size units (sd)
    box_scale: float = 0.1  # (sd of log)
    face_px: int = 64
    patch_px: int = 128
    val_fraction: float = 0.1
    max_faces: int = 0  # 0: all training faces
    seed: int = 0
