"""The training kit every cadenza trainer shares (the Music Transformer's and the transcribers').

A trainer is a loop over optimizer steps; what is the same in all of them lives here, so a run
of any model is scheduled, distributed, checkpointed, stopped and resumed the same way.

Schedule (``cadenza.symbolic.schedule``)
    ``lr_multiplier(step, warmup=, total=, min_ratio=0.1, elapsed=None, budget=None)``: linear
    warmup, then half a cosine down to ``min_ratio``. With a time budget (``budget`` seconds) the
    decay follows whichever of steps and wall time is further along, so a time-boxed run still
    anneals. A pure function: the schedule's state is the step (and the clock below).

Distributed runs
    ``init_distributed(device_name) -> Distributed`` joins the process group ``torchrun``
    describes (gloo on the CPU, NCCL on CUDA); ``Distributed`` has ``rank``, ``world_size``,
    ``local_rank``, ``enabled``, ``is_main``. ``agree(flag, dist_info, device)`` and
    ``agree_all(flags, dist_info, device)`` make a flag true on every rank when it is true on any
    (one all-reduce), so ranks stop, and checkpoint, at the same step and none is left waiting in
    a collective its peers never join. ``wrap_ddp(model, dist_info, device)`` is the module to
    call in the loop (DistributedDataParallel when distributed, else the model itself).

Optimizer
    ``parameter_groups(model, weight_decay)``: decay on matrices, none on biases, norms and other
    vectors. ``adamw(model, lr=, weight_decay=, betas=, device=)``: AdamW over those groups,
    fused on CUDA.

Run clock and time box
    ``RunClock(budget_seconds=None, elapsed=0.0)``: wall time of the run across resumes
    (``elapsed()`` counts the seconds of earlier legs), ``out_of_time()``, ``multiplier(step, ...,
    elapsed=None)`` (the schedule under the clock's time box). Its ``elapsed()`` goes into the
    saved state and comes back on resume, so a resumed time-boxed run continues its budget rather
    than starting a fresh one. Under DDP a time-boxed schedule must read the same time on every
    rank: ``multiplier(step, ..., elapsed=clock.elapsed_agreed(dist_info, device))`` (one
    all-reduce per step), or the ranks' weights drift apart by their clocks' offsets.

Checkpoints (``cadenza.symbolic.train_state``, no pickle anywhere)
    A run's output directory is a loadable model checkpoint (``config.json``,
    ``model.safetensors``) plus ``training_state.safetensors`` (optimizer moments, RNG states)
    and ``training_state.json`` (step, run settings, clock, anything JSON). ``write_checkpoint(out,
    write_model, optimizer, state, rng=None, tensors=None)`` writes all four into a temporary
    directory and renames them into place; ``write_model(tmp_dir)`` writes the model's two files
    (and must record ``info["step"]`` in config.json). ``read_training_state(out)`` returns
    ``(tensors, state)`` after checking that all files are of one step;
    ``load_optimizer_state(optimizer, tensors, state["optimizer"])`` and
    ``load_rng_state(tensors)`` restore them; ``has_training_state(out)`` says whether there is
    anything to resume. A write killed at any point leaves either the previous checkpoint whole
    or a complete pending one that ``roll_forward(out)`` (run by ``has_training_state``,
    ``read_training_state`` and ``remove_stale_temporaries``) moves into place.
    ``remove_stale_temporaries(out)`` deletes what a killed write left (``.checkpoint-*``
    directories, hidden ``.NAME.*`` temporaries of the run's files).
    ``CheckpointCadence(every_steps, every_minutes)`` says when a periodic checkpoint is due.

Signals
    ``with StopSignals() as stop:`` turns the first SIGINT or SIGTERM into ``stop.signum`` (the
    loop finishes its step, writes a checkpoint and raises ``TrainingInterrupted``); a second
    one acts at once (KeyboardInterrupt, or the default SIGTERM action). ``TrainingInterrupted``
    is a KeyboardInterrupt carrying ``signum``, ``step``, ``out`` and ``exit_status`` (130 for
    SIGINT, 143 for SIGTERM).

A loop, in short (``transcription/seq2seq_train.py`` is a whole one)::

    dist = kit.init_distributed(device_name)
    optimizer = kit.adamw(model, lr=settings.learning_rate, weight_decay=settings.weight_decay, device=device)
    if dist.is_main:
        kit.remove_stale_temporaries(out)
    if kit.has_training_state(out):
        tensors, state = kit.read_training_state(out)   # + the model's weights from out
        kit.load_optimizer_state(optimizer, tensors, state["optimizer"]); kit.load_rng_state(tensors)
    clock = kit.RunClock(budget_seconds, elapsed=state["elapsed_seconds"] if resumed else 0.0)
    net = kit.wrap_ddp(model, dist, device)
    with kit.StopSignals() as signals:
        while step < settings.steps and not spent:
            elapsed = clock.elapsed_agreed(dist, device) if clock.budget_seconds else None
            lr = settings.learning_rate * clock.multiplier(step, warmup=..., total=..., elapsed=elapsed)
            ...  # forward, backward, clip, optimizer.step(); step += 1
            stop_now, spent = kit.agree_all([signals.requested, clock.out_of_time()], dist, device)
            if dist.is_main and (step % settings.save_every == 0 or stop_now or spent or step == settings.steps):
                kit.write_checkpoint(out, write_model, optimizer,
                                     {"step": step, "elapsed_seconds": clock.elapsed(), ...})
            if stop_now:
                raise kit.TrainingInterrupted(signals.signum, step, out)

Options
    ``LoopSettings`` (steps, batch_size, learning_rate, warmup, weight_decay, grad_clip,
    log_every, save_every, seed, max_minutes) with ``validate()``, for a trainer to subclass;
    ``check_number(name, value, minimum=, maximum=, ...)`` raises a one-line CadenzaError for a
    value that is not a finite number in range; ``fingerprint(items)`` is a short stable hash
    (of piece ids and lengths, say) that a resume compares against the saved run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cadenza.data.errors import CadenzaError

from .schedule import lr_multiplier
from .train_state import (CHECKPOINT_FILES, has_training_state, load_optimizer_state, load_rng_state,
                          optimizer_state_flat, read_training_state, rng_state_flat, roll_forward, write_checkpoint)

__all__ = [
    "LoopSettings", "lr_multiplier", "Distributed", "init_distributed", "agree", "agree_all", "wrap_ddp", "parameter_groups",
    "adamw", "RunClock", "CheckpointCadence", "write_checkpoint", "read_training_state", "has_training_state",
    "load_optimizer_state", "load_rng_state", "optimizer_state_flat", "rng_state_flat", "remove_stale_temporaries",
    "resume_window_run",
    "roll_forward",
    "StopSignals", "TrainingInterrupted", "check_number", "fingerprint", "CHECKPOINT_FILES",
]


# -- a trainer's loop settings -----------------------------------------------------------------
@dataclass
class LoopSettings:
    """What every simple kit trainer loop is set by (a trainer subclasses it, adding its own
    fields or other defaults); :meth:`validate` gives one-line errors in the CLI's spelling."""

    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    max_minutes: float | None = None  # time box of the whole run, across resumes

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every", "save_every"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), minimum=1, integer=True)
        check_number("--warmup", self.warmup, minimum=0, integer=True)
        check_number("--seed", self.seed, minimum=0, integer=True)
        check_number("--lr", self.learning_rate, above=0, maximum=1)
        check_number("--weight-decay", self.weight_decay, minimum=0)
        check_number("--grad-clip", self.grad_clip, above=0)
        if self.max_minutes is not None:
            check_number("--max-minutes", self.max_minutes, above=0)


