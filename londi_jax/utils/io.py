"""Crash-safe files: atomic writes with normal permissions, JSONL that survives a torn last line,
and an up-front check that an output directory can be written.

Rules every writer in the project follows (a kill at any instant must never block a resume):

* whole files (JSON, tables, plots, datasets) are written to a temporary sibling, flushed and
  ``fsync``-ed, given the permissions a plain ``open(path, "w")`` would get (``0o666`` minus the
  umask; ``tempfile.mkstemp`` would leave ``0o600``) and moved into place with ``os.replace``,
  so a reader sees the old file or the new one, never half of one;
* append-only JSONL logs are read with :func:`read_jsonl`, which drops an unparseable final line
  that has no newline (what a kill in the middle of ``write`` leaves) with a warning, and are
  appended to through :func:`open_jsonl_append`, which first cuts such a torn tail off so the
  next record does not get glued to it.

Standard library only (imported by every layer).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from londi_jax.utils.errors import LondiError

__all__ = ["DataFileError", "OutputDirError", "TornWriteWarning", "umask", "default_mode", "atomic_write",
           "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "read_json", "read_jsonl",
           "open_jsonl_append", "append_jsonl", "make_temp_dir", "apply_default_permissions",
           "check_writable_dir"]


class DataFileError(LondiError):
    """A file a run needs is damaged in a way a crash cannot explain (not a torn last write)."""


class OutputDirError(LondiError):
    """An output directory that cannot be created or written."""


class TornWriteWarning(UserWarning):
    """A torn last line (an interrupted append) was skipped or cut off."""


# ----------------------------------------------------------------------------- permissions
def umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``;
    elsewhere set-and-restore, which is not thread-safe but only a fallback)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """Mode a new file (``0o666``) or directory (``0o777``) gets under the current umask."""
    return (0o777 if directory else 0o666) & ~umask()


def apply_default_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` and everything below it the modes plain creation would (umask applied):
    for files libraries write owner-only (``mkstemp``, ``mkdtemp``, safetensors' writer)."""
    root = Path(path)
    fmode, dmode = default_mode(False), default_mode(True)
    if root.is_dir():
        for dirpath, _, files in os.walk(root):
            os.chmod(dirpath, dmode)
            for f in files:
                p = os.path.join(dirpath, f)
                if not os.path.islink(p):
                    os.chmod(p, fmode)
    elif root.exists():
        os.chmod(root, fmode)


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new uniquely named directory in ``parent`` with normal permissions (``tempfile.mkdtemp``
    makes it ``0o700``, which a later ``os.replace`` would carry into the final output)."""
    parent = Path(parent)
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)  # the kernel applies the umask
            return path
        except FileExistsError:
            continue
    raise OutputDirError(f"could not create a temporary directory in {parent}")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every OS / filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- atomic writes
def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically: ``write(fh)`` fills a temporary sibling opened in binary mode,
    which is fsync-ed and renamed over ``path``. On any error ``path`` is unchanged and the
    temporary file is removed. The file gets mode ``0o666`` minus the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:  # O_EXCL: never reuse someone else's temp file; mode 0o666 -> the kernel applies the umask
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise OutputDirError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    """:func:`atomic_write` of ``json.dumps(obj, indent=indent, **kwargs)`` plus a newline."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **kwargs) + "\n")


# ----------------------------------------------------------------------------- reading
def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a damaged file is a :class:`DataFileError` naming it (files written
    by :func:`atomic_write_json` are never torn, so this means damage from outside)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFileError(f"{path} is not valid JSON ({err}); restore it or delete it to redo what wrote it") from err


def _split_tail(data: bytes) -> tuple[bytes, bytes]:
    """``(complete lines, final line without newline)``."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def _parses(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = True) -> list[Any]:
    """The records of a JSONL file, one JSON value per line (blank lines skipped).

    A final line without a newline that does not parse is what a kill in the middle of an append
    leaves: it is skipped with a :class:`TornWriteWarning`. A bad line anywhere else cannot come
    from a crash and raises :class:`DataFileError` naming the file and line. A missing file is
    ``[]`` (``missing_ok``). Nothing is written: readers work on read-only runs.
    """
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return []
        raise DataFileError(f"no file {path}")
    body, tail = _split_tail(path.read_bytes())
    records = []
    for i, line in enumerate(body.split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataFileError(f"line {i} of {path} is not valid JSON ({err}) and is not a torn last line; "
                                f"remove that line to resume") from err
    if tail.strip(b" \t\r\0"):
        if _parses(tail):  # complete record, only its newline missing
            records.append(json.loads(tail.decode("utf-8")))
        else:
            warnings.warn(f"{path}: skipped a torn last line ({len(tail)} bytes, an interrupted write)",
                          TornWriteWarning, stacklevel=2)
    return records


def _repair_tail(path: Path) -> None:
    """Cut a torn final line off ``path`` (or end a complete one with its missing newline)."""
    if not path.exists():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        # the tail is at most one record: read back to the previous newline
        chunk = min(size, 1 << 20)
        while True:
            fh.seek(size - chunk)
            data = fh.read(chunk)
            if b"\n" in data or chunk == size:
                break
            chunk = min(size, chunk * 4)
        cut = size - chunk + data.rfind(b"\n") + 1
        fh.seek(cut)
        tail = fh.read()
        if tail.strip(b" \t\r\0") and _parses(tail):
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(cut)
            if tail.strip(b" \t\r\0"):
                warnings.warn(f"{path}: cut off a torn last line ({len(tail)} bytes, an interrupted write)",
                              TornWriteWarning, stacklevel=3)
        fh.flush()
        os.fsync(fh.fileno())


def open_jsonl_append(path: str | os.PathLike) -> IO[str]:
    """Open a JSONL file for appending, first repairing a torn last line (see :func:`read_jsonl`)
    so the next record starts on a line of its own. New files get normal permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(path)
    return open(path, "a", encoding="utf-8")


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one record as a line and fsync it (for rare, valuable records such as a finished
    evaluation run)."""
    with open_jsonl_append(path) as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ----------------------------------------------------------------------------- output directories
def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` if needed and prove it is writable, before any work goes into it.

    Checks ``os.access`` on the directory (or its nearest existing parent) and then really
    creates, writes and removes a temporary file in it: ``os.access`` alone says yes to root on a
    read-only mount, and a test write catches full disks, quotas and read-only file systems.
    Raises :class:`OutputDirError` naming the directory and the reason.
    """
    path = Path(path)
    probe_at = path
    while not probe_at.exists() and probe_at != probe_at.parent:
        probe_at = probe_at.parent
    if probe_at.exists() and not probe_at.is_dir():
        raise OutputDirError(f"cannot use {path} as the {what}: {probe_at} is a file, not a directory; "
                             f"choose another directory")
    if not os.access(probe_at, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot write to the {what} {path}: no write permission on {probe_at}; "
                             f"choose a writable directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / ".write-test", b"ok")
        os.unlink(path / ".write-test")
    except OSError as err:
        raise OutputDirError(f"cannot write to the {what} {path}: {err.strerror or err}; "
                             f"choose a writable directory") from err
    return path
