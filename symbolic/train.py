"""Training the Music Transformer: AdamW, warmup + cosine decay, clipping, accumulation, DDP.

``train(TrainSettings(...))`` is the whole procedure; ``cadenza train`` is a thin wrapper. One
optimizer step consumes ``grad_accum`` micro-batches of ``batch_size`` random crops per rank
(``data.datasets.RandomCrops``, a pure function of the seed and the example index), so the data
position is just the step count and ``resume=True`` continues exactly: the weights, the
optimizer moments, the generator state that drives dropout and the data position all come back
from the output directory, and on the CPU a run interrupted at step k and resumed ends with
bit-identical weights to one that never stopped.

Under ``torchrun --nproc_per_node N`` every rank reads its own crops (disjoint example indices)
and DistributedDataParallel averages gradients, so all ranks hold the same weights; rank 0
writes the log and the checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.data.errors import CadenzaError

from .kit import Distributed, adamw, init_distributed  # noqa: F401  (Distributed: public name here too)
from .schedule import lr_multiplier

# Model sizes. "debug" is the model's own tiny test config; "cpu" is the size of the shipped
# models, trained on a 2-core CPU; "small" trains on a laptop CPU in hours; "base" is the
# Music Transformer paper's size for piano performance.
MODEL_PRESETS: dict[str, dict[str, Any] | None] = {
    "debug": None,
    "cpu": dict(n_layer=4, n_head=4, d_model=192, d_ff=768, max_relative_position=256, dropout=0.1,
                attention_impl="skew"),  # at 256 tokens skew's O(L^2) memory is small and it is faster
    "small": dict(n_layer=4, n_head=4, d_model=256, d_ff=1024, max_relative_position=512, dropout=0.1),
    "base": dict(n_layer=6, n_head=8, d_model=512, d_ff=2048, max_relative_position=1024, dropout=0.1),
}
# Run settings each preset implies unless given explicitly.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "debug": dict(seq_len=64, batch_size=4, steps=20, lr=1e-3, warmup=5, eval_every=0, log_every=1),
    "cpu": dict(seq_len=256, batch_size=8, steps=600, lr=1e-3, warmup=50, eval_every=0, log_every=10),
    "small": dict(seq_len=512, batch_size=16, steps=20000, lr=5e-4, warmup=1000, eval_every=1000, log_every=10),
    "base": dict(seq_len=2048, batch_size=8, steps=100000, lr=3e-4, warmup=4000, eval_every=2000, log_every=50),
}
# Settings a resumed run takes from its checkpoint (changing any would not be a continuation).
RESUMED_FIELDS = ("corpus", "shards", "scheme", "tokenizer_config", "config", "seq_len", "batch_size", "lr",
                  "min_lr_ratio", "warmup", "weight_decay", "betas", "grad_accum", "clip", "attention", "seed",
                  "augment", "limit_pieces", "dropout")


@dataclass
class TrainSettings:
    """Everything that defines a training run; ``None`` fields take the preset's value."""

    out: str
    corpus: str | None = None
    shards: str | None = None
    scheme: str | None = None
    tokenizer_config: dict = field(default_factory=dict)
    config: str = "debug"
    steps: int | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    lr: float | None = None
    min_lr_ratio: float = 0.1
    warmup: int | None = None
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    grad_accum: int = 1
    clip: float = 1.0
    attention: str = "relative"
    dropout: float | None = None
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    eval_every: int | None = None
    checkpoint_every: int | None = None
    log_every: int | None = None
    limit_pieces: int | None = None
    augment: bool = True
    num_workers: int = 0
    progress: bool = True
    stop_after: int | None = None  # stop (with a checkpoint) once this many steps are done

    def resolved(self) -> "TrainSettings":
        if self.config not in RUN_PRESETS:
            raise CadenzaError(f"unknown model config {self.config!r}; choose from {', '.join(RUN_PRESETS)}")
        values = {k: v for k, v in RUN_PRESETS[self.config].items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **values)
        if out.checkpoint_every is None:
            out.checkpoint_every = out.eval_every or out.steps
        if out.attention not in ("relative", "absolute"):
            raise CadenzaError(f"attention must be relative or absolute, got {out.attention!r}")
        for name in ("steps", "batch_size", "seq_len", "grad_accum"):
            if getattr(out, name) < 1:
                raise CadenzaError(f"{name} must be at least 1, got {getattr(out, name)}")
        return out

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data


def model_config_for(settings: TrainSettings, vocab_size: int):
    """The MusicTransformerConfig of a preset, with the run's attention kind and dropout."""
    from .transformer import MusicTransformerConfig

    preset = MODEL_PRESETS[settings.config]
    config = MusicTransformerConfig.debug(vocab_size) if preset is None else MusicTransformerConfig(
        vocab_size=vocab_size, **preset)
    changes: dict[str, Any] = {"attention": settings.attention}
    if settings.dropout is not None:
        changes["dropout"] = settings.dropout
    return dataclasses.replace(config, **changes)


