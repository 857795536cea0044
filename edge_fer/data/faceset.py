"""The in-memory form of a face dataset."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Split names a user can ask for, mapped to the FER2013 `Usage` / file-name prefixes.
SPLITS = {
    "train": ("Training",),
    "public-test": ("PublicTest",),
    "private-test": ("PrivateTest",),
    "test": ("PublicTest", "PrivateTest"),
    "all": ("Training", "PublicTest", "PrivateTest"),
}
SKIPPED_KEPT = 100  # skipped entries named in a FaceSet (the count goes on beyond)


def check_split(split, param: str | None = None) -> None:
    """UserError unless `split` is one of SPLITS (checked where a command starts, before any
    work, and where a dataset is loaded)."""
    from edge_fer.errors import UserError

    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}", param=param)


def skipped_text(entries: list[str], total: int, shown: int = 5) -> str:
    """`entries` ("ID: why") as one line: the first `shown`, then how many more of `total`."""
    first = list(entries)[:shown]
    more = max(int(total) - len(first), 0)
    return "; ".join(first) + (f"; and {more} more" if more and first else "")


def skipped_line(total: int, entries: list[str], of: str = "") -> str:
    """--skip-bad's report line: "--skip-bad skipped 2 bad entries[ of the OF faces]: a.png:
    why; b.png: why" (train, prune and qat say it alike)."""
    n = int(total)
    what = f" of the {of} faces" if of else ""
    return f"--skip-bad skipped {n} bad entr{'y' if n == 1 else 'ies'}{what}: " + skipped_text(
        entries, n
    )


@dataclass
class FaceSet:
    """Grayscale faces: images (N, H, W) uint8, labels (N,) int64 into `classes`."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    ids: list[str] = field(default_factory=list)  # file name or csv line per face
    skipped: int = 0  # unreadable / malformed entries skipped (with skip_bad=True)
    # the first SKIPPED_KEPT of them, "ID: why" (ID as in `ids`: relative to the dataset), so
    # that a report can name them (a count alone left the user to find them)
    skipped_entries: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, mask: np.ndarray) -> FaceSet:
        idx = np.flatnonzero(mask)
        return FaceSet(
            self.images[idx],
            self.labels[idx],
            self.classes,
            [self.ids[i] for i in idx] if self.ids else [],
            self.skipped,
            list(self.skipped_entries),
        )

    def skipped_text(self, shown: int = 5) -> str:
        """The first `shown` skipped entries and how many more: "a.png: why; b.png: why; and 7
        more" ("" when none was skipped)."""
        return skipped_text(self.skipped_entries, self.skipped, shown)

    def class_weights(self) -> np.ndarray:
        """Weights max(R) / (C * n_i) with R_i = n_i / N: rare classes weigh more.

        The largest class gets 1/C and a class k times rarer gets k/C.
        """
        n = self.counts().astype(np.float64)
        c = len(self.classes)
        ratio = n / max(n.sum(), 1.0)
        with np.errstate(divide="ignore"):
            w = ratio.max() / (c * ratio)
        w[~np.isfinite(w)] = 0.0
        return w.astype(np.float32)

    def balanced_sample_weights(self) -> np.ndarray:
        """Per-sample probabilities for class-balanced sampling (each class equally likely)."""
        n = self.counts().astype(np.float64)
        per_class = np.where(n > 0, 1.0 / np.maximum(n, 1), 0.0)
        p = per_class[self.labels]
        return p / p.sum()
