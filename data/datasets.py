"""Torch datasets for training on token ids: random crops of whole pieces, seeded by index.

Pieces come from token shards (``cadenza tokenize``) or from a corpus tokenized here. Every
piece is framed by its scheme's start and end marks (``Tokenizer.frame()``: ``[BOS] ids [EOS]``,
or the anticipatory reference's flag and SEPARATOR marks); a training example is a window of
``seq_len + 1`` ids of one piece (inputs and next-token targets), padded with PAD (targets
ignored, -100) when the piece is shorter. A scheme whose tokenizer ``packs_sequences`` (the
anticipatory one) trains on its own packed sequences instead (:class:`PackedSequences`). The example at index ``n`` is a pure function of ``(seed, n)``: which piece (chosen
with probability proportional to its length, so every token is equally likely to be seen), which
augmentation, where the window starts. So a run resumed at sample ``n`` sees exactly what an
uninterrupted run would, and ranks of a distributed run that read disjoint indices see different
data without any shared state.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .augment import TRANSPOSITIONS, augment_score, pitch_extent, sample_augmentation, shift_within
from .errors import CadenzaError, TokenizerError

IGNORE_INDEX = -100  # the target id a loss skips (padding); the one definition, symbolic.transformer imports it


def score_notes_seconds(score) -> tuple[int, float]:
    """Number of notes and duration in seconds (end of the last sounding event) of a Score."""
    return int(score.note_num()), float(score.to("second").end())


class PieceSource:
    """Token ids of a list of pieces, optionally augmented, with notes and seconds per piece."""

    tokenizer: Tokenizer | None = None
    piece_ids: list[str]
    lengths: np.ndarray  # ids per piece, without BOS/EOS, unaugmented
    notes: np.ndarray
    seconds: np.ndarray

    def __len__(self) -> int:
        return len(self.piece_ids)

    def ids(self, index: int, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
        """The scheme ids of piece ``index`` (no BOS/EOS), augmented when asked."""
        raise NotImplementedError

    def score(self, index: int, semitones: int = 0, stretch: float = 1.0) -> symusic.Score:
        """Piece ``index`` as a Score (read, or decoded from its ids), augmented when asked."""
        raise NotImplementedError

    def pitch_extent(self, index: int) -> tuple[int, int] | None:
        """(lowest, highest) pitch of piece ``index``, None without pitched notes; computed once."""
        extents = self.__dict__.setdefault("_extents", {})
        if index not in extents:
            extents[index] = pitch_extent(self.score(index))
        return extents[index]


class _LRU:
    """A small least-recently-used cache of augmented id arrays (augmentation re-tokenizes)."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()

    def get(self, key, make):
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        value = make()
        self.data[key] = value
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return value