def _device_for(settings: TrainSettings, dist_info: Distributed):
    import torch

    from .device import resolve_device

    device = resolve_device(settings.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    return device


def _tokenizer_for(settings: TrainSettings):
    """The tokenizer of the shards, or a fresh one of the requested scheme."""
    if settings.shards:
        from cadenza.data.shards import TokenShards

        return TokenShards(settings.shards, "train").tokenizer
    if not settings.scheme:
        raise CadenzaError("training on a corpus needs --scheme (event, remi or anticipatory)")
    from cadenza.tokenizers import get_tokenizer

    return get_tokenizer(settings.scheme, **settings.tokenizer_config)


def _sources(settings: TrainSettings, tokenizer, splits=("train", "valid")) -> dict:
    from cadenza.data.datasets import open_pieces

    if not settings.shards and not settings.corpus:
        raise CadenzaError("give a corpus (--corpus NAME_OR_DIR) or token shards (--shards DIR)")
    return {split: open_pieces(split=split, shards=settings.shards, corpus=settings.corpus, tokenizer=tokenizer,
                               limit=settings.limit_pieces, progress=settings.progress) for split in splits}


def _optimizer(model, settings: TrainSettings, device):
    """AdamW with weight decay on matrices only (not biases or norms); fused on CUDA."""
    return adamw(model, lr=settings.lr, weight_decay=settings.weight_decay, betas=settings.betas, device=device)


def _resume_settings(settings: TrainSettings, saved: dict) -> TrainSettings:
    """The saved run's data, model and optimizer settings with this call's steps, device and cadence."""
    values = {k: (tuple(saved[k]) if k == "betas" else saved[k]) for k in RESUMED_FIELDS if k in saved}
    for cadence in ("steps", "eval_every", "checkpoint_every", "log_every"):
        if getattr(settings, cadence) is None and saved.get(cadence) is not None:
            values[cadence] = saved[cadence]
    return dataclasses.replace(settings, **values).resolved()


def train(settings: TrainSettings, *, on_batch: Callable[[int, int, Any, Any], None] | None = None) -> dict:
    """Run (or continue) training; returns a summary dict (step, seconds, tokens/s, the last evaluation
    metrics, rank, world size) and under ``"model"`` the trained module itself.

    ``on_batch(step, micro_step, inputs, targets)`` sees every micro-batch before it is used.
    """
    import torch

    from cadenza.data.datasets import CropBatchSampler, collate, training_dataset

    from .checkpoint import load_checkpoint
    from .device import autocast_context
    from .train_log import JsonlLog
    from .train_state import has_training_state, load_optimizer_state, load_rng_state, read_training_state
    from .transformer import MusicTransformer

    out = Path(settings.out)
    dist_info = init_distributed(settings.device)
    resume_state = None
    if settings.resume:
        if not has_training_state(out):
            raise CadenzaError(f"{out}: nothing to resume (no training checkpoint there)")
        resume_tensors, resume_state = read_training_state(out)
        settings = _resume_settings(settings, resume_state["settings"])
    else:
        settings = settings.resolved()
        # directories are recorded absolute, so a resume or an evaluation from elsewhere finds them
        if settings.corpus and Path(settings.corpus).is_dir():
            settings.corpus = str(Path(settings.corpus).resolve())
        if settings.shards:
            settings.shards = str(Path(settings.shards).resolve())
        if has_training_state(out):
            raise CadenzaError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    device = _device_for(settings, dist_info)

    if resume_state is not None:
        model, tokenizer, _ = load_checkpoint(out, device=str(device))
    else:
        tokenizer = _tokenizer_for(settings)
        torch.manual_seed(settings.seed)
        model = MusicTransformer(model_config_for(settings, tokenizer.vocab_size)).to(device)
    sources = _sources(settings, tokenizer)
    optimizer = _optimizer(model, settings, device)
    step = 0
    if resume_state is not None:
        load_optimizer_state(optimizer, resume_tensors, resume_state["optimizer"])
        load_rng_state(resume_tensors)
        step = int(resume_state["step"])

    train_model = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    crops = training_dataset(sources["train"], settings.seq_len, seed=settings.seed, augment=settings.augment)
    sampler = CropBatchSampler(settings.batch_size, rank=dist_info.rank, world_size=dist_info.world_size,
                               start=step * settings.grad_accum)
    loader = torch.utils.data.DataLoader(crops, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=settings.num_workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(settings.seed))
    batches = iter(loader)

    log = JsonlLog(out / "log.jsonl")
    if dist_info.is_main:
        if resume_state is not None:
            log.truncate_after(step)
        else:
            out.mkdir(parents=True, exist_ok=True)
            log.path.unlink(missing_ok=True)
    info = {"corpus": settings.corpus, "shards": settings.shards, "scheme": tokenizer.name, "split": "train",
            "settings": settings.to_json(), "world_size": dist_info.world_size}
    metrics: dict = dict(resume_state.get("metrics", {})) if resume_state else {}

    def evaluate_now() -> dict:
        from .evaluate import evaluate_pieces

        # no activations are kept for backward, so twice the training batch fits
        result = evaluate_pieces(model, sources["valid"], context=settings.seq_len, batch_size=2 * settings.batch_size,
                                 device=device, rank=dist_info.rank, world_size=dist_info.world_size)
        record = {"kind": "eval", "step": step, "split": "valid", **result.as_dict()}
        if dist_info.is_main:
            log.write(record)
        return {k: record[k] for k in ("nll_per_token", "bits_per_note", "bits_per_second")}

    def checkpoint(rng=None, barrier: bool = True) -> None:
        from .train_log import plot_loss_curve
        from .train_state import write_training_checkpoint

        if dist_info.is_main:
            state = {"step": step, "micro_batches": step * settings.grad_accum, "settings": settings.to_json(),
                     "metrics": metrics, "world_size": dist_info.world_size}
            write_training_checkpoint(out, model, tokenizer, {**info, "metrics": metrics}, optimizer, state, rng=rng)
            plot_loss_curve(log.records(), out / "loss.png", title=f"{tokenizer.name} · {settings.config}")
        if dist_info.enabled and barrier:
            import torch.distributed as dist

            dist.barrier()

    from tqdm import tqdm

    bar = tqdm(total=settings.steps, initial=step, desc="training", unit="step",
               disable=not (settings.progress and dist_info.is_main))
    started = time.perf_counter()
    window_loss, window_tokens, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
    total_tokens = 0
    last_stop = min(settings.steps, settings.stop_after) if settings.stop_after is not None else settings.steps
    model.train()
    step_rng = None
    try:
        while step < last_stop:
            step_rng = {"rng.cpu": torch.get_rng_state()}
            if device.type == "cuda":
                step_rng.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
            loss_sum = torch.zeros((), device=device)
            tokens = torch.zeros((), dtype=torch.int64, device=device)
            for micro in range(settings.grad_accum):
                inputs, targets = next(batches)
                if on_batch is not None:
                    on_batch(step, micro, inputs, targets)
                inputs = inputs.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                sync_later = dist_info.enabled and micro < settings.grad_accum - 1
                with train_model.no_sync() if sync_later else contextlib.nullcontext():
                    with autocast_context(device):
                        _, loss = train_model(inputs, targets)
                    (loss / settings.grad_accum).backward()
                loss_sum += loss.detach().float()
                tokens += (targets != -100).sum()
            lr = settings.lr * lr_multiplier(step, warmup=settings.warmup, total=settings.steps,
                                             min_ratio=settings.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if settings.clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            else:
                grad_norm = torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_rng = None

            mean_loss = loss_sum / settings.grad_accum
            if dist_info.enabled:
                import torch.distributed as dist

                stats = torch.stack([mean_loss.double(), tokens.double()])
                dist.all_reduce(stats)
                mean_loss, tokens = stats[0] / dist_info.world_size, stats[1]
            loss_value, token_count = float(mean_loss), int(tokens)
            window_loss += loss_value
            window_tokens += token_count
            window_steps += 1
            total_tokens += token_count
            if not math.isfinite(loss_value):
                raise CadenzaError(f"training diverged at step {step} (loss {loss_value}); lower --lr or raise --warmup")
            if step % settings.log_every == 0 or step == last_stop:
                elapsed = time.perf_counter() - window_start
                record = {"kind": "train", "step": step, "loss": window_loss / window_steps, "lr": lr,
                          "grad_norm": float(grad_norm), "tokens": window_tokens,
                          "tokens_per_s": window_tokens / max(elapsed, 1e-9), "time": time.time()}
                if dist_info.is_main:
                    log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                window_loss, window_tokens, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
            bar.update(1)
            finished = step == settings.steps
            if finished or (settings.eval_every and step % settings.eval_every == 0):
                metrics = evaluate_now()
            if finished or step == last_stop or (settings.checkpoint_every and step % settings.checkpoint_every == 0):
                checkpoint()
    except KeyboardInterrupt:
        # keep the completed steps: the partial step's gradients are dropped and its start RNG kept
        optimizer.zero_grad(set_to_none=True)
        if step > 0:
            checkpoint(rng=step_rng, barrier=False)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    summary = {"step": step, "seconds": seconds, "tokens": total_tokens,
               "tokens_per_s": total_tokens / max(seconds, 1e-9), "metrics": metrics, "out": str(out),
               "rank": dist_info.rank, "world_size": dist_info.world_size, "model": model}
    return summary


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
    from .evaluate import evaluate_pieces

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
