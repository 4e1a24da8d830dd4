"""Shared fixtures: a corpus cache inside the repository, real corpus pieces, system-library checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("CADENZA_CACHE", str(REPO / ".cache" / "cadenza"))
os.environ.setdefault("MPLBACKEND", "Agg")

# One intra-op thread per test process: xdist runs one process per core, and tiny models on
# several threads spend their time in synchronization, not arithmetic.
import torch  # noqa: E402

torch.set_num_threads(1)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip when a system library or tool is missing; under CI=true fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available")


def has_fluidsynth() -> bool:
    """pyfluidsynth imports and finds the FluidSynth library (libfluidsynth3)."""
    import importlib.util

    if importlib.util.find_spec("fluidsynth") is None:
        return False
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def require_fluidsynth() -> None:
    require(has_fluidsynth(), "the FluidSynth library (libfluidsynth3) and pyfluidsynth")


def run_cli(*args: str, check: bool = True, timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """Run the real ``cadenza`` command in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "cadenza.cli.main", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"cadenza {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def bach_pieces():
    """The first 24 Bach chorales of the built-in corpus, exported to MIDI (cached)."""
    from cadenza.data.corpora import open_corpus

    return open_corpus("bach-chorales").pieces(limit=24)


@pytest.fixture(scope="session")
def bach_valid_piece():
    """The first validation-split Bach chorale (the first 24 are all training pieces), exported alone."""
    from cadenza.data.corpora import BuiltinCorpus, source_piece_id, split_of

    corpus = BuiltinCorpus("bach-chorales")
    source = next(s for s in corpus.sources() if split_of(source_piece_id(s)) == "valid")
    return corpus.pieces(sources=[source])[0]


@pytest.fixture(scope="session")
def bach_scores(bach_pieces):
    import symusic

    return [symusic.Score(str(p.path)) for p in bach_pieces]
