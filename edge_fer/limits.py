"""Size limits on frames and photos, decided once: the detector refuses frames beyond the
frame limits, and the image readers skip photos that could not be scanned within them; and
the bound on thread counts."""

from __future__ import annotations

import os

MAX_FRAME_SIDE = 16384  # px, either side of a frame the detector scans
MAX_FRAME_PIXELS = 1 << 27  # 134 Mpx: beyond this a frame is a mistake, not a photo
# Photos above this are skipped unread: decoding one allocates width x height x 3 bytes before
# anything can be checked (a 40000x40000 PNG of a few KB would take 4.8 GB). 100 Mpx is above
# every camera's normal output.
MAX_IMAGE_PIXELS = 100_000_000


def too_many_pixels(width: int, height: int) -> str | None:
    """Why an image of this size is not decoded (over MAX_IMAGE_PIXELS), or None: the words
    the photo readers and the dataset loaders share."""
    if width * height <= MAX_IMAGE_PIXELS:
        return None
    return (
        f"{width}x{height} pixels is over the {MAX_IMAGE_PIXELS // 1_000_000} Mpx limit for images"
    )


def frame_too_large(width: int, height: int) -> str | None:
    """Why frames of this size cannot be scanned (over MAX_FRAME_SIDE or MAX_FRAME_PIXELS), or
    None: the words `run` and `detect` give a video whose frames are beyond the detector."""
    if max(width, height) > MAX_FRAME_SIDE:
        return (
            f"{width}x{height} pixels are over the {MAX_FRAME_SIDE} px a side that can be scanned"
        )
    if width * height > MAX_FRAME_PIXELS:
        mpx = MAX_FRAME_PIXELS // 1_000_000
        return f"{width}x{height} pixels are over the {mpx} Mpx a frame can be scanned at"
    return None


# Threads any one pool may get: more than this is a typo (10000 threads for an eval drove the
# load average to 5000 on 2 cores), not a machine
MAX_THREADS = 256


def check_count(value, param: str, lowest: int = 1) -> int:
    """`value` as an integer >= `lowest` (a count of frames, faces, samples; a seed); a
    UserError naming `param` otherwise (NaN, 2.5 or True failed later, in numpy or OpenCV)."""
    from numbers import Integral

    from edge_fer.errors import UserError

    if isinstance(value, bool) or not isinstance(value, Integral) or value < lowest:
        raise UserError(f"must be an integer >= {lowest}, got {value!r}", param=param)
    return int(value)


def check_names(value, param: str) -> tuple:
    """`value` (a list or tuple of names or paths) as a tuple; a UserError naming `param` for
    a single string, which was read letter by letter ("no such model file /")."""
    from edge_fer.errors import UserError

    if isinstance(value, (str, bytes, os.PathLike)):
        raise UserError(
            f"must be a list of names or paths, not the single {value!r}: give [{value!r}]",
            param=param,
        )
    return tuple(value)


# the training steps' arithmetic (`train --precision`, `experiment --precision`): float32, or
# bfloat16 autocast (edge_fer.train.trainer.train_step)
TRAIN_PRECISIONS = ("fp32", "bf16")


def check_train_precision(value, param: str = "precision") -> str:
    """`value` if it is one of TRAIN_PRECISIONS, else a UserError naming `param`."""
    if value not in TRAIN_PRECISIONS:
        from edge_fer.errors import UserError

        raise UserError(f"must be {' or '.join(TRAIN_PRECISIONS)}, got {value!r}", param=param)
    return value


def check_threads(value, param: str = "threads", *, zero: str | None = "the default") -> int:
    """`value` as a thread count in 1..MAX_THREADS, or 0 where `zero` says what 0 means (None:
    0 is not allowed); a UserError naming `param` otherwise."""
    from numbers import Integral

    from edge_fer.errors import UserError

    lo = 0 if zero else 1
    ok = not isinstance(value, bool) and isinstance(value, Integral)
    if not ok or not lo <= int(value) <= MAX_THREADS:
        what = f" (0: {zero})" if zero else ""
        raise UserError(
            f"must be an integer in {lo}..{MAX_THREADS}{what}, got {_shown(value)}", param=param
        )
    return int(value)


def check_number(
    value,
    param: str,
    lo: float = 0.0,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """UserError naming `param` unless `value` is a finite number within lo..hi (`lo_open`,
    `hi_open`: the bound itself excluded). NaN, infinities and booleans fail every such test."""
    import math
    from numbers import Real

    from edge_fer.errors import UserError

    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo)
    if hi is not None:
        ok = ok and (value < hi if hi_open else value <= hi)
    if not ok:
        if hi is None:
            rng = f"> {lo:g}" if lo_open else f">= {lo:g}"
        else:
            rng = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise UserError(f"must be a finite number {rng}, got {value!r}", param=param)


def _shown(value) -> str:
    """A value as a message quotes it: a string in quotes ("got 2" was the string '2')."""
    return repr(value) if isinstance(value, (str, bytes)) else str(value)
