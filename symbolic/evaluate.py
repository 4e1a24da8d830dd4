"""Likelihood of whole pieces: NLL per token, bits per note and bits per second.

Per-token NLL depends on the tokenization (a scheme that spends three tokens on a note has
easier tokens than one that spends one); bits per note and bits per second do not: they divide
the total information of a split, ``-log2 p(piece)`` summed over its pieces, by the number of
notes or the seconds of music in it. To get that total every token must be scored exactly once
with the context the model would have had: each piece is framed ``[BOS] ids [EOS]`` (BOS is
given, every scheme id and the EOS are predicted), and a piece longer than the model's context is
scored in overlapping windows that each count only tokens no earlier window counted.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from cadenza.data.datasets import IGNORE_INDEX, PieceSource, frame_piece
from cadenza.data.errors import CadenzaError


@dataclass(frozen=True)
class Window:
    """Inputs ``seq[start:stop]`` predict ``seq[start+1:stop+1]``; targets before ``count_from`` are context only."""

    piece: int
    start: int
    stop: int
    count_from: int


def piece_windows(n_targets: int, context: int, stride: int, piece: int = 0) -> list[Window]:
    """Windows covering targets ``0 .. n_targets-1`` of one framed piece, each counted once.

    Target ``t`` predicts ``seq[t+1]`` from ``seq[:t+1]``. The first window scores the first
    ``context`` targets; each later one slides by at most ``stride`` targets and scores only the
    new ones, so every scored token sees at least ``context - stride`` tokens of context.
    """
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in 1..context ({context}), got {stride}")
    windows = []
    stop = min(context, n_targets)
    windows.append(Window(piece, 0, stop, 0))
    while stop < n_targets:
        new_stop = min(stop + stride, n_targets)
        windows.append(Window(piece, max(0, new_stop - context), new_stop, stop))
        stop = new_stop
    return windows


@dataclass
class Likelihood:
    """Totals and the three comparable figures for one split."""

    nats: float
    tokens: int
    notes: int
    seconds: float
    pieces: int

    @property
    def nll_per_token(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def bits(self) -> float:
        return self.nats / math.log(2)

    @property
    def bits_per_note(self) -> float:
        return self.bits / self.notes if self.notes else float("nan")

    @property
    def bits_per_second(self) -> float:
        return self.bits / self.seconds if self.seconds else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "nll_per_token": self.nll_per_token, "bits_per_note": self.bits_per_note,
                "bits_per_second": self.bits_per_second}


def evaluate_pieces(model, source: PieceSource, *, context: int, stride: int | None = None, batch_size: int = 8,
                    device=None, rank: int = 0, world_size: int = 1, progress: bool = False) -> Likelihood:
    """Score every piece of ``source`` with ``model`` (no augmentation); sum over ranks when distributed.

    ``model(ids)`` must return ``(logits, _)``; ``context`` is the longest input the model takes.
    Under DDP each rank scores every ``world_size``-th window and the totals are all-reduced.
    A model with output groups (``model.next_group``, e.g. the anticipatory scheme's) is scored
    by its restricted softmaxes, each next id's probability within the group its position allows,
    which is the distribution sampling draws from; the groups come from the whole framed piece, so
    a window that starts inside a triple is scored as the piece reads.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from .device import autocast_context

    stride = stride or max(1, context // 2)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    tok = source.tokenizer
    framed = [frame_piece(source.ids(i), tok) for i in range(len(source))]
    next_group = getattr(model, "next_group", None)
    grouped = [next_group(torch.from_numpy(np.asarray(seq, np.int64))[None]) if next_group is not None else None
               for seq in framed]
    grouped = None if any(g is None for g in grouped) else [g[0].cpu().numpy() for g in grouped]
    windows = [w for i, seq in enumerate(framed) for w in piece_windows(len(seq) - 1, context, stride, i)]
    mine = windows[rank::world_size]
    nats = torch.zeros((), dtype=torch.float64, device=device)
    counted = torch.zeros((), dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for first in tqdm(range(0, len(mine), batch_size), desc="evaluating", unit="batch",
                              disable=not progress, leave=False):
                batch = mine[first:first + batch_size]
                width = max(w.stop - w.start for w in batch)
                inputs = np.full((len(batch), width), tok.pad_id, dtype=np.int64)
                targets = np.full((len(batch), width), IGNORE_INDEX, dtype=np.int64)
                for row, w in enumerate(batch):
                    seq = framed[w.piece]
                    inputs[row, :w.stop - w.start] = seq[w.start:w.stop]
                    counted_targets = seq[w.count_from + 1:w.stop + 1]
                    targets[row, w.count_from - w.start:w.stop - w.start] = counted_targets
                inputs_t = torch.from_numpy(inputs).to(device)
                targets_t = torch.from_numpy(targets).to(device)
                if grouped is not None:
                    groups = np.full((len(batch), width), -1, dtype=np.int64)
                    for row, w in enumerate(batch):
                        groups[row, :w.stop - w.start] = grouped[w.piece][w.start:w.stop]
                    with autocast_context(device):
                        _, losses = model(inputs_t, targets_t, next_group=torch.from_numpy(groups).to(device),
                                          reduction="sum")
                else:
                    with autocast_context(device):
                        logits, _ = model(inputs_t)
                    losses = F.cross_entropy(logits.float().transpose(1, 2), targets_t,
                                             ignore_index=IGNORE_INDEX, reduction="sum")
                nats += losses.double()
                counted += (targets_t != IGNORE_INDEX).sum()
        if world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(nats)
            dist.all_reduce(counted)
    finally:
        model.train(was_training)
    return Likelihood(nats=float(nats), tokens=int(counted), notes=int(np.sum(source.notes)),
                      seconds=float(np.sum(source.seconds)), pieces=len(source))


def evaluate_checkpoint(checkpoint_dir: str | os.PathLike, *, split: str = "valid", corpus: str | None = None,
                        shards: str | None = None, seq_len: int | None = None, batch_size: int | None = None,
                        limit_pieces: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """NLL per token, bits per note and bits per second of a checkpoint on a split.

    The data defaults to what the checkpoint was trained on (its ``info``); the context to its
    training sequence length.
    """
    from cadenza.data.datasets import open_pieces

    from .checkpoint import load_checkpoint
    from .device import resolve_device

    torch_device = resolve_device(device)
    model, tokenizer, info = load_checkpoint(checkpoint_dir, device=str(torch_device))
    trained = info.get("settings", {})
    if corpus is None and shards is None:
        corpus, shards = info.get("corpus"), info.get("shards")
    if corpus is None and shards is None:
        raise CadenzaError(f"{checkpoint_dir}: the checkpoint does not name its data; pass --corpus or --shards")
    seq_len = seq_len or trained.get("seq_len") or 512
    batch_size = batch_size or trained.get("batch_size") or 8
    if limit_pieces is None:
        limit_pieces = trained.get("limit_pieces")
    source = open_pieces(split=split, shards=shards, corpus=corpus, tokenizer=tokenizer, limit=limit_pieces,
                         progress=progress)
    result = evaluate_pieces(model, source, context=seq_len, batch_size=batch_size, device=torch_device,
                             progress=progress)
    return {"checkpoint": str(checkpoint_dir), "split": split, "step": info.get("step"), "context": seq_len,
            **result.as_dict()}