# -- distributed -------------------------------------------------------------------------------
@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> Distributed:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not str(device_name).startswith("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank, world_size, local_rank)


def agree_all(flags: Sequence[bool], dist_info: Distributed, device=None) -> list[bool]:
    """Each flag true on every rank when it is true on any rank (one MAX all-reduce)."""
    if not dist_info.enabled:
        return [bool(f) for f in flags]
    import torch
    import torch.distributed as dist

    values = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def agree(flag: bool, dist_info: Distributed, device=None) -> bool:
    """True on every rank when it is true on any."""
    return agree_all([flag], dist_info, device)[0]


def wrap_ddp(model, dist_info: Distributed, device):
    """DistributedDataParallel around ``model`` under torchrun (it broadcasts rank 0's weights), else ``model``."""
    if not dist_info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# -- optimizer ---------------------------------------------------------------------------------
def parameter_groups(model, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on matrices (dim >= 2), none on biases, norms and scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def adamw(model, *, lr: float, weight_decay: float, betas: Sequence[float] = (0.9, 0.98), device=None,
          fused: bool | None = None):
    """AdamW over :func:`parameter_groups`; fused on CUDA unless ``fused`` says otherwise."""
    import torch

    if fused is None:
        fused = device is not None and torch.device(device).type == "cuda"
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=tuple(betas),
                             **({"fused": True} if fused else {}))


# -- clock and cadence -------------------------------------------------------------------------
class RunClock:
    """Wall time of a run across its resumed legs, and its time box (``budget_seconds``)."""

    def __init__(self, budget_seconds: float | None = None, elapsed: float = 0.0):
        self.budget_seconds = budget_seconds
        self.earlier = float(elapsed)
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds of this leg plus those of earlier legs (what the saved state records)."""
        return self.earlier + time.monotonic() - self.started

    def leg(self) -> float:
        """Seconds of this leg alone."""
        return time.monotonic() - self.started

    def out_of_time(self) -> bool:
        return self.budget_seconds is not None and self.elapsed() >= self.budget_seconds

    def elapsed_agreed(self, dist_info: "Distributed", device=None) -> float:
        """:meth:`elapsed` made the same on every rank (the largest; one all-reduce, call it on all
        ranks): ranks' clocks start apart, and a time-based learning rate that differed by a rank's
        start would leave the ranks with different weights."""
        if not dist_info.enabled:
            return self.elapsed()
        import torch
        import torch.distributed as dist

        value = torch.tensor([self.elapsed()], dtype=torch.float64, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value.item())

    def multiplier(self, step: int, *, warmup: int, total: int, min_ratio: float = 0.1,
                   elapsed: float | None = None) -> float:
        """The schedule's factor at ``step``, decaying by wall time too under a time box (by
        ``elapsed`` when given: under DDP pass :meth:`elapsed_agreed`)."""
        if not self.budget_seconds:
            return lr_multiplier(step, warmup=warmup, total=total, min_ratio=min_ratio)
        return lr_multiplier(step, warmup=warmup, total=total, min_ratio=min_ratio,
                             elapsed=self.elapsed() if elapsed is None else elapsed, budget=self.budget_seconds)


class CheckpointCadence:
    """A periodic checkpoint is due every ``every_steps`` steps and after ``every_minutes`` of wall
    time since the last one (0 or None switches either off)."""

    def __init__(self, every_steps: int | None, every_minutes: float | None):
        self.every_steps = every_steps or 0
        self.every_seconds = (every_minutes or 0.0) * 60.0
        self.last = time.monotonic()

    def due_by_steps(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def due_by_time(self) -> bool:
        return bool(self.every_seconds) and time.monotonic() - self.last >= self.every_seconds

    def written(self) -> None:
        self.last = time.monotonic()


# -- temporaries -------------------------------------------------------------------------------
def resume_window_run(out_dir: str | os.PathLike, model, optimizer, sampler, dist_info: Distributed, seed: int,
                      device, *, strict: bool = True) -> dict | None:
    """Bring back a kit checkpoint of a trainer that draws its windows from ``sampler.rng``:
    the weights (as float32), the optimizer moments, the torch RNG states and the window stream
    (rank 0's continues; every other rank draws a fresh one per leg, seeded by its rank and the
    step). Returns the saved JSON state (step, elapsed time, the trainer's own fields), or None
    where the directory holds no training state."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    out = Path(out_dir)
    if not has_training_state(out):
        return None
    tensors, state = read_training_state(out)
    weights = load_file(str(out / "model.safetensors"))
    model.load_state_dict({k: v.to(device, torch.float32) for k, v in weights.items()}, strict=strict)
    load_optimizer_state(optimizer, tensors, state["optimizer"])
    load_rng_state(tensors)
    if dist_info.is_main:
        sampler.rng.bit_generator.state = state["sampler_rng"]
    else:
        sampler.rng = np.random.default_rng([seed, dist_info.rank, int(state["step"])])
    return state


def remove_stale_temporaries(out_dir: str | os.PathLike, names: Iterable[str] = ()) -> list[Path]:
    """Delete what an interrupted write left in ``out_dir``: ``.checkpoint-*`` directories (a whole
    model and optimizer state each, the 100+ MB hidden files a killed run used to leave) and
    hidden ``.NAME.*`` temporaries of the checkpoint files and of ``names`` (atomic writes).
    Returns what was removed. Call it on the main rank before a run writes anything."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    roll_forward(out)  # a complete checkpoint cut short while moving into place is kept, not removed
    known = tuple(CHECKPOINT_FILES) + ("log.jsonl", "loss.png", *names)
    removed = []
    for path in out.iterdir():
        if path.name.startswith(".checkpoint-") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif any(path.name.startswith(f".{name}.") for name in known) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            continue
        removed.append(path)
    return removed


# -- signals -----------------------------------------------------------------------------------
class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after writing its checkpoint."""

    def __init__(self, signum: int, step: int, out: str | os.PathLike):
        self.signum, self.step, self.out = int(signum), int(step), str(out)
        super().__init__(f"stopped by {signal.Signals(self.signum).name} at step {self.step}; "
                         f"the checkpoint in {self.out} resumes with --resume")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context manager: the first SIGINT/SIGTERM sets ``signum`` instead of killing the process, so
    the training loop can finish its step and checkpoint; a second one acts at once. Outside the
    main thread (where handlers cannot be installed) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # asked twice: stop now
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.signum = signum

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def requested(self) -> bool:
        return self.signum is not None


# -- options -----------------------------------------------------------------------------------
def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, below: float | None = None, integer: bool = False) -> None:
    """One-line CadenzaError unless ``value`` is a finite number with minimum <= value <= maximum
    and above < value < below (each bound optional); ``integer`` also requires a whole number."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or (integer and int(value) != value):
        kind = "a whole number" if integer else "a finite number"
        raise CadenzaError(f"{name} must be {kind}, got {value!r}")
    for bound, ok, words in ((minimum, lambda b: value >= b, "at least"), (maximum, lambda b: value <= b, "at most"),
                             (above, lambda b: value > b, "above"), (below, lambda b: value < b, "below")):
        if bound is not None and not ok(bound):
            raise CadenzaError(f"{name} must be {words} {bound:g}, got {value:g}")


def fingerprint(items) -> str:
    """A short stable hash of JSON-able ``items`` (piece ids with their lengths, say)."""
    text = json.dumps(items, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
