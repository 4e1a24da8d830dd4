"""Tokenizers: Event (Performance RNN), REMI (miditok) and Anticipatory, behind one face.

``SCHEMES`` (the registry, ``registry.py``) is imported eagerly and costs nothing; the
``Tokenizer`` base and ``get_tokenizer`` load numpy and symusic, so they are imported on first
use and ``cadenza --help`` can list the schemes without them.
"""

from .registry import SCHEMES

__all__ = ["SCHEMES", "Tokenizer", "get_tokenizer", "scheme_class"]


def __getattr__(name: str):
    if name in ("Tokenizer", "get_tokenizer", "scheme_class"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
