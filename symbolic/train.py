"""Training the Music Transformer: AdamW, warmup + cosine decay, clipping, accumulation, DDP.

``train(TrainSettings(...))`` runs four named steps around a small run state (:class:`Run`):
:func:`set_up` (settings, data, model, optimizer, and on ``resume`` everything saved),
:func:`train_step` (one optimizer step), :func:`evaluate_run` (the valid split) and
:func:`write_run_checkpoint`; ``cadenza train`` is a thin wrapper. The schedule, DDP set-up,
optimizer groups, run clock, stop signals and checkpoint format are the training kit's
(:mod:`cadenza.symbolic.kit`), shared with the transcribers.

One optimizer step consumes ``grad_accum`` micro-batches of ``batch_size`` random crops per rank
(``data.datasets.RandomCrops``, a pure function of the seed and the example index), so the data
position is just the step count and ``resume=True`` continues exactly: the weights, the
optimizer moments, the generator state that drives dropout, the data position and the run's
elapsed time (its time box, ``max_minutes``) all come back from the output directory, and on the
CPU a run interrupted at step k and resumed ends with bit-identical weights to one that never
stopped. A resume refuses a scheme, tokenizer config, corpus, size or crop settings other than
the saved run's, and data whose pieces changed since.

Work is not lost: a checkpoint is written every ``checkpoint_every`` steps (default: at each
evaluation, else every 500 steps), at least every ``checkpoint_minutes`` of wall time (default
5), at the end, and when SIGINT or SIGTERM arrives (Ctrl-C, ``timeout``, a container stop, Slurm):
the step under way finishes, the checkpoint is written and :class:`~.kit.TrainingInterrupted`
is raised. Temporary checkpoint directories a killed write left are removed by the next run.

Under ``torchrun --nproc_per_node N`` every rank reads its own crops (disjoint example indices)
and DistributedDataParallel averages gradients, so all ranks hold the same weights; rank 0
writes the log and the checkpoints, and the ranks agree each step on stopping and on time-due
checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.data.errors import CadenzaError

from .kit import (CheckpointCadence, Distributed, RunClock, StopSignals, TrainingInterrupted, adamw, agree_all,
                  check_number, fingerprint, has_training_state, init_distributed, load_optimizer_state,
                  load_rng_state, read_training_state, remove_stale_temporaries, wrap_ddp)

__all__ = ["TrainSettings", "Run", "set_up", "train_step", "evaluate_run", "write_run_checkpoint", "train",
           "evaluate_checkpoint", "model_config_for", "MODEL_PRESETS", "RUN_PRESETS", "SIZES", "Distributed",
           "init_distributed", "TrainingInterrupted"]

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
SIZES = tuple(RUN_PRESETS)
DEFAULT_SIZE = "debug"
# Settings a resumed run takes from its checkpoint (changing any would not be a continuation).
RESUMED_FIELDS = ("corpus", "shards", "scheme", "tokenizer_config", "size", "seq_len", "batch_size", "lr",
                  "min_lr_ratio", "warmup", "weight_decay", "betas", "grad_accum", "clip", "attention", "seed",
                  "augment", "transpose", "limit_pieces", "dropout", "init")
# Of those, the ones a resume refuses to see changed when given (their defaults are None).
REFUSED_CHANGES = ("corpus", "shards", "scheme", "tokenizer_config", "size", "seq_len", "batch_size", "lr",
                   "warmup", "dropout", "limit_pieces")
# Settings a resume takes from the call when given, else from the saved run.
CADENCE_FIELDS = ("steps", "eval_every", "checkpoint_every", "checkpoint_minutes", "log_every", "max_minutes")
DEFAULT_CHECKPOINT_EVERY = 500
DEFAULT_CHECKPOINT_MINUTES = 5.0
MAX_SEQ_LEN = 1 << 17
MAX_BATCH = 1 << 16


@dataclass
class TrainSettings:
    """Everything that defines a training run; ``None`` fields take the size preset's value.

    ``size`` is the model size preset (``SIZES``, default ``debug``); ``config`` is its old
    name, still accepted.
    """

    out: str
    corpus: str | None = None
    shards: str | None = None
    scheme: str | None = None
    tokenizer_config: dict = field(default_factory=dict)
    size: str | None = None
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
    precision: str = "auto"  # bf16 autocast on CUDA and on CPUs with AMX, else float32 (device.training_precision)
    seed: int = 0
    resume: bool = False
    init: str | None = None  # start from these weights (a shipped model's name or a checkpoint directory)
    eval_every: int | None = None
    checkpoint_every: int | None = None
    checkpoint_minutes: float | None = None  # a checkpoint at least this often (wall time); 0: only by steps
    log_every: int | None = None
    max_minutes: float | None = None  # time box: stop (evaluated and checkpointed) after this much wall time
    limit_pieces: int | None = None
    augment: bool = True
    transpose: str = "keys"  # RandomCrops' transpositions: every key within range, or the paper's +-3
    num_workers: int = 0
    progress: bool = True
    handle_signals: bool = True  # SIGINT/SIGTERM checkpoint and raise TrainingInterrupted
    stop_after: int | None = None  # stop (with a checkpoint) once this many steps are done
    config: dataclasses.InitVar[str | None] = None  # the old name of ``size``

    def __post_init__(self, config: str | None) -> None:
        if config is not None:
            if self.size is not None and self.size != config:
                raise CadenzaError(f"size {self.size!r} and config {config!r} (its old name) disagree")
            self.size = config

    def resolved(self) -> "TrainSettings":
        """The settings with the size preset's values filled in and every option checked."""
        size = self.size or DEFAULT_SIZE
        if size not in RUN_PRESETS:
            raise CadenzaError(f"unknown model size {size!r}; choose from {', '.join(SIZES)}")
        values = {k: v for k, v in RUN_PRESETS[size].items() if getattr(self, k) is None}
        out = dataclasses.replace(self, size=size, **values)
        if out.checkpoint_every is None:
            out.checkpoint_every = out.eval_every or DEFAULT_CHECKPOINT_EVERY
        if out.checkpoint_minutes is None:
            out.checkpoint_minutes = DEFAULT_CHECKPOINT_MINUTES
        out.validate()
        return out

    def validate(self) -> None:
        """One-line CadenzaError for any option that is not a finite number in its range."""
        if self.attention not in ("relative", "absolute"):
            raise CadenzaError(f"attention must be relative or absolute, got {self.attention!r}")
        if self.transpose not in ("keys", "paper"):
            raise CadenzaError(f"--transpose must be keys or paper, got {self.transpose!r}")

        def whole(name, minimum, maximum=None, optional=False):
            value = getattr(self, name)
            if not (optional and value is None):
                check_number(_option(name), value, minimum=minimum, maximum=maximum, integer=True)

        whole("steps", 1, 10**12)
        whole("batch_size", 1, MAX_BATCH)
        whole("seq_len", 1, MAX_SEQ_LEN)
        whole("grad_accum", 1, MAX_BATCH)
        whole("log_every", 1)
        for name in ("warmup", "eval_every", "checkpoint_every", "num_workers", "seed"):
            whole(name, 0)
        whole("limit_pieces", 1, optional=True)
        whole("stop_after", 0, optional=True)
        check_number("--lr", self.lr, above=0, maximum=1)
        check_number("min_lr_ratio", self.min_lr_ratio, minimum=0, maximum=1)
        check_number("--weight-decay", self.weight_decay, minimum=0)
        check_number("--clip", self.clip, minimum=0)
        check_number("--checkpoint-minutes", self.checkpoint_minutes, minimum=0)
        if len(self.betas) != 2:
            raise CadenzaError(f"betas must be two numbers, got {self.betas!r}")
        for beta in self.betas:
            check_number("betas", beta, minimum=0, below=1)
        if self.dropout is not None:
            check_number("--dropout", self.dropout, minimum=0, below=1)
        if self.max_minutes is not None:
            check_number("--max-minutes", self.max_minutes, above=0)
        from .device import PRECISIONS

        if self.precision not in PRECISIONS:
            raise CadenzaError(f"unknown --precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data


def _option(name: str) -> str:
    """How the command line spells a setting."""
    return {"num_workers": "--workers", "tokenizer_config": "the tokenizer config"}.get(name, "--" + name.replace("_", "-"))


def model_config_for(settings: TrainSettings, vocab_size: int):
    """The MusicTransformerConfig of a size preset, with the run's attention kind and dropout."""
    from .transformer import MusicTransformerConfig

    preset = MODEL_PRESETS[settings.size or DEFAULT_SIZE]
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


def _data_identity(sources: dict) -> dict:
    """Piece counts per split and a fingerprint of the pieces' ids and token counts."""
    return {"pieces": {split: len(source) for split, source in sources.items()},
            "fingerprint": fingerprint({split: [[str(i) for i in source.piece_ids], [int(n) for n in source.lengths]]
                                        for split, source in sources.items()})}


def _check_same_data(out: Path, saved: dict | None, now: dict) -> None:
    if not saved or saved.get("fingerprint") == now["fingerprint"]:
        return
    for split, count in now["pieces"].items():
        then = saved.get("pieces", {}).get(split)
        if then is not None and then != count:
            raise CadenzaError(f"{out}: cannot resume: the corpus changed ({split} split: {count} pieces now, "
                               f"{then} when the run began); train into another --out")
    raise CadenzaError(f"{out}: cannot resume: the corpus changed (the same number of pieces, other contents or "
                       f"tokens); train into another --out")


def _run_of(init: str) -> dict:
    """The size preset, crop length and batch size the weights ``init`` names were trained with
    (those its config records)."""
    from .checkpoint import read_checkpoint_config
    from .registry import resolve_model

    settings = (read_checkpoint_config(resolve_model(init)).get("info") or {}).get("settings") or {}
    out = {"size": settings["size"]} if settings.get("size") in RUN_PRESETS else {}
    for name in ("seq_len", "batch_size"):
        if isinstance(settings.get(name), int) and settings[name] > 0:
            out[name] = settings[name]
    return out


def _initial_weights(settings: TrainSettings, device):
    """``(model, tokenizer, record)`` of the checkpoint or shipped model ``settings.init`` names, in
    training mode: the model and tokenizer are its own (a new run's optimizer, schedule and data
    stream start afresh), and the record says where the weights came from and how many steps they
    had seen. A one-line error when the run asks for another scheme or tokenization."""
    from .checkpoint import load_checkpoint
    from .registry import resolve_model

    source = resolve_model(settings.init)
    model, tokenizer, info = load_checkpoint(source, device=str(device))
    if tokenizer is None:
        raise CadenzaError(f"--init {settings.init}: the checkpoint records no tokenizer")
    wanted = _tokenizer_for(settings) if (settings.shards or settings.scheme) else tokenizer
    if wanted.to_dict() != tokenizer.to_dict():
        raise CadenzaError(f"--init {settings.init}: its {tokenizer.name} tokenizer is not the one this run trains "
                           f"({wanted.name}); give its scheme or shards of the same tokenization")
    if settings.attention != model.config.attention:
        raise CadenzaError(f"--init {settings.init}: its attention is {model.config.attention}, not {settings.attention}")
    if settings.dropout is not None and settings.dropout != model.config.dropout:
        raise CadenzaError(f"--init {settings.init}: its dropout is {model.config.dropout}; a fine-tuning run keeps it")
    model.train()
    steps_before = int(info.get("total_steps", info.get("step") or 0))
    return model, tokenizer, {"from": str(settings.init), "steps": steps_before}


def _optimizer(model, settings: TrainSettings, device):
    """AdamW with weight decay on matrices only (not biases or norms); fused on CUDA."""
    return adamw(model, lr=settings.lr, weight_decay=settings.weight_decay, betas=settings.betas, device=device)


def _absolute_data_paths(settings: TrainSettings) -> TrainSettings:
    """Directories recorded absolute, so a resume or an evaluation from elsewhere finds them."""
    changes = {}
    if settings.corpus and Path(settings.corpus).is_dir():
        changes["corpus"] = str(Path(settings.corpus).resolve())
    if settings.shards:
        changes["shards"] = str(Path(settings.shards).resolve())
    return dataclasses.replace(settings, **changes) if changes else settings


def _resume_settings(settings: TrainSettings, saved: dict, out: Path) -> TrainSettings:
    """The saved run's data, model and optimizer settings with this call's steps, device and cadence;
    a one-line error when the call asks for other data, tokenization or model than the saved run's."""
    if not isinstance(saved, dict):
        raise CadenzaError(f"{out}: the training state holds no run settings")
    saved = dict(saved)
    if "size" not in saved and "config" in saved:  # runs recorded before the preset was called size
        saved["size"] = saved.pop("config")
    saved.setdefault("transpose", "paper")  # runs recorded before the twelve-key transpositions
    given = _absolute_data_paths(settings)
    for name in REFUSED_CHANGES:
        value = getattr(given, name)
        if value is None or value == {} or name not in saved or value == saved[name]:
            continue
        label = _option(name)
        raise CadenzaError(f"{out}: cannot resume with {label} {value!r}: the run was started with {saved[name]!r} "
                           f"(resume without {label}, or train into another --out)")
    values = {k: (tuple(saved[k]) if k == "betas" else saved[k]) for k in RESUMED_FIELDS if k in saved}
    for cadence in CADENCE_FIELDS:
        if getattr(settings, cadence) is None and saved.get(cadence) is not None:
            values[cadence] = saved[cadence]
    try:
        return dataclasses.replace(settings, **values).resolved()
    except (CadenzaError, TypeError) as exc:  # what the saved state holds, not what was asked for
        raise CadenzaError(f"{out}: the saved run settings do not check: {exc}") from None


@dataclass
class StepResult:
    """What one optimizer step reports (the loss and tokens summed over ranks)."""

    loss: float
    tokens: int
    grad_norm: float
    lr: float


@dataclass
class Run:
    """A training run between its steps: what :func:`set_up` builds and the other steps use."""

    settings: TrainSettings
    out: Path
    dist: Distributed
    device: Any
    model: Any
    train_model: Any  # the model, or DistributedDataParallel around it
    tokenizer: Any
    sources: dict
    optimizer: Any
    batches: Iterator
    log: Any
    clock: RunClock
    cadence: CheckpointCadence
    info: dict
    data: dict  # piece counts and fingerprint, compared on resume
    step: int = 0
    metrics: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # (split, piece id, reason) of pieces that could not be read
    written_step: int = -1
    step_rng: dict | None = None  # generator states at the start of the step under way
    precision: str = "fp32"  # what the steps compute in: "fp32" or "bf16" (autocast)


def set_up(settings: TrainSettings) -> Run:
    """Resolve and check the settings, read the data, build (or, on resume, load) the model, optimizer
    and data stream, and prepare the output directory."""
    import torch

    from cadenza.data.datasets import CropBatchSampler, collate, training_dataset

    from .checkpoint import load_checkpoint
    from .train_log import JsonlLog
    from .transformer import MusicTransformer

    out = Path(settings.out)
    dist_info = init_distributed(settings.device)
    saved = None
    if settings.resume:
        if not has_training_state(out):
            raise CadenzaError(f"{out}: nothing to resume (no training checkpoint there)")
        saved_tensors, saved = read_training_state(out)
        settings = _resume_settings(settings, saved["settings"], out)
    else:
        if settings.init:  # size, crop length and batch the weights were trained at, unless given
            settings = dataclasses.replace(settings, **{k: v for k, v in _run_of(settings.init).items()
                                                        if getattr(settings, k) is None})
        settings = _absolute_data_paths(settings.resolved())
        if has_training_state(out):
            raise CadenzaError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if dist_info.is_main:
        remove_stale_temporaries(out)
    device = _device_for(settings, dist_info)
    from .device import training_precision

    precision = training_precision(device, settings.precision)

    init_info = None
    if saved is not None:
        model, tokenizer, saved_info = load_checkpoint(out, device=str(device))
        init_info = saved_info.get("init")  # a resumed fine-tuning run still says where it started
    elif settings.init:
        model, tokenizer, init_info = _initial_weights(settings, device)
    else:
        tokenizer = _tokenizer_for(settings)
        torch.manual_seed(settings.seed)
        model = MusicTransformer(model_config_for(settings, tokenizer.vocab_size)).to(device)
    model.use_output_groups(tokenizer)       # a scheme with output groups trains on restricted softmaxes
    sources = _sources(settings, tokenizer)
    data = _data_identity(sources)
    if saved is not None:
        _check_same_data(out, saved.get("data"), data)
    optimizer = _optimizer(model, settings, device)
    step = 0
    if saved is not None:
        try:
            load_optimizer_state(optimizer, saved_tensors, saved["optimizer"])
            load_rng_state(saved_tensors)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CadenzaError(f"{out}: the training state does not fit the model in it ({exc})") from None
        step = int(saved["step"])

    crops = training_dataset(sources["train"], settings.seq_len, seed=settings.seed, augment=settings.augment,
                             transpose=settings.transpose)
    sampler = CropBatchSampler(settings.batch_size, rank=dist_info.rank, world_size=dist_info.world_size,
                               start=step * settings.grad_accum)
    loader = torch.utils.data.DataLoader(crops, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=settings.num_workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(settings.seed))
    log = JsonlLog(out / "log.jsonl")
    if dist_info.is_main:
        if saved is not None:
            log.truncate_after(step)
        else:
            out.mkdir(parents=True, exist_ok=True)
            log.path.unlink(missing_ok=True)
    budget = settings.max_minutes * 60 if settings.max_minutes else None
    return Run(
        settings=settings, out=out, dist=dist_info, device=device, model=model,
        train_model=wrap_ddp(model, dist_info, device), tokenizer=tokenizer, sources=sources, optimizer=optimizer,
        batches=iter(loader), log=log,
        clock=RunClock(budget, elapsed=float(saved.get("elapsed_seconds", 0.0)) if saved else 0.0),
        cadence=CheckpointCadence(settings.checkpoint_every, settings.checkpoint_minutes),
        info={"corpus": settings.corpus, "shards": settings.shards, "scheme": tokenizer.name, "split": "train",
              "settings": settings.to_json(), "world_size": dist_info.world_size, "precision": precision,
              **({"init": init_info} if init_info else {})},
        data=data, step=step, metrics=dict(saved.get("metrics", {})) if saved else {},
        skipped=[(split, piece, reason) for split, source in sources.items()
                 for piece, reason in getattr(source, "failed", [])],
        precision=precision,
    )


def train_step(run: Run, on_batch: Callable[[int, int, Any, Any], None] | None = None) -> StepResult:
    """One optimizer step: ``grad_accum`` micro-batches, the scheduled learning rate, clipping, AdamW."""
    import torch

    from cadenza.data.datasets import IGNORE_INDEX

    from .device import autocast_context

    settings, device, model = run.settings, run.device, run.model
    run.step_rng = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        run.step_rng.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    loss_sum = torch.zeros((), device=device)
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    for micro in range(settings.grad_accum):
        inputs, targets = next(run.batches)
        if on_batch is not None:
            on_batch(run.step, micro, inputs, targets)
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        sync_later = run.dist.enabled and micro < settings.grad_accum - 1
        with run.train_model.no_sync() if sync_later else contextlib.nullcontext():
            with autocast_context(device, run.precision):
                _, loss = run.train_model(inputs, targets, next_group=model.next_group(inputs))
            (loss / settings.grad_accum).backward()
        loss_sum += loss.detach().float()
        tokens += (targets != IGNORE_INDEX).sum()
    elapsed = run.clock.elapsed_agreed(run.dist, device) if run.clock.budget_seconds else None
    lr = settings.lr * run.clock.multiplier(run.step, warmup=settings.warmup, total=settings.steps,
                                            min_ratio=settings.min_lr_ratio, elapsed=elapsed)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if settings.clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
    else:
        grad_norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.step_rng = None

    mean_loss = loss_sum / settings.grad_accum
    if run.dist.enabled:
        import torch.distributed as dist

        stats = torch.stack([mean_loss.double(), tokens.double()])
        dist.all_reduce(stats)
        mean_loss, tokens = stats[0] / run.dist.world_size, stats[1]
    result = StepResult(float(mean_loss), int(tokens), float(grad_norm), lr)
    if not math.isfinite(result.loss):
        raise CadenzaError(f"training diverged at step {run.step} (loss {result.loss}); lower --lr or raise --warmup")
    return result


def evaluate_run(run: Run) -> dict:
    """NLL per token, bits per note and bits per second on the valid split (logged by rank 0)."""
    from .evaluate import evaluate_pieces

    # no activations are kept for backward, so twice the training batch fits
    result = evaluate_pieces(run.model, run.sources["valid"], context=run.settings.seq_len,
                             batch_size=2 * run.settings.batch_size, device=run.device, rank=run.dist.rank,
                             world_size=run.dist.world_size)
    record = {"kind": "eval", "step": run.step, "split": "valid", **result.as_dict()}
    if run.dist.is_main:
        run.log.write(record)
    return {k: record[k] for k in ("nll_per_token", "bits_per_note", "bits_per_second")}


def write_run_checkpoint(run: Run, rng: dict | None = None, barrier: bool = True) -> None:
    """Rank 0 writes model, config and training state (and the loss curve); the ranks then meet.

    ``rng`` is the generator state to record instead of the current one (a step's start, when
    the step was cut short)."""
    from .train_log import plot_loss_curve
    from .train_state import write_training_checkpoint

    if run.dist.is_main:
        settings = run.settings
        state = {"step": run.step, "micro_batches": run.step * settings.grad_accum, "settings": settings.to_json(),
                 "metrics": run.metrics, "world_size": run.dist.world_size, "elapsed_seconds": run.clock.elapsed(),
                 "data": run.data}
        write_training_checkpoint(run.out, run.model, run.tokenizer, {**run.info, "metrics": run.metrics},
                                  run.optimizer, state, rng=rng)
        plot_loss_curve(run.log.records(), run.out / "loss.png", title=f"{run.tokenizer.name} · {settings.size}")
    if run.dist.enabled and barrier:
        import torch.distributed as dist

        dist.barrier()
    run.written_step = run.step
    run.cadence.written()


class _LogWindow:
    """Train-loss records averaged over the steps since the last record."""

    def __init__(self):
        self.loss, self.tokens, self.steps, self.started = 0.0, 0, 0, time.perf_counter()

    def add(self, result: StepResult) -> None:
        self.loss += result.loss
        self.tokens += result.tokens
        self.steps += 1

    def record(self, step: int, result: StepResult) -> dict:
        elapsed = time.perf_counter() - self.started
        record = {"kind": "train", "step": step, "loss": self.loss / self.steps, "lr": result.lr,
                  "grad_norm": result.grad_norm, "tokens": self.tokens,
                  "tokens_per_s": self.tokens / max(elapsed, 1e-9), "time": time.time()}
        self.__init__()
        return record


def _keep_completed_steps(run: Run) -> None:
    """After a step was cut short: drop its gradients and checkpoint the steps before it, with the
    generator state of its start (rank-local, no barrier: the other ranks may be gone)."""
    run.optimizer.zero_grad(set_to_none=True)
    if run.step > 0 and run.written_step != run.step:
        write_run_checkpoint(run, rng=run.step_rng, barrier=False)


def train(settings: TrainSettings, *, on_batch: Callable[[int, int, Any, Any], None] | None = None) -> dict:
    """Run (or continue) training; returns a summary dict (step, seconds, tokens/s, the last evaluation
    metrics, the pieces skipped as unreadable, rank, world size) and under ``"model"`` the trained
    module itself.

    ``on_batch(step, micro_step, inputs, targets)`` sees every micro-batch before it is used.
    SIGINT/SIGTERM (with ``handle_signals``) end the run after a checkpoint with
    :class:`~.kit.TrainingInterrupted`; a KeyboardInterrupt raised inside a step keeps the
    completed steps (the partial step's gradients are dropped and its start RNG recorded).
    """
    from tqdm import tqdm

    run = set_up(settings)
    settings = run.settings
    last_stop = min(settings.steps, settings.stop_after) if settings.stop_after is not None else settings.steps
    bar = tqdm(total=settings.steps, initial=run.step, desc="training", unit="step",
               disable=not (settings.progress and run.dist.is_main))
    started = time.perf_counter()
    window, total_tokens = _LogWindow(), 0
    run.model.train()
    signals = StopSignals()
    with signals if settings.handle_signals else contextlib.nullcontext(signals):
        try:
            spent = agree_all([run.clock.out_of_time()], run.dist, run.device)[0]  # a resumed run's budget
            while run.step < last_stop and not spent:
                result = train_step(run, on_batch)
                total_tokens += result.tokens
                window.add(result)
                if run.step % settings.log_every == 0 or run.step == last_stop:
                    record = window.record(run.step, result)
                    if run.dist.is_main:
                        run.log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{result.lr:.2e}")
                bar.update(1)
                stop_now, out_of_time, time_due = agree_all(
                    [signals.requested, run.clock.out_of_time(), run.cadence.due_by_time()], run.dist, run.device)
                finished = run.step == settings.steps or out_of_time
                if finished or (settings.eval_every and run.step % settings.eval_every == 0):
                    run.metrics = evaluate_run(run)
                if finished or stop_now or time_due or run.step == last_stop or run.cadence.due_by_steps(run.step):
                    write_run_checkpoint(run)
                if stop_now:
                    raise TrainingInterrupted(signals.signum or signal.SIGTERM, run.step, run.out)
                spent = out_of_time
        except TrainingInterrupted:
            raise
        except Exception as exc:
            if not signals.requested:
                raise
            # the signal also reached what the step depended on (Ctrl-C stops DataLoader workers too)
            _keep_completed_steps(run)
            raise TrainingInterrupted(signals.signum, run.step, run.out) from exc
        except KeyboardInterrupt:
            _keep_completed_steps(run)
            raise
        finally:
            bar.close()
    seconds = time.perf_counter() - started
    return {"step": run.step, "seconds": seconds, "tokens": total_tokens,
            "tokens_per_s": total_tokens / max(seconds, 1e-9), "metrics": run.metrics, "out": str(run.out),
            "elapsed_seconds": run.clock.elapsed(), "skipped": run.skipped, "rank": run.dist.rank,
            "world_size": run.dist.world_size, "model": run.model}


def __getattr__(name: str):
    """``evaluate_checkpoint`` lives in :mod:`.evaluate` now; reachable here too, loaded when asked for
    (so importing the trainer, as ``cadenza --help`` does, does not load numpy)."""
    if name == "evaluate_checkpoint":
        from .evaluate import evaluate_checkpoint

        return evaluate_checkpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
