"""The face every cadenza tokenizer shares.

A tokenizer maps a ``symusic.Score`` (or a path to any music file) to a 1-D numpy array of
the scheme's own ids, and back. Special ids (PAD, BOS, EOS) come *after* the scheme's ids,
so the scheme's numbering matches its published reference.
"""

from __future__ import annotations

import importlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import symusic

from cadenza.data.atomic import write_text_atomic
from cadenza.data.errors import TokenizerError

CONFIG_FILE = "tokenizer.json"
SPECIAL_NAMES = ("PAD", "BOS", "EOS")


class Tokenizer(ABC):
    """Base class: subclasses set ``name``, build ``self.config`` and implement the scheme."""

    name: ClassVar[str]

    def __init__(self, **config: Any):
        self.config: dict[str, Any] = dict(config)

    # -- the scheme ---------------------------------------------------------------
    @property
    @abstractmethod
    def base_vocab_size(self) -> int:
        """Number of the scheme's own ids (0 .. base_vocab_size - 1)."""

    @abstractmethod
    def encode(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        """Ids of the scheme (no BOS/EOS) for a Score or a path to a music file."""

    @abstractmethod
    def decode(self, ids) -> symusic.Score:
        """A Score from ids; special ids are ignored."""

    @abstractmethod
    def ranges(self) -> list[tuple[str, int, int]]:
        """The vocabulary as named half-open ranges [(name, start, stop), ...] of scheme ids."""

    @abstractmethod
    def _base_token_to_str(self, token_id: int) -> str:
        """Readable name of one of the scheme's own ids."""

    # -- shared ---------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.base_vocab_size

    @property
    def bos_id(self) -> int:
        return self.base_vocab_size + 1

    @property
    def eos_id(self) -> int:
        return self.base_vocab_size + 2

    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + len(SPECIAL_NAMES)

    def token_to_str(self, token_id: int) -> str:
        token_id = int(token_id)
        if 0 <= token_id < self.base_vocab_size:
            return self._base_token_to_str(token_id)
        if self.base_vocab_size <= token_id < self.vocab_size:
            return SPECIAL_NAMES[token_id - self.base_vocab_size]
        raise TokenizerError(f"id {token_id} is outside the {self.name} vocabulary (0..{self.vocab_size - 1})")

    def tokens_to_str(self, ids) -> list[str]:
        return [self.token_to_str(i) for i in np.asarray(ids).ravel()]

    def describe(self) -> str:
        """The vocabulary layout as named ranges, one per line."""
        lines = [f"{self.name} tokenizer: {self.vocab_size} ids ({self.base_vocab_size} scheme ids + PAD, BOS, EOS)"]
        for name, start, stop in self.ranges():
            lines.append(f"  {start:6d}-{stop - 1:<6d} {name} ({stop - start})")
        for i, special in enumerate(SPECIAL_NAMES):
            lines.append(f"  {self.base_vocab_size + i:6d}        {special}")
        notes = self.describe_notes()
        if notes:
            lines.append(notes)
        return "\n".join(lines)

    def describe_notes(self) -> str:
        """Extra lines for describe(): what the scheme drops or changes."""
        return ""

    def check_ids(self, ids) -> np.ndarray:
        """Scheme ids as int64 with special ids removed; TokenizerError for anything else."""
        array = np.asarray(ids)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
            raise TokenizerError(f"ids must be integers, got an array of {array.dtype}")
        array = array.astype(np.int64).ravel()
        bad = (array < 0) | (array >= self.vocab_size)
        if bad.any():
            raise TokenizerError(f"id {int(array[bad][0])} is outside the {self.name} vocabulary "
                                 f"(0..{self.vocab_size - 1})")
        return array[array < self.base_vocab_size]

    def strip_special(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        return ids[ids < self.base_vocab_size]

    @staticmethod
    def as_score(score_or_path) -> symusic.Score:
        if isinstance(score_or_path, symusic.Score):
            return score_or_path
        from cadenza.data.io import read_score

        return read_score(score_or_path)

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.name, "config": _jsonable(self.config)}

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / CONFIG_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))
        return path

    @staticmethod
    def load(directory: str | os.PathLike) -> "Tokenizer":
        path = Path(directory)
        if path.is_dir():
            path = path / CONFIG_FILE
        data = json.loads(path.read_text())
        return get_tokenizer(data["scheme"], **data.get("config", {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


SCHEMES = {
    "event": "cadenza.tokenizers.event:EventTokenizer",
    "remi": "cadenza.tokenizers.remi:REMITokenizer",
    "anticipatory": "cadenza.tokenizers.anticipatory:AnticipatoryTokenizer",
}


def get_tokenizer(name: str, **config: Any) -> Tokenizer:
    """``get_tokenizer("event" | "remi" | "anticipatory", **config)``."""
    if name not in SCHEMES:
        raise TokenizerError(f"unknown tokenization scheme {name!r}; choose from {', '.join(SCHEMES)}")
    module_name, cls_name = SCHEMES[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**config)
