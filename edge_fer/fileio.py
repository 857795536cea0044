"""Writing files without losing anything: one home for atomic writes, strict JSON and
one-line error text.

Rules every writer in edge-fer follows (issue #13):
- a regular file (or a new name) is written to a temporary file beside it, flushed, fsynced and
  renamed over it: readers see the old or the new content, never half of it; the temporary file
  is removed on every exit path, Ctrl-C included;
- a symlink is followed: its target is replaced atomically, the link stays a link;
- a device, pipe or socket (``/dev/null``, ``/dev/stdout``, a FIFO) is written through, never
  replaced by a regular file; the process's own streams (``/dev/stdout``, ``/dev/fd/N``) are
  appended to, whatever they were redirected to;
- nothing is written into edge-fer's bundled assets (`check_collisions`);
- JSON is strict (no NaN or Infinity, which other parsers reject): a non-finite number is a
  ValueError naming where it is.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

from edge_fer.errors import UserError, first_line

PathLike = Union[str, "os.PathLike[str]"]


def read_head(path: Path, n: int, what: str) -> bytes:
    """The first `n` bytes of the file at `path`, to tell what it is; a UserError when it is
    missing ("no such WHAT file"), unreadable or empty ("empty file, not a WHAT")."""
    if not path.exists():
        raise UserError(f"{path}: no such {what} file")
    if not path.is_file():  # a pipe would block the open for ever, a device read for ever
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise UserError(f"{path}: {kind}, not a {what} file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise UserError(f"{path}: empty file, not a {what}")
    return head


def cannot_write_in(folder: str | os.PathLike) -> str | None:
    """Why no file can be created in the existing `folder` (a probe file, made and removed at
    once), or None when one can: os.access answers yes to root for /proc and for read-only
    mounts, and a refusal found then came after the work."""
    import tempfile

    try:
        tempfile.TemporaryFile(dir=os.fspath(folder)).close()
    except OSError as exc:
        return os_error_reason(exc)
    return None


class FolderLock:
    """An exclusive lock on an output folder for as long as one process writes it (flock on
    the folder itself: no lock file, and the system drops it when the process dies, kill -9
    included). Two runs into one folder mixed their files (two trainings' log rows, one run's
    frames removed by the other); the second is now refused, after waiting up to `wait_s`
    for the first to let go (a short update, such as a record in the cache folder). Where
    there is no flock (Windows) nothing is locked."""

    def __init__(self, folder: str | os.PathLike, what: str, wait_s: float = 0.0) -> None:
        from edge_fer.errors import UserError

        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:
            return
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return  # a folder that cannot be opened is reported by the writes themselves
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise UserError(
                        f"{os.fspath(folder)}: another {what} is writing this folder right "
                        "now; wait for it to end or give another folder"
                    ) from None
                time.sleep(0.02)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # (closing drops the lock)


def check_file_can_be_made(path: str | os.PathLike, param: str) -> None:
    """UserError naming `param` unless a file `path` can be made once its missing folders
    are: no file where one of them would be, and files can be made in the nearest that
    exists. For outputs written after long work (an export), checked before it."""
    from edge_fer.errors import UserError

    p = Path(path)
    for q in p.absolute().parents:
        if q.exists() or q.is_symlink():
            if not q.is_dir():
                raise UserError(f"{os.fspath(path)}: {q} is not a folder", param=param)
            reason = cannot_write_in(q)
            if reason is not None:
                raise UserError(f"{os.fspath(path)}: cannot write in {q} ({reason})", param=param)
            return


def os_error_reason(exc: OSError) -> str:
    """A short human reason for an OSError (disk full, permission denied, ...)."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    if exc.errno == errno.EFBIG:
        return "the file size limit (ulimit -f) is reached"
    if exc.errno == errno.ENXIO:  # open_stream on a named pipe
        return "no process reads the pipe"
    return exc.strerror or first_line(exc)


def names_folder(path: PathLike) -> bool:
    """Whether `path` is spelled as a folder (it ends in a separator: "out/"). Path() drops the
    slash, so a file output given "DIR/" was written as a file named DIR."""
    return os.fspath(path).endswith(("/", os.sep))


