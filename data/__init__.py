"""Reading music into Scores, the built-in corpora, splits and datasets.

The names below load their modules on first use (PEP 562), so importing
``cadenza.data.errors`` (as the command line does at start) does not load symusic.
"""

from __future__ import annotations

import importlib

from .errors import CadenzaError, CorpusError, MissingDependencyError, MusicFileError, TokenizerError

_LAZY = {
    "SUPPORTED_SUFFIXES": "io", "read_score": "io", "write_midi": "io", "write_musicxml": "io", "write_score": "io",
    "BUILTIN": "corpora", "Corpus": "corpora", "Piece": "corpora", "cache_root": "corpora",
    "open_corpus": "corpora", "split_of": "corpora",
}

__all__ = ["CadenzaError", "CorpusError", "MissingDependencyError", "MusicFileError", "TokenizerError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
