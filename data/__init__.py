"""Reading music into Scores, the built-in corpora, splits and datasets."""

from .errors import CadenzaError, CorpusError, MissingDependencyError, MusicFileError, TokenizerError
from .io import SUPPORTED_SUFFIXES, read_score, write_midi, write_musicxml, write_score

__all__ = [
    "CadenzaError", "CorpusError", "MissingDependencyError", "MusicFileError", "TokenizerError",
    "SUPPORTED_SUFFIXES", "read_score", "write_midi", "write_musicxml", "write_score",
]

from .corpora import BUILTIN, Corpus, Piece, cache_root, open_corpus, split_of  # noqa: E402

__all__ += ["BUILTIN", "Corpus", "Piece", "cache_root", "open_corpus", "split_of"]