def portable_path(path: PathLike) -> str:
    """`path` as reports and metadata that travel record it: a relative path as given, an
    absolute one relative to the working folder when inside it, else by its name alone (no
    local absolute path in what ships)."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return p.name


def sha256_file(path: PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_special(path: PathLike) -> bool:
    """True when `path` exists and is not a regular file or folder (device, FIFO, socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


# the process's own streams by name: written through (appended), never replaced; as links they
# resolve to names such as /proc/123/fd/pipe:[456] that cannot be opened or renamed over, and a
# rename over the file a shell redirected stdout to would drop what was printed before
_STREAM_PREFIXES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def is_stream(path: PathLike) -> bool:
    """A device, FIFO or socket, directly or through links, or one of the process's own streams
    (/dev/stdout even where the shell redirected it to a regular file): written through,
    appended, never truncated or renamed over."""
    p = os.fspath(path)
    return p.startswith(_STREAM_PREFIXES) or is_special(p)


def _own_fd(p: str) -> int | None:
    """The descriptor a name of the process's own streams stands for (/dev/stdout: 1, ...)."""
    named = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
    if p in named:
        return named[p]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if p.startswith(prefix) and p[len(prefix) :].isdigit():
            return int(p[len(prefix) :])
    return None


def open_stream(path: PathLike, mode: str = "ab", **kw):
    """`open(path, mode)` for appending to a device or a stream; a named pipe that no process
    reads is an OSError (ENXIO) at once instead of an open that waits for a reader for ever,
    where Ctrl-C and SIGTERM (handled as flags by the pipeline) could not end it."""
    own = _own_fd(os.fspath(path))
    if own is not None:
        # the descriptor itself, duplicated: reopening /dev/stdout made a second file offset, so
        # with stdout redirected to a file (`> out.txt`) the events and what the shell or
        # stderr wrote there overwrote each other; "w" on a descriptor truncates nothing
        return open(os.dup(own), mode.replace("a", "w"), closefd=True, **kw)
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        fifo = False
    if not fifo:
        return open(path, mode, **kw)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return open(fd, mode, closefd=True, **kw)
    except BaseException:
        os.close(fd)
        raise


def temp_name(target: Path) -> Path:
    """The private file a write to `target` goes through (renamed over it when complete): a
    hidden name beside it, per process and thread."""
    return hidden_beside(target, f".{os.getpid()}.{threading.get_ident()}.tmp")


def hidden_beside(target: Path, tail: str, name: str | None = None) -> Path:
    """`.NAME{tail}` beside `target` (NAME: `name`, else the target's), shortened to a digest
    when long: a 234-byte name plus the tail went over the 255 bytes a name may have, and the
    write failed."""
    base = target.name if name is None else name
    hidden = f".{base}{tail}"
    if len(os.fsencode(hidden)) > 200:
        hidden = f".{hashlib.sha256(os.fsencode(base)).hexdigest()[:16]}{tail}"
    return target.with_name(hidden)


def _target(path: PathLike) -> Path:
    """The file a write to `path` should land in: a symlink's final target, else `path`."""
    p = Path(path)
    if p.is_symlink():
        return Path(os.path.realpath(p))
    return p


def write_bytes(path: PathLike, data: bytes | memoryview) -> None:
    """Write `data` to `path` atomically (regular files) or through (devices, pipes).

    Raises OSError as the OS reports it; callers turn it into a UserError naming what was
    written (see `os_error_reason`).
    """
    if is_stream(path):
        # write through: /dev/null stays a device, a FIFO's reader gets the bytes, stdout
        # keeps what was printed before
        with open_stream(path, "ab", buffering=0) as fh:
            view = memoryview(data)
            while view:
                n = fh.write(view)
                view = view[n or len(view) :]
        return
    target = _target(path)
    tmp = temp_name(target)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:  # keep the permissions of the file being replaced
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        except OSError:
            pass
        os.replace(tmp, target)
    finally:
        try:  # gone after the rename; else a leftover of a failed write
            os.unlink(tmp)
        except OSError:
            pass


class WriteError(OSError):
    """`write_together` could not write or remove `path` (the target, not its temporary)."""

    def __init__(self, path: PathLike, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror, os.fspath(path))
        self.path = os.fspath(path)
        self.reason = os_error_reason(exc)


def write_together(files, remove=(), folder: PathLike | None = None) -> None:
    """Write every (path, bytes) of `files` (each with `write_bytes`: atomic, a symlink's
    target replaced, a device or pipe written through), then remove the regular files and
    links of `remove` that exist: one output set, all new or all as it was. When a write
    or removal fails (WriteError naming its path), or an interrupt arrives meanwhile, the
    files already written get their earlier content back (or are removed when new), the
    removed ones come back, and `folder`, when this call made it, is removed again."""
    made = folder is not None and not Path(folder).exists()
    undo: list[tuple[Path, bytes | None, str | None]] = []  # (path, old bytes, old link)
    try:
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        for path, content in files:
            target = Path(os.path.realpath(path))  # a symlink's target is what changes
            try:
                special = is_special(target)
                old = target.read_bytes() if target.is_file() else None
                write_bytes(path, content)
            except OSError as exc:
                raise WriteError(path, exc) from None
            if not special:
                undo.append((target, old, None))
        for path in remove:
            q = Path(path)
            if not (q.is_symlink() or q.is_file()):
                continue
            try:
                link = os.readlink(q) if q.is_symlink() else None
                old = None if link is not None else q.read_bytes()
                q.unlink()
            except OSError as exc:
                raise WriteError(q, exc) from None
            undo.append((q, old, link))
    except BaseException:
        for path, old, link in reversed(undo):
            try:
                if link is not None:
                    os.symlink(link, path)
                elif old is None:
                    path.unlink()
                else:
                    write_bytes(path, old)
            except OSError:
                pass
        if made:
            try:
                Path(folder).rmdir()  # type: ignore[arg-type]  # only when empty
            except OSError:
                pass
        raise


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _default(o: Any) -> Any:
    # numpy scalars and arrays, paths: what our reports hold besides plain Python values
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _find_nonfinite(obj: Any, where: str = "$") -> str | None:
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _find_nonfinite(v, f"{where}.{k}")
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _find_nonfinite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN/Infinity); numpy values and paths are converted."""
    try:
        if indent is None:
            return json.dumps(obj, allow_nan=False, default=_default, separators=(",", ":"))
        return json.dumps(obj, allow_nan=False, default=_default, indent=indent)
    except ValueError:
        plain = json.loads(json.dumps(obj, default=_default))  # NaN survives this round trip
        where = _find_nonfinite(plain) or "a value"
        raise ValueError(
            f"not a finite number at {where}: JSON cannot hold NaN or Infinity"
        ) from None


def write_json(path: PathLike, obj: Any, indent: int | None = 2) -> None:
    """Strict JSON, written as `write_bytes` does (atomic, or through to a device)."""
    write_text(path, dumps(obj, indent) + "\n")


def save_bytes(path: PathLike, data: bytes) -> None:
    """`write_bytes` for a user-named output, its missing folders made: a failure (a full
    disk, a file where a folder should be) is one UserError line naming the path."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
    except OSError as exc:
        raise UserError(f"{os.fspath(path)}: cannot write ({os_error_reason(exc)})") from None