class ShardPieces(PieceSource):
    """Pieces of one split of a token-shard directory (see ``cadenza.data.shards``).

    Augmentation is the tokenizer's own ``augment_ids`` (exact on ids for the Event scheme;
    otherwise the piece is decoded, augmented as a Score and encoded again), cached.
    """

    def __init__(self, shard_dir: str | os.PathLike, split: str, cache_size: int = 2048):
        from .shards import TokenShards

        self.shards = TokenShards(shard_dir, split)
        self.tokenizer = self.shards.tokenizer
        self.piece_ids = list(self.shards.piece_ids)
        offsets = np.asarray(self.shards.offsets, dtype=np.int64)
        self.lengths = np.diff(offsets)
        self.notes = np.asarray(self.shards.notes, dtype=np.int64)
        self.seconds = np.asarray(self.shards.seconds, dtype=np.float64)
        self._cache = _LRU(cache_size)

    def ids(self, index: int, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
        raw = np.asarray(self.shards.piece(index), dtype=np.int64)
        if semitones == 0 and stretch == 1.0:
            return raw
        return self._cache.get((index, semitones, stretch), lambda: self._augment(raw, semitones, stretch))

    def _augment(self, raw: np.ndarray, semitones: int, stretch: float) -> np.ndarray:
        try:
            ids = np.asarray(self.tokenizer.augment_ids(raw, semitones, stretch), dtype=np.int64)
        except TokenizerError:
            return raw
        return ids if len(ids) else raw

    def score(self, index: int, semitones: int = 0, stretch: float = 1.0):
        return augment_score(self.tokenizer.decode(self.shards.piece(index)), semitones, stretch)


class CorpusPieces(PieceSource):
    """Pieces of one split of a corpus (built-in name or directory), tokenized here.

    Every piece is read and tokenized once up front (to know lengths, notes and seconds); pieces
    that fail to read or encode are skipped and listed in ``failed``. Augmented views are encoded
    from the augmented Score on demand and cached.
    """

    def __init__(self, corpus: str | os.PathLike, tokenizer: Tokenizer, split: str, limit: int | None = None,
                 cache_size: int = 2048, progress: bool = False):
        from tqdm import tqdm

        from .corpora import open_corpus
        from .io import read_score

        self.tokenizer = tokenizer
        self.corpus = str(corpus)
        pieces = open_corpus(corpus).pieces(split=split)
        if limit is not None:
            pieces = pieces[:limit]
        self.paths: list[Path] = []
        self.piece_ids, lengths, notes, seconds, self._plain = [], [], [], [], []
        self.failed: list[tuple[str, str]] = []
        for piece in tqdm(pieces, desc=f"tokenizing {split}", unit="piece", disable=not progress, leave=False):
            try:
                score = read_score(piece.path)
                ids = np.asarray(tokenizer.encode(score), dtype=np.int64)
            except CadenzaError as exc:
                self.failed.append((piece.id, str(exc)))
                continue
            except Exception as exc:  # a broken file is skipped and reported, as tokenize does
                self.failed.append((piece.id, f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:180]}"))
                continue
            if len(ids) == 0:
                self.failed.append((piece.id, "no tokens"))
                continue
            n_notes, n_seconds = score_notes_seconds(score)
            self.__dict__.setdefault("_extents", {})[len(self.paths)] = pitch_extent(score)
            self.paths.append(Path(piece.path))
            self.piece_ids.append(piece.id)
            self._plain.append(ids)
            lengths.append(len(ids))
            notes.append(n_notes)
            seconds.append(n_seconds)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.notes = np.asarray(notes, dtype=np.int64)
        self.seconds = np.asarray(seconds, dtype=np.float64)
        self._cache = _LRU(cache_size)

    def ids(self, index: int, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
        if semitones == 0 and stretch == 1.0:
            return self._plain[index]
        return self._cache.get(
            (index, semitones, stretch),
            lambda: _encode_or_fallback(self.tokenizer, self.score(index, semitones, stretch), self._plain[index]),
        )

    def score(self, index: int, semitones: int = 0, stretch: float = 1.0):
        from .io import read_score

        return augment_score(read_score(self.paths[index]), semitones, stretch)


class ArrayPieces(PieceSource):
    """Pieces given as id arrays in memory (no augmentation: there is no Score to transform)."""

    def __init__(self, tokenizer: Tokenizer, arrays: Sequence, notes: Sequence[int], seconds: Sequence[float],
                 piece_ids: Sequence[str] | None = None):
        if not len(arrays) == len(notes) == len(seconds):
            raise ValueError("arrays, notes and seconds must have one entry per piece")
        self.tokenizer = tokenizer
        self._arrays = [np.asarray(a, dtype=np.int64) for a in arrays]
        self.piece_ids = list(piece_ids) if piece_ids is not None else [str(i) for i in range(len(arrays))]
        self.lengths = np.asarray([len(a) for a in self._arrays], dtype=np.int64)
        self.notes = np.asarray(notes, dtype=np.int64)
        self.seconds = np.asarray(seconds, dtype=np.float64)

    def ids(self, index: int, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
        return self._arrays[index]

    def score(self, index: int, semitones: int = 0, stretch: float = 1.0):
        return augment_score(self.tokenizer.decode(self._arrays[index]), semitones, stretch)


def _encode_or_fallback(tokenizer: Tokenizer, score: symusic.Score, plain: np.ndarray) -> np.ndarray:
    """Encode an augmented Score; a view the scheme cannot encode (say, a pitch pushed out of its
    range) falls back to the unaugmented ids rather than stopping training."""
    try:
        ids = np.asarray(tokenizer.encode(score), dtype=np.int64)
    except TokenizerError:
        return plain
    return ids if len(ids) else plain


def open_pieces(*, split: str, shards: str | os.PathLike | None = None, corpus: str | os.PathLike | None = None,
                tokenizer: Tokenizer | None = None, limit: int | None = None, progress: bool = False) -> PieceSource:
    """Pieces of ``split`` from a shard directory, or from a corpus with a tokenizer."""
    if shards is not None:
        source: PieceSource = ShardPieces(shards, split)
        if limit is not None:
            source = _Subset(source, limit)
    elif corpus is not None and tokenizer is not None:
        source = CorpusPieces(corpus, tokenizer, split, limit=limit, progress=progress)
    else:
        raise CadenzaError("give either token shards or a corpus and a tokenization scheme")
    if len(source) == 0:
        raise CadenzaError(f"no usable pieces in the {split} split of {shards or corpus}")
    return source


class _Subset(PieceSource):
    """The first ``limit`` pieces of another source."""

    def __init__(self, source: PieceSource, limit: int):
        self.source = source
        self.tokenizer = source.tokenizer
        self.piece_ids = source.piece_ids[:limit]
        self.lengths = source.lengths[:limit]
        self.notes = source.notes[:limit]
        self.seconds = source.seconds[:limit]

    def ids(self, index: int, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
        return self.source.ids(index, semitones, stretch)

    def score(self, index: int, semitones: int = 0, stretch: float = 1.0):
        return self.source.score(index, semitones, stretch)

    def pitch_extent(self, index: int) -> tuple[int, int] | None:
        return self.source.pitch_extent(index)


def piece_frame(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids a scheme puts before and after a whole piece (``tokenizer.frame()``); an object
    that only carries ``bos_id`` and ``eos_id`` (a bare vocabulary) is framed ``[BOS] ... [EOS]``."""
    if hasattr(tokenizer, "frame"):
        return tokenizer.frame()
    return [tokenizer.bos_id], [tokenizer.eos_id]


def frame_piece(ids: np.ndarray, tokenizer: Tokenizer) -> np.ndarray:
    """A piece's ids between its scheme's start and end marks (see :func:`piece_frame`), as int64."""
    prefix, suffix = piece_frame(tokenizer)
    return np.concatenate([np.asarray(prefix, dtype=np.int64), np.asarray(ids, dtype=np.int64),
                           np.asarray(suffix, dtype=np.int64)])


@dataclass(frozen=True)
class Crop:
    """Where a training example came from (for logging and tests)."""

    piece: int
    start: int
    semitones: int
    stretch: float


class RandomCrops:
    """Map-style dataset: ``crops[n] -> (inputs, targets)`` LongTensors of ``seq_len``, from ``(seed, n)``.

    With ``augment``, each example is transposed and time-stretched (``sample_augmentation``):
    ``transpose="keys"`` draws one of the twelve keys and moves the piece there in the octave that
    keeps every note inside the piano range (``shift_within``; a piece no octave fits stays where it
    is), ``"paper"`` draws from the paper's -3..+3 semitones.
    """

    def __init__(self, source: PieceSource, seq_len: int, *, seed: int = 0, augment: bool = True,
                 transpose: str = "keys"):
        if seq_len < 1:
            raise ValueError("seq_len must be >= 1")
        if transpose not in TRANSPOSITIONS:
            raise ValueError(f"transpose must be one of {', '.join(TRANSPOSITIONS)}, got {transpose!r}")
        self.source = source
        self.seq_len = seq_len
        self.seed = seed
        self.augment = augment
        self.transpose = transpose
        self.pad_id = source.tokenizer.pad_id
        weights = np.asarray(source.lengths, dtype=np.float64) + 2.0
        self._cumulative = np.cumsum(weights / weights.sum())

    def __len__(self) -> int:
        return 2**62  # indices are unbounded; the sampler decides which ones to read

    def example(self, n: int) -> tuple[np.ndarray, np.ndarray, Crop]:
        """Inputs and targets (numpy int64) of example ``n``, and where they came from."""
        rng = np.random.default_rng([self.seed, n])
        piece = int(min(np.searchsorted(self._cumulative, rng.random(), side="right"), len(self._cumulative) - 1))
        semitones, stretch = (sample_augmentation(rng, TRANSPOSITIONS[self.transpose]) if self.augment
                              else (0, 1.0))
        if semitones and self.transpose == "keys":
            extent = self.source.pitch_extent(piece)
            shift = shift_within(semitones, *extent) if extent is not None else 0
            semitones = 0 if shift is None else shift
        seq = frame_piece(self.source.ids(piece, semitones, stretch), self.source.tokenizer)
        window = self.seq_len + 1
        inputs = np.full(self.seq_len, self.pad_id, dtype=np.int64)
        targets = np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64)
        if len(seq) >= window:
            start = int(rng.integers(0, len(seq) - window + 1))
            inputs[:] = seq[start:start + self.seq_len]
            targets[:] = seq[start + 1:start + window]
        else:
            start = 0
            inputs[:len(seq) - 1] = seq[:-1]
            targets[:len(seq) - 1] = seq[1:]
        return inputs, targets, Crop(piece, start, semitones, stretch)

    def __getitem__(self, n: int):
        import torch

        inputs, targets, _ = self.example(int(n))
        return torch.from_numpy(inputs), torch.from_numpy(targets)


class PackedSequences:
    """Map-style dataset of packed training sequences, for a scheme whose tokenizer ``packs_sequences``.

    The tokenizer's ``pack_sequences`` builds them from whole pieces, as the scheme's reference does
    (the anticipatory scheme: controls drawn per piece and augmentation round, SEPARATOR triples
    between pieces, the stream cut into sequences of one flag and ``k`` whole triples, each chunk's
    times made relative; ten augmentation rounds with ``augment``, one plain round without).
    ``k = seq_len // 3``, so inputs are the largest multiple of 3 that fits in ``seq_len``. Example
    ``n`` is sequence ``perm_e[n mod N]`` of the seeded permutation of epoch ``e = n div N``: every
    sequence once per epoch, resumable.
    """

    def __init__(self, source: PieceSource, seq_len: int, *, seed: int = 0, augment: bool = True):
        tok = source.tokenizer
        if seq_len < 3:
            raise ValueError("packed sequences need seq_len >= 3 (one triple)")
        self.source, self.seed = source, seed
        self.seq_len = 3 * (seq_len // 3)
        sequences, rejected = tok.pack_sequences((source.score(i) for i in range(len(source))),
                                                 self.seq_len + 1, seed=seed, augment=augment)
        self.rejected = [(source.piece_ids[i], reason) for i, reason in rejected]
        if len(self.rejected) == len(source):
            raise CadenzaError(f"no piece is usable for {tok.name} training ({len(self.rejected)} rejected: "
                               f"{self.rejected[0][1] if self.rejected else 'none given'})")
        if len(sequences) == 0:
            raise CadenzaError(f"the pieces hold fewer than {self.seq_len + 1} tokens: lower --seq-len")
        self.sequences = np.asarray(sequences, dtype=np.uint16 if tok.vocab_size <= 65536 else np.int64)

    def __len__(self) -> int:
        return 2**62

    def example(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Inputs and targets (int64) of example ``n`` and the index of the sequence they come from."""
        count = len(self.sequences)
        epoch, position = divmod(int(n), count)
        index = int(np.random.default_rng([self.seed, epoch]).permutation(count)[position])
        seq = self.sequences[index].astype(np.int64)
        return seq[:-1], seq[1:], index

    def __getitem__(self, n: int):
        import torch

        inputs, targets, _ = self.example(int(n))
        return torch.from_numpy(inputs), torch.from_numpy(targets)


def training_dataset(source: PieceSource, seq_len: int, *, seed: int = 0, augment: bool = True,
                     transpose: str = "keys") -> PackedSequences | RandomCrops:
    """The training examples of a scheme: packed sequences where the tokenizer ``packs_sequences``
    (the anticipatory reference's, with its own augmentation), random crops of whole pieces for
    every other (transposed as ``transpose`` says)."""
    if getattr(source.tokenizer, "packs_sequences", False):
        return PackedSequences(source, seq_len, seed=seed, augment=augment)
    return RandomCrops(source, seq_len, seed=seed, augment=augment, transpose=transpose)


class CropBatchSampler:
    """Infinite batches of example indices for one rank, from a global micro-batch position.

    Micro-batch ``m`` of rank ``r`` of ``world`` holds indices ``(m * world + r) * B + b`` for
    ``b < B``: ranks never share an index, and starting at ``m = position`` resumes exactly.
    """

    def __init__(self, batch_size: int, *, rank: int = 0, world_size: int = 1, start: int = 0):
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start

    def indices(self, micro_batch: int) -> list[int]:
        base = (micro_batch * self.world_size + self.rank) * self.batch_size
        return list(range(base, base + self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        micro_batch = self.start
        while True:
            yield self.indices(micro_batch)
            micro_batch += 1


def collate(examples: Sequence) -> tuple:
    """Stack (inputs, targets) pairs into two (B, L) LongTensors."""
    import torch

    inputs, targets = zip(*examples)
    return torch.stack(inputs), torch.stack(targets)
