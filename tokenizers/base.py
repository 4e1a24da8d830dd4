"""The face every cadenza tokenizer shares.

A tokenizer maps a ``symusic.Score`` (or a path to any music file) to a 1-D numpy array of
the scheme's own ids, and back. Special ids (PAD, BOS, EOS) come *after* the scheme's ids,
so the scheme's numbering matches its published reference.

A tokenizer owns everything about its scheme that the rest of cadenza needs: the marks around a
piece (``frame``), the ids of a prompt (``prompt_ids``), the sampling grammar (``grammar``),
augmentation on ids (``augment_ids``), and how training reads pieces (``packs_sequences``,
``pack_sequences``). Callers ask the tokenizer; nothing outside ``tokenizers/`` tests a scheme's
name. A new scheme is one file with a ``Tokenizer`` subclass plus one line in ``SCHEMES`` (``registry.py``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import symusic

from cadenza.data.atomic import write_text_atomic
from cadenza.data.errors import CadenzaError, TokenizerError

from .registry import SCHEMES

if TYPE_CHECKING:
    from .grammar import Grammar, SamplingConstraints

CONFIG_FILE = "tokenizer.json"
SPECIAL_NAMES = ("PAD", "BOS", "EOS")


class Tokenizer(ABC):
    """Base class: subclasses set ``name``, build ``self.config`` and implement the scheme."""

    name: ClassVar[str]
    #: training packs pieces into fixed sequences (``pack_sequences``) instead of cropping each piece
    packs_sequences: ClassVar[bool] = False
    #: ``encode`` takes ``controls=`` and ``seed=`` (anticipated notes), as infilling and accompaniment need
    takes_controls: ClassVar[bool] = False
    #: tokenizer options a tokenization study uses for this scheme (e.g. how to treat overlong pieces)
    study_config: ClassVar[dict[str, Any]] = {}

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
    def decode(self, ids: np.ndarray) -> symusic.Score:
        """A Score from ids; special ids are ignored."""

    @abstractmethod
    def ranges(self) -> list[tuple[str, int, int]]:
        """The vocabulary as named half-open ranges [(name, start, stop), ...] of scheme ids."""

    @abstractmethod
    def _base_token_to_str(self, token_id: int) -> str:
        """Readable name of one of the scheme's own ids."""

    # -- what sampling and training need (defaults suit a scheme framed by BOS and EOS) -------
    TIMING_KINDS: tuple[str, ...] = ()  # first words of the ranges() names whose ids place notes in time

    def timing_ids(self) -> np.ndarray:
        """(vocab_size,) bool: the ids that say when music happens and how long it lasts (time
        shifts, bar lines and positions, durations), from the ``ranges()`` named in
        ``TIMING_KINDS``. Sampling leaves them out of the nucleus cut (``SamplingConstraints.
        timing_outside_nucleus``): a phrase ending's long wait is a rare id at each instant, and
        top-p would cut it every time."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        for name, start, stop in self.ranges():
            if re.split(r"[\s:]", name, maxsplit=1)[0] in self.TIMING_KINDS:
                mask[start:stop] = True
        return mask

    def frame(self) -> tuple[list[int], list[int]]:
        """The ids before and after a whole piece: ``[BOS]`` and ``[EOS]`` unless the scheme has its own marks."""
        return [self.bos_id], [self.eos_id]

    def prompt_ids(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        """The ids a model sees for a prompt: the start marks, then the piece (int64)."""
        start, _ = self.frame()
        return np.concatenate([np.asarray(start, np.int64), np.asarray(self.encode(score), np.int64)])

    def grammar(self, constraints: SamplingConstraints | None = None) -> Grammar:
        """A fresh sampling grammar (legal next ids, lengths in seconds and bars) for this scheme,
        applying the structural ``constraints`` its ids can express (None: the defaults)."""
        raise CadenzaError(f"no sampling grammar for the {self.name!r} scheme")

    def augment_ids(self, ids: np.ndarray, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
        """The ids of a piece transposed by ``semitones`` and time-stretched by ``stretch``.

        This default decodes, augments the Score (``cadenza.data.augment``) and encodes again, so
        it is as exact as the scheme's round trip and may raise TokenizerError; schemes with an
        exact ids-level version override it.
        """
        from cadenza.data.augment import augment_score

        return np.asarray(self.encode(augment_score(self.decode(ids), semitones, stretch)), dtype=np.int64)

    def pack_sequences(self, scores: Iterable[symusic.Score], context_size: int, *, seed: int = 0,
                       augment: bool = True) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Training sequences of ``context_size`` ids packed from whole pieces (schemes with
        ``packs_sequences``), and the pieces left out as (index, reason)."""
        raise CadenzaError(f"the {self.name} scheme trains on crops of whole pieces, not packed sequences")

    # -- restricted outputs (optional) ------------------------------------------------------
    def output_groups(self) -> list[list[tuple[int, int]]] | None:
        """The id groups a model's output can be restricted to, each a list of half-open id ranges
        [(start, stop), ...]; None (the default) where the next id's kind is not known from its
        position, so models keep the full softmax. With groups, ``next_group`` says which one the
        next id of every position belongs to."""
        return None

    def next_group(self, ids: np.ndarray) -> np.ndarray | None:
        """For ids (..., T) that start at a piece or sequence start, the index into ``output_groups()``
        of the group the *next* id of every position belongs to, -1 where any id may follow (int64,
        the shape of ``ids``); None for schemes without output groups."""
        return None

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

    def onset_pitches(self) -> np.ndarray:
        """(vocab_size,) the pitch of the pitched note each id starts (an Event NOTE_ON, a REMI
        Pitch), -1 for every other id; read from the ids' names, computed once."""
        cached = self.__dict__.get("_onset_pitches")
        if cached is None:
            cached = np.full(self.vocab_size, -1, np.int64)
            for token_id in range(self.base_vocab_size):
                kind, _, value = self._base_token_to_str(token_id).rpartition("_")
                if kind in ("NOTE_ON", "Pitch") and value.isdigit():
                    cached[token_id] = int(value)
            self.__dict__["_onset_pitches"] = cached
        return cached

    def tokens_to_str(self, ids: np.ndarray | Iterable[int]) -> list[str]:
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

    def check_ids(self, ids: np.ndarray | Iterable[int]) -> np.ndarray:
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

    def strip_special(self, ids: np.ndarray | Iterable[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        return ids[ids < self.base_vocab_size]

    @staticmethod
    def as_score(score_or_path: symusic.Score | str | os.PathLike) -> symusic.Score:
        if isinstance(score_or_path, symusic.Score):
            from cadenza.data.io import check_tempos

            check_tempos(score_or_path)  # a tempo of 0 microseconds: refused as read_score refuses it
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


def scheme_class(name: str) -> type[Tokenizer]:
    """The Tokenizer class registered as ``name`` in SCHEMES (imported on first use)."""
    if name not in SCHEMES:
        raise TokenizerError(f"unknown tokenization scheme {name!r}; choose from {', '.join(SCHEMES)}")
    entry = SCHEMES[name]
    if isinstance(entry, type):
        return entry
    module_name, cls_name = entry.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def get_tokenizer(name: str, **config: Any) -> Tokenizer:
    """``get_tokenizer("event" | "remi" | "anticipatory", **config)``: any scheme in SCHEMES."""
    return scheme_class(name)(**config)
