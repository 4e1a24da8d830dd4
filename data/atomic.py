"""Atomic file writing: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from .errors import CadenzaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    An interrupted job never leaves a half-written output. The temporary name keeps the
    target's suffix so libraries that choose a format by extension still work.
    """
    target = Path(path)
    if target.is_dir():
        raise CadenzaError(f"{target}: is a directory; give a file name to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent)
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# mkstemp's names: the prefix, 8 characters of tempfile's alphabet, the suffix
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?$")


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
