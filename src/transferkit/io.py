"""Atomic file writes and content hashing shared by every module that persists state.

A write goes to a temporary file in the destination folder, is flushed and fsynced, and
is then renamed over the destination: a reader sees the old file or the new one, never a
half-written one, even after SIGKILL or a full disk.

``kill_point(name)`` marks a place where an interruption is interesting (tests only): with
``TRANSFERKIT_TEST_KILL_AT="<name>:<n>"`` in the environment the process SIGKILLs itself the
n-th time it reaches ``kill_point("<name>")``; ``"<name>@<text>:<n>"`` counts only the calls whose
file name contains <text> (``atomic.before_replace@model.safetensors:1``). Unset (always, outside
tests) a call costs one comparison. Points: ``atomic.before_replace`` / ``atomic.after_replace``
(every ``atomic_path`` write: temporary complete but not renamed / renamed), ``features.chunk``
(a chunk of every layer on disk), ``features.consolidated`` (a layer's final file renamed in, its
chunks not yet removed), ``engine.step`` (after an optimizer step), ``engine.checkpoint.tmp_written``
/ ``engine.checkpoint.renamed`` (an epoch's checkpoint directory complete under its temporary
name / renamed into place, ``latest.json`` not yet updated), ``engine.epoch_end``.
Used by tests/test_interruptions.py.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import StoreError

_UMASK = os.umask(0)
os.umask(_UMASK)

KILL_ENV = "TRANSFERKIT_TEST_KILL_AT"


def _parse_kill_at(spec: str | None) -> tuple[str, str, int] | None:
    if not spec:
        return None
    point, _, count = spec.rpartition(":")
    name, _, what = point.partition("@")
    if not name or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{KILL_ENV}={spec!r} must look like '<point>[@<file name part>]:<n>' with n >= 1.")
    return name, what, int(count)


_kill_at = _parse_kill_at(os.environ.get(KILL_ENV))
_kill_seen = 0


def arm_kill_point(spec: str | None) -> None:
    """(Re-)read a ``"<name>:<n>"`` kill spec (a process forked after import calls this)."""
    global _kill_at, _kill_seen
    _kill_at, _kill_seen = _parse_kill_at(spec), 0


def kill_point(name: str, what: str = "") -> None:
    """Test hook: SIGKILL this process the n-th time ``name`` is reached (see the module docstring)."""
    global _kill_seen
    if _kill_at is None or _kill_at[0] != name or _kill_at[1] not in what:
        return
    _kill_seen += 1
    if _kill_seen == _kill_at[2]:
        os.kill(os.getpid(), signal.SIGKILL)


def is_no_space(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a full disk: errno ENOSPC, or libraries that only
    say so in their message (safetensors: "No space left on device (os error 28)", HDF5)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def no_space_error(dest: str | os.PathLike[str]) -> StoreError:
    return StoreError(
        f"No space left on device while writing {dest}; the previous version of the file "
        "(if any) is intact. Free some disk space and run the same command again."
    )


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` atomically.

    On any exception the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f"{suffix}.tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the user's usual permissions
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        kill_point("atomic.before_replace", dest.name)
        os.replace(tmp_path, dest)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, StoreError) and is_no_space(exc):
            raise no_space_error(dest) from exc
        raise
    kill_point("atomic.after_replace", dest.name)


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StoreError(f"{path} does not exist.") from exc
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); was it edited by hand?") from exc


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the types that end up in metrics and configs.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
