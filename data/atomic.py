"""Atomic file writing: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from pathlib import Path

from .errors import CadenzaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """Four hex digits of this machine's name: a temporary's writer is known by machine and pid."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:4]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists (another user's), or the platform cannot tell: keep its files
        return True
    return True


STALE_SCAN_LIMIT = 2000  # directory entries a write looks through for its target's stale temporaries


def remove_dead_writers(target: str | os.PathLike) -> int:
    """Delete the temporaries of ``target`` whose writer, a process of this machine, is dead (a
    render or a save killed with SIGKILL); a live writer's, another machine's and untagged ones
    stay. Only the first ``STALE_SCAN_LIMIT`` entries of the folder are looked at, so that a
    write into a folder of many thousand files costs no more than a few milliseconds. Returns
    how many went."""
    target = Path(target)
    if not target.parent.is_dir():
        return 0
    host, removed = _host_tag(), 0
    prefix = f".{target.name}.{host}"
    names = []
    try:
        with os.scandir(target.parent) as entries:
            for count, entry in enumerate(entries):
                if count >= STALE_SCAN_LIMIT:  # a bulk job's folder: it clears its own, not each write
                    break
                if entry.name.startswith(prefix):
                    names.append(entry.name)
    except OSError:
        return 0
    for name in names:
        match = _TEMPORARY.match(name)
        if not match or match["target"] != target.name or match["host"] != host or not match["pid"]:
            continue
        pid, path = int(match["pid"]), target.parent / name
        if pid == os.getpid() or _alive(pid) or not path.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, *, stale: bool = True):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    An interrupted job never leaves a half-written output. The temporary name keeps the
    target's suffix so libraries that choose a format by extension still work, and names its
    writer (``.NAME.<machine><pid>-XXXXXXXX.SUFFIX``), so that the next write of the same target
    removes what a killed writer left (``stale=False`` skips that look, for a job that writes
    many files into one folder and clears it of temporaries once itself).
    """
    target = Path(path)
    if target.is_dir():
        raise CadenzaError(f"{target}: is a directory; give a file name to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if stale:
            remove_dead_writers(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_host_tag()}{os.getpid()}-", suffix=suffix or target.suffix,
                                   dir=target.parent)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), target.parent)
        raise CadenzaError(f"{target}: cannot write there ({blocker} is a file, not a directory)") from None
    except OSError as exc:
        raise CadenzaError(f"{target}: cannot write there ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise CadenzaError(f"{target}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, stale: bool = True) -> None:
    with atomic_path(path, stale=stale) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, *, stale: bool = True) -> None:
    with atomic_path(path, stale=stale) as tmp:
        tmp.write_text(text, encoding="utf-8")


# atomic_path's names: ".NAME.", the writer's machine (4 hex digits) and pid with a "-" (older
# names had none), mkstemp's 8 characters, the suffix
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?:(?P<host>[0-9a-f]{4})(?P<pid>[0-9]+)-)?[a-z0-9_]{8}(?P<suffix>\.[^.]*)?$")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether a file name is one of ``atomic_path``'s temporary names."""
    match = _TEMPORARY.match(Path(path).name)
    return bool(match) and (match["suffix"] or "") == Path(match["target"]).suffix


def temporaries(directory: str | os.PathLike, targets=None) -> list[Path]:
    """The temporary files ``atomic_path`` left in ``directory`` (not below it) when its process
    was killed before it could remove them: ``.NAME.XXXXXXXX.SUFFIX`` beside a target NAME;
    ``targets`` (names) restricts them to those targets."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    wanted = None if targets is None else {str(t) for t in targets}
    found = []
    for path in folder.iterdir():
        if not is_temporary(path) or not path.is_file():
            continue
        if wanted is not None and _TEMPORARY.match(path.name)["target"] not in wanted:
            continue
        found.append(path)
    return sorted(found)


def remove_temporaries(directory: str | os.PathLike, targets=None) -> int:
    """Delete what ``temporaries`` finds (call it only while no other process writes there, e.g.
    under ``locked``); returns how many files went."""
    removed = 0
    for path in temporaries(directory, targets):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def locked(directory: str | os.PathLike, what: str = "writing"):
    """Hold an exclusive lock on ``directory`` itself (flock on the directory, no lock file): a
    second process that writes there waits for the first. The kernel drops the lock when its
    holder dies, SIGKILL included."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            import sys

            print(f"cadenza: waiting for another process {what} {folder}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: write unlocked, as before
            pass
        yield
    finally:
        os.close(fd)