def save_json(path: PathLike, obj: Any, what: str, indent: int | None = 2) -> None:
    """`write_json` for a user-named output: a failure (a full disk, a folder that is not
    there, NaN in the data) is one UserError line naming `what` and the path."""
    try:
        write_json(path, obj, indent)
    except OSError as exc:
        raise UserError(f"cannot write {what} {os.fspath(path)}: {os_error_reason(exc)}") from None
    except ValueError as exc:  # NaN or Infinity: strict JSON cannot hold it
        raise UserError(f"cannot write {what} {os.fspath(path)}: {first_line(exc)}") from None


def json_with_keys(path: PathLike, keys: set[str]) -> dict | None:
    """The JSON object `path` holds when it has all of `keys`, else None: how a command knows
    an earlier output of its own, which it replaces without --force (any other file it does
    not)."""
    try:
        with open(path, "rb") as fh:
            d = json.loads(fh.read(64 << 20))
    except (OSError, ValueError, RecursionError):  # RecursionError: '[' nested 100k deep
        return None
    return d if isinstance(d, dict) and keys <= set(d) else None


def check_output_file(path: PathLike, lead: str, param: str | None = None) -> None:
    """UserError ("LEAD: ...", naming `param`) unless `path` can be a file to write: not a
    folder (nor spelled as one, "out/"), and no existing file where one of its folders should
    be (found after the work, such an output was lost). Missing folders are fine: made later."""
    p = Path(path)
    if names_folder(path):
        raise UserError(
            f"{lead}: names a folder (it ends in /, so it is a folder name); give a file name",
            param=param,
        )
    if p.is_dir():
        raise UserError(f"{lead}: is a folder; give a file name", param=param)
    up = next((q for q in p.parents if q.exists()), None)
    if up is not None and not up.is_dir():
        raise UserError(f"{lead}: {up} is not a folder", param=param)


# ---- outputs against inputs -------------------------------------------------------------


def _identity(path) -> tuple[str, tuple[int, int] | None, bool]:
    """(resolved path, (device, inode) when it exists, whether it is a device/pipe/socket)."""
    p = os.fspath(path)
    real = os.path.realpath(p)
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return real, None, False
    special = not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))
    return real, (st.st_dev, st.st_ino), special


