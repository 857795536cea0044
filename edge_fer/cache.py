"""Where edge-fer keeps per-user caches (compiled numba kernels): never inside the package.

numba's default for `cache=True` is a `__pycache__` beside the source, i.e. inside
site-packages. That fails on read-only installs (system packages, containers), and pip removes
only the files it installed: a leftover `edge_fer/detect/__pycache__` then shadows a later
editable install as a namespace package and every `edge-fer` command fails to import.

The cache folder is `$EDGE_FER_CACHE`, else (Windows) `%LOCALAPPDATA%\\edge-fer\\Cache`, else
`$XDG_CACHE_HOME/edge-fer` (an absolute one), else `~/.cache/edge-fer`; the kernels go into
its `numba/` subfolder. A `NUMBA_CACHE_DIR` the user set (numba's own setting) wins. When the
folder cannot be created or written, the kernels are compiled in every process and nothing is
written to disk; a save that fails later (a full disk, a quota) is skipped the same way.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_checked: dict = {}  # folder -> whether it is writable (checked once per process)


def cache_dir() -> str | None:
    """edge-fer's per-user cache folder (absolute; it may not exist yet), or None when there
    is no home to put it in."""
    own = os.environ.get("EDGE_FER_CACHE", "")
    if own:
        return os.path.abspath(os.path.expanduser(own))
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return os.path.join(os.environ["LOCALAPPDATA"], "edge-fer", "Cache")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec: a relative path is invalid and ignored
        return os.path.join(xdg, "edge-fer")
    home = os.path.expanduser("~")
    if home == "~" or not os.path.isabs(home):
        return None
    return os.path.join(home, ".cache", "edge-fer")


def numba_cache_dir() -> str | None:
    """The folder numba caches edge-fer's kernels in: the user's NUMBA_CACHE_DIR, else
    `numba/` in `cache_dir()`; None when there is none."""
    user = os.environ.get("NUMBA_CACHE_DIR", "")
    if user:
        return os.path.abspath(os.path.expanduser(user))
    root = cache_dir()
    return os.path.join(root, "numba") if root else None


def _writable(folder: str) -> bool:
    if folder not in _checked:
        try:
            os.makedirs(folder, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()  # the check numba itself makes
            _checked[folder] = True
        except OSError:
            _checked[folder] = False
    return _checked[folder]


def njit_cached(**options: Any) -> Callable:
    """`numba.njit(cache=True, **options)` with the cache in `numba_cache_dir()`; without a
    writable folder, `numba.njit(**options)` (compiled per process, nothing written).

    numba picks a function's cache folder when it is decorated, from `numba.config.CACHE_DIR`;
    that setting is pointed at our folder only while our function is decorated, so other numba
    code in the process and child processes keep their own settings.
    """
    import numba
    from numba.core import config  # CACHE_DIR is set from the environment at run time

    def decorate(fn: Callable) -> Callable:
        folder = numba_cache_dir()
        with _lock:
            if folder is None or not _writable(folder):
                return numba.njit(**options)(fn)
            before = vars(config).get("CACHE_DIR", "")
            vars(config)["CACHE_DIR"] = folder
            try:
                return _saves_best_effort(numba.njit(cache=True, **options)(fn))
            finally:
                vars(config)["CACHE_DIR"] = before

    return decorate


def _saves_best_effort(dispatcher: Any) -> Any:
    """Keep a kernel on disk when the disk lets us: numba raises its OSError from the save (a
    full disk, a quota, a file size limit), which stopped `detect` and `run` although the
    kernel was compiled and nothing of theirs had to be written. numba writes each cache file
    whole (a temporary name, then a rename), so a failed save leaves nothing half-written."""
    cache: Any = getattr(dispatcher, "_cache", None)
    save = getattr(cache, "save_overload", None)
    if save is None:  # another numba: its own behaviour
        return dispatcher

    def save_overload(sig: Any, data: Any) -> None:
        try:
            save(sig, data)
        except OSError:
            pass  # compiled in this process; the next one compiles it again

    cache.save_overload = save_overload
    return dispatcher


def compiled_on_disk(kernel: Any) -> bool:
    """Whether a numba kernel of ours has a cache index on disk (so the next call loads rather
    than compiles). True when that cannot be told (no disk cache, another numba): the answer
    only decides whether to say that compiling may take a while."""
    index = getattr(
        getattr(getattr(kernel, "_cache", None), "_cache_file", None), "_index_path", None
    )
    return not isinstance(index, str) or os.path.exists(index)


def kernel_cache_folder() -> str | None:
    """The folder our compiled kernels are kept in, or None when nothing is kept on disk."""
    folder = numba_cache_dir()
    return folder if folder is not None and _writable(folder) else None
