"""Errors that cadenza reports to users: one line, naming the file and what is wrong."""

from __future__ import annotations


class CadenzaError(Exception):
    """Base of every error cadenza raises on purpose; the CLI prints it as one line, exit status 2."""


class MusicFileError(CadenzaError):
    """A file could not be read as music: missing, empty, truncated, not music, or without notes."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CorpusError(CadenzaError):
    """An unknown corpus name or a directory with no music in it."""


class TokenizerError(CadenzaError):
    """Input a tokenizer cannot encode, or ids that do not form a valid sequence."""


class MissingDependencyError(CadenzaError):
    """An optional library or system package is missing; the message says how to install it."""