def _same(a: tuple, b: tuple) -> bool:
    # the resolved names catch symlinks and other spellings; device and inode catch hard links
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


# a writer that runs touches its files far more often than this: older, with its process gone,
# a temporary of ours was left by a killed run (kill -9, the OOM killer)
STALE_AFTER_S = 120.0


def remove_if_stale(path: Path, pid: int) -> None:
    """Remove `path` (a file, or a folder of files), a temporary that process `pid` was
    writing, when that process is gone and nothing in it was touched for STALE_AFTER_S (a
    shared folder's other machine may be writing its own: its ids are not ours to check).
    Ours, alive, another user's, or anything unsure: left as it is."""
    if os.name != "posix" or pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
        return  # alive
    except ProcessLookupError:
        pass
    except (OSError, OverflowError):  # another user's (EPERM), or no such number
        return
    try:
        folder = path.is_dir() and not path.is_symlink()
        inner = list(path.iterdir()) if folder else []
        if time.time() - max(p.lstat().st_mtime for p in [path, *inner]) <= STALE_AFTER_S:
            return
        if folder:
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:  # gone meanwhile, or not ours to remove
        pass


def check_replaceable(
    lead: str, path: PathLike | None, ours: Callable[[str], bool], kind: str, force: bool = False
) -> None:
    """UserError unless the output `path` may be written over: new, empty, a device, pipe or
    standard output (written through), or a file `ours` recognises as an earlier `kind` of
    this tool; any other file only with `force` (a README, notes.json or a model named by
    mistake was replaced without a word). `lead` opens the message (`--json out.json`)."""
    if not path or force or is_stream(path):
        return
    p = os.fspath(path)
    try:
        if not os.path.isfile(p) or os.path.getsize(p) == 0 or ours(p):
            return
    except OSError:  # the write reports what is wrong with it
        return
    raise UserError(
        f"{lead} exists and is not an earlier {kind}; pass --force to replace it, "
        "or give another name"
    )


def check_collisions(outputs, inputs=()) -> None:
    """One-line UserError when an output would overwrite an input or another output.

    `outputs`, `inputs`: (name, path) pairs such as ("--events", "e.jsonl"); a None or empty
    path is skipped. Two outputs may share a device or pipe (/dev/null, /dev/stdout): those are
    written through, nothing is replaced.
    """
    outs = [(n, p, _identity(p)) for n, p in outputs if p]
    ins = [(n, p, _identity(p)) for n, p in inputs if p]
    for i, (name, path, ident) in enumerate(outs):
        for n2, p2, ident2 in ins:
            if _same(ident, ident2):
                same = "" if os.fspath(p2) == os.fspath(path) else f" ({p2})"
                raise UserError(
                    f"{name} {path} is the same file as {n2}{same}: an output must "
                    "not overwrite an input; give it another name"
                )
        for n2, p2, ident2 in outs[:i]:
            if _same(ident, ident2) and not (ident[2] and ident2[2]):
                raise UserError(
                    f"{n2} {p2} and {name} {path} are the same file: give each output its own"
                )
    assets = Path(__file__).resolve().parent / "assets"
    for name, path, ident in outs:
        # not only the ones this run reads: a bench JSON over fer_default.int8.onnx broke every
        # later run that picked INT8
        if not ident[2] and inside(path, assets):
            raise UserError(
                f"{name} {path} is in edge-fer's bundled assets ({assets}): an output must not "
                "replace them; give it another name"
            )


def inside(path: PathLike, folder: PathLike) -> bool:
    """Whether `path` is `folder` or lies within it, spelled as given or with its links
    resolved: a symlink inside a dataset is part of it even when it points elsewhere, and
    writing through it would replace what it points to."""
    base = {os.path.realpath(folder), os.path.abspath(folder)}
    here = {os.path.realpath(path), os.path.abspath(path)}
    return any(h == b or h.startswith(b.rstrip(os.sep) + os.sep) for h in here for b in base)


def check_outside(outputs, folder: PathLike | None, folder_name: str, why: str) -> None:
    """One-line UserError naming an output that would lie in the input folder `folder`.

    `outputs`: (name, path) pairs as for `check_collisions`; `why` ends the message ("its
    files would become part of the dataset")."""
    if not folder or not os.path.isdir(folder):
        return
    for name, path in outputs:
        if path and inside(path, folder):
            raise UserError(
                f"{name} {path} is inside {folder_name} {folder}: {why}; choose a place outside it"
            )


STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def is_stdout(path: PathLike | None) -> bool:
    """`path` names standard output ("-" included, where the caller maps it to /dev/stdout)."""
    return path is not None and os.fspath(path) in STDOUT_NAMES
