"""Temporal memory: pool the raw windows of the last N frames before clustering.

This is the reference sample's `update_memory`: N slots in a ring, the newest frame overwrites
the oldest slot, and the pooled list is the slots in slot order. A face that is present in most
frames accumulates score across them, while a one-frame false positive does not, so a stream can
use a lower per-frame bar and its boxes flicker less. `filled` counts the frames held since the
reset, so the detector can hold the first frames to the per-frame bar (a pooled threshold over
frames that are not there yet would miss every face until the memory fills).
"""

from __future__ import annotations

import numpy as np


class DetectionMemory:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("memory needs at least one slot")
        self.slots = slots
        self.reset()

    def reset(self) -> None:
        self._mem: list[np.ndarray] = [np.empty((0, 4), np.float32)] * self.slots
        self._next = 0
        self.filled = 0  # frames pushed since the reset, up to `slots`

    def push(self, raw: np.ndarray) -> np.ndarray:
        """Store this frame's raw windows, return the pool of all slots (n, 4) float32."""
        self.filled = min(self.filled + 1, self.slots)
        if self.slots == 1:
            return raw
        self._mem[self._next] = raw
        self._next = (self._next + 1) % self.slots
        return np.concatenate(self._mem, axis=0)
