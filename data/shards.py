"""Token shards: a corpus tokenized once into flat memory-mapped id files, one per split.

Layout of a shard directory::

    meta.json              {"scheme", "tokenizer", "dtype", "corpus", "splits": {split: {pieces, tokens,
                            notes, seconds}}, "failed": [[piece_id, reason], ...]}
    {split}.bin            every piece's ids of the split, concatenated (uint16 when the vocabulary
                            fits, else uint32)
    {split}.index.npz      offsets (int64, n + 1), notes (int64, n), seconds (float64, n)
    {split}.pieces.json    piece ids in order

Pieces are tokenized in worker processes; a piece that fails is skipped, counted and listed in
``failed``. Every file is written under a temporary name and renamed, meta.json last, so an
interrupted job never leaves a directory that looks complete; a job holds a lock on the
directory, and a rerun removes the temporary files a killed one left, then writes every file
again (byte for byte what an uninterrupted run writes).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, locked, remove_temporaries, write_text_atomic
from .corpora import SPLITS, Corpus, Piece, open_corpus
from .errors import CadenzaError, CorpusError
from .workers import worker_pool

META_FILE = "meta.json"
SHARD_FILES = (META_FILE, *(f"{split}.{part}" for split in SPLITS for part in ("bin", "index.npz", "pieces.json")))


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id (specials included) fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


# -- workers ----------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_dict: dict, encode_kwargs: dict, dtype: str) -> None:
    from cadenza.tokenizers import get_tokenizer

    _WORKER["tokenizer"] = get_tokenizer(tokenizer_dict["scheme"], **tokenizer_dict.get("config", {}))
    _WORKER["encode_kwargs"] = encode_kwargs
    _WORKER["dtype"] = np.dtype(dtype)


def _tokenize_piece(piece: Piece) -> tuple[str, np.ndarray | None, int, float, str]:
    """(piece id, ids or None, notes, seconds, failure reason)."""
    from .io import read_score

    try:
        score = read_score(piece.path)
        ids = _WORKER["tokenizer"].encode(score, **_WORKER["encode_kwargs"])
        seconds = float(score.to("second").end())
        return piece.id, np.asarray(ids).astype(_WORKER["dtype"]), int(score.note_num()), seconds, ""
    except CadenzaError as exc:
        return piece.id, None, 0, 0.0, str(exc).splitlines()[0][:200]
    except Exception as exc:  # a broken file must not stop a corpus job; it is reported instead
        text = str(exc).strip().splitlines()
        return piece.id, None, 0, 0.0, f"{type(exc).__name__}: {text[0][:180] if text else ''}"


# -- writing ----------------------------------------------------------------------------------
def write_shards(corpus_or_dir: str | os.PathLike | Corpus, tokenizer, out_dir: str | os.PathLike,
                 workers: int | None = None, limit: int | None = None, progress: bool = True,
                 encode_kwargs: dict | None = None) -> dict:
    """Tokenize every piece of a corpus (a built-in name, a directory of MIDI files or a Corpus)
    into ``out_dir``; returns the meta dict also written to meta.json.

    ``tokenizer`` is a Tokenizer or a scheme name; ``encode_kwargs`` go to every ``encode`` call
    (the anticipatory scheme's ``controls`` and ``seed``); ``workers`` processes (default: all
    cores; 1 tokenizes in this process); ``limit`` takes the first N source files.
    """
    from cadenza.tokenizers import Tokenizer, get_tokenizer

    if not isinstance(tokenizer, Tokenizer):
        tokenizer = get_tokenizer(str(tokenizer))
    corpus = corpus_or_dir if isinstance(corpus_or_dir, Corpus) else open_corpus(corpus_or_dir)
    pieces = corpus.pieces(limit=limit)
    if not pieces:
        raise CorpusError(f"{corpus.name}: no pieces to tokenize")
    out = Path(out_dir)
    with locked(out, "writing token shards to"):
        return _write_shards(corpus_or_dir, corpus, pieces, tokenizer, out, workers, progress, encode_kwargs)


def _write_shards(corpus_or_dir, corpus: Corpus, pieces: list[Piece], tokenizer, out: Path, workers: int | None,
                  progress: bool, encode_kwargs: dict | None) -> dict:
    from tqdm import tqdm

    with contextlib.suppress(FileNotFoundError):
        (out / META_FILE).unlink()  # the directory is incomplete until the new meta.json lands
    remove_temporaries(out, SHARD_FILES)  # what a killed run left; nothing else writes here while we hold the lock
    dtype = shard_dtype(tokenizer.vocab_size)
    encode_kwargs = dict(encode_kwargs or {})
    init_args = (tokenizer.to_dict(), encode_kwargs, dtype.str)
    workers = max(1, min(workers or os.cpu_count() or 1, len(pieces)))

    offsets = {s: [0] for s in SPLITS}
    notes = {s: [] for s in SPLITS}
    seconds = {s: [] for s in SPLITS}
    piece_ids = {s: [] for s in SPLITS}
    failed: list[list[str]] = []
    split_of = {p.id: p.split for p in pieces}
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(pieces), desc=f"tokenizing {corpus.name} ({tokenizer.name})",
                                       unit="piece", disable=not progress))
        bins = {}
        for split in SPLITS:
            tmp = stack.enter_context(atomic_path(out / f"{split}.bin"))
            bins[split] = stack.enter_context(open(tmp, "wb"))
        if workers == 1:
            _init_worker(*init_args)
            results = map(_tokenize_piece, pieces)
        else:
            pool = stack.enter_context(worker_pool(workers, _init_worker, init_args))
            results = pool.map(_tokenize_piece, pieces, chunksize=max(1, min(32, len(pieces) // (4 * workers))))
        for piece_id, ids, n_notes, n_seconds, reason in results:
            bar.update(1)
            if ids is None:
                failed.append([piece_id, reason])
                continue
            split = split_of[piece_id]
            bins[split].write(ids.tobytes())
            offsets[split].append(offsets[split][-1] + int(ids.size))
            notes[split].append(n_notes)
            seconds[split].append(n_seconds)
            piece_ids[split].append(piece_id)
        for handle in bins.values():
            handle.close()

    for split in SPLITS:
        with atomic_path(out / f"{split}.index.npz") as tmp:
            np.savez(tmp, offsets=np.asarray(offsets[split], dtype=np.int64),
                     notes=np.asarray(notes[split], dtype=np.int64),
                     seconds=np.asarray(seconds[split], dtype=np.float64))
        write_text_atomic(out / f"{split}.pieces.json", json.dumps(piece_ids[split]))
    meta = {
        "scheme": tokenizer.name,
        "tokenizer": tokenizer.to_dict(),
        "dtype": dtype.name,
        "corpus": str(corpus_or_dir.name if isinstance(corpus_or_dir, Corpus) else corpus_or_dir),
        "encode": encode_kwargs,
        "splits": {split: {"pieces": len(piece_ids[split]), "tokens": offsets[split][-1],
                           "notes": int(sum(notes[split])), "seconds": float(sum(seconds[split]))}
                   for split in SPLITS},
        "failed": failed,
    }
    write_text_atomic(out / META_FILE, json.dumps(meta, indent=2))
    return meta


# -- reading ----------------------------------------------------------------------------------
class TokenShards:
    """One split of a shard directory: ``ids`` (a read-only memmap), per-piece ``offsets``,
    ``notes``, ``seconds`` and ``piece_ids``; ``piece(i)`` gives one piece's ids."""

    def __init__(self, out_dir: str | os.PathLike, split: str = "train"):
        self.dir = Path(out_dir)
        meta_path = self.dir / META_FILE
        if not meta_path.exists():
            raise CorpusError(f"{self.dir}: not a token shard directory (no {META_FILE}; run `cadenza tokenize`)")
        if split not in SPLITS:
            raise CorpusError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        self.meta = json.loads(meta_path.read_text())
        self.split = split
        self.dtype = np.dtype(self.meta["dtype"])
        index = np.load(self.dir / f"{split}.index.npz")
        self.offsets = index["offsets"]
        self.notes = index["notes"]
        self.seconds = index["seconds"]
        self.piece_ids: list[str] = json.loads((self.dir / f"{split}.pieces.json").read_text())
        bin_path = self.dir / f"{split}.bin"
        if int(self.offsets[-1]) == 0:
            self.ids = np.zeros(0, dtype=self.dtype)
        else:
            self.ids = np.memmap(bin_path, dtype=self.dtype, mode="r")
            if self.ids.size != int(self.offsets[-1]):
                raise CorpusError(f"{bin_path}: holds {self.ids.size} ids, the index expects {int(self.offsets[-1])}")
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The tokenizer the shards were written with (built on first use)."""
        if self._tokenizer is None:
            from cadenza.tokenizers import get_tokenizer

            spec = self.meta["tokenizer"]
            self._tokenizer = get_tokenizer(spec["scheme"], **spec.get("config", {}))
        return self._tokenizer

    def __len__(self) -> int:
        return len(self.piece_ids)

    def piece(self, i: int) -> np.ndarray:
        """The ids of piece ``i`` (int64)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"piece {i} out of range for {len(self)} pieces")
        i %= len(self)
        return np.asarray(self.ids[self.offsets[i]:self.offsets[i + 1]], dtype=np.int64)

    def __repr__(self) -> str:
        return (f"TokenShards({str(self.dir)!r}, {self.split!r}: {len(self)} pieces, {int(self.offsets[-1])} tokens, "
                f"{self.meta['scheme']})")
