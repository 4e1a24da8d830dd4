"""Training state on disk without pickle: optimizer moments and RNG states in safetensors,
everything else (step, data position, optimizer hyperparameters, run settings) in JSON.

A training run's output directory is itself a checkpoint (``config.json`` + ``model.safetensors``,
loadable by ``load_checkpoint``) plus ``training_state.safetensors`` and ``training_state.json``.
All four are first written into a temporary directory beside them and then renamed into place,
model and config last (:func:`write_checkpoint`, shared by every trainer through
``cadenza.symbolic.kit``), through a pending directory so that a write killed at any point is
either not there or rolled forward by the next reader; each file also records the step, so a
resume that still finds files of different steps says so instead of continuing from a mixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cadenza.data.errors import CadenzaError

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
CHECKPOINT_FILES = (STATE_TENSORS, STATE_JSON, "model.safetensors", "config.json")
PENDING = ".pending-checkpoint"  # a complete checkpoint whose files are being moved into place


def optimizer_state_flat(optimizer) -> tuple[dict, dict]:
    """The optimizer's state dict split into named tensors and JSON-able metadata."""
    import torch

    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer, tensors: dict, meta: dict) -> None:
    """Inverse of :func:`optimizer_state_flat` (tensors are moved to each parameter's device)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("optimizer."):
            continue
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state_flat() -> dict:
    """Torch's CPU and CUDA generator states as uint8 tensors (dropout draws from them)."""
    import torch

    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def load_rng_state(tensors: dict) -> None:
    import torch

    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def write_checkpoint(out_dir: str | os.PathLike, write_model: Callable[[Path], Any], optimizer, state: dict,
                     rng: dict | None = None, tensors: dict | None = None) -> Path:
    """Write a model checkpoint and the training state of step ``state["step"]`` into ``out_dir``.

    ``write_model(directory)`` writes the model's ``config.json`` (recording ``info["step"]``)
    and ``model.safetensors`` there; this function adds the optimizer moments, the generator
    states (``rng`` overrides the current ones, :func:`rng_state_flat`, for a checkpoint taken
    in the middle of a step, which must restore the step's start) and any extra ``tensors``,
    then moves the four files into place, model and config last.

    The move is rolled forward, never left torn: the complete temporary directory is first
    renamed to ``PENDING`` (one atomic rename), then its files are moved out one by one. A
    process killed before that rename leaves the previous checkpoint whole (and a temporary
    directory the next run removes, ``kit.remove_stale_temporaries``); one killed after it leaves
    ``PENDING``, whose files :func:`roll_forward` (run by every reader here) moves into place.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=out))
    try:
        write_model(tmp)
        flat, optimizer_meta = optimizer_state_flat(optimizer)
        flat.update(rng if rng is not None else rng_state_flat())
        flat.update({k: v.detach().to("cpu").contiguous() for k, v in (tensors or {}).items()})
        save_file(flat, str(tmp / STATE_TENSORS), metadata={"step": str(step)})
        (tmp / STATE_JSON).write_text(json.dumps({**state, "optimizer": optimizer_meta}, indent=2))
        roll_forward(out)  # an earlier write's, should one have been cut short
        os.replace(tmp, out / PENDING)
        roll_forward(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def roll_forward(out_dir: str | os.PathLike) -> bool:
    """Finish a checkpoint write that was cut short after its files were complete: move what is left
    in ``PENDING`` into place. Safe to run from several processes at once; True when there was one."""
    out = Path(out_dir)
    pending = out / PENDING
    if not pending.is_dir():
        return False
    for name in CHECKPOINT_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.replace(pending / name, out / name)
    shutil.rmtree(pending, ignore_errors=True)
    return True


def write_training_checkpoint(out_dir: str | os.PathLike, model, tokenizer, info: dict, optimizer,
                              state: dict, rng: dict | None = None) -> Path:
    """A Music Transformer's :func:`write_checkpoint`: model, config and training state of step
    ``state["step"]`` into ``out_dir``."""
    from .checkpoint import save_checkpoint

    step = int(state["step"])
    return write_checkpoint(out_dir, lambda tmp: save_checkpoint(tmp, model, tokenizer, {**info, "step": step}),
                            optimizer, state, rng=rng)


def has_training_state(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds a whole training checkpoint (after rolling a cut-short write forward)."""
    roll_forward(out_dir)
    return all((Path(out_dir) / name).exists() for name in CHECKPOINT_FILES)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CadenzaError(f"{path}: not valid JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")


def read_training_state(out_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(tensors, state JSON) of the checkpoint in ``out_dir``, after checking all files are of one step;
    a one-line CadenzaError naming the file for anything unreadable."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    out = Path(out_dir)
    if not has_training_state(out):
        missing = [n for n in CHECKPOINT_FILES if not (out / n).exists()]
        raise CadenzaError(f"{out}: no training state to resume from (missing {', '.join(missing)})")
    state = _read_json(out / STATE_JSON)
    config = _read_json(out / "config.json")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or not isinstance(state.get("optimizer"), dict):
        raise CadenzaError(f"{out / STATE_JSON}: not a training state (it needs a step and the optimizer's settings)")
    try:
        with safe_open(str(out / STATE_TENSORS), framework="pt") as handle:
            tensor_step = int((handle.metadata() or {}).get("step", -1))
        tensors = load_file(str(out / STATE_TENSORS))
    except Exception as exc:  # SafetensorError, a truncated or foreign file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CadenzaError(f"{out / STATE_TENSORS}: unreadable training state ({reason})") from None
    info = config.get("info") if isinstance(config, dict) else None
    config_step = int(info.get("step", -1)) if isinstance(info, dict) and isinstance(info.get("step"), int) else -1
    if not state["step"] == tensor_step == config_step:
        raise CadenzaError(f"{out}: checkpoint files disagree on the step (state {state['step']}, "
                           f"tensors {tensor_step}, model {config_step}); it was interrupted while being written")
    return tensors, state
