"""Model checkpoints: a directory with config.json and model.safetensors, never a pickle.

``config.json`` holds ``{"model": asdict(config), "tokenizer": tok.to_dict(), "info": info}``
so a checkpoint names everything needed to rebuild the model and read its ids. Weights are
safetensors (``torch.load`` of an untrusted file is code execution). Both files are written
to a temporary name and renamed, so an interrupted save leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from cadenza.data.atomic import atomic_path, write_text_atomic
from cadenza.data.errors import CadenzaError

from .transformer import MusicTransformer, MusicTransformerConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(CadenzaError):
    """A checkpoint directory that is missing, incomplete or does not fit its config."""


def save_checkpoint(directory: str | os.PathLike, model: MusicTransformer, tokenizer, info: dict[str, Any],
                    *, dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` (optionally cast to ``dtype``, e.g. torch.float16) with its tokenizer
    config and ``info`` (step, corpus, split, ...) into ``directory``; return the directory."""
    from safetensors.torch import save_file

    model = _unwrap(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.cpu().contiguous()
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    config = {
        "model": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        "info": info,
    }
    write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2, default=_json_default))
    return directory


def read_checkpoint_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, tokenizer, info)`` from a checkpoint directory; the model is float32 in eval mode."""
    from safetensors.torch import load_file

    from cadenza.tokenizers import get_tokenizer

    directory = Path(directory)
    config = read_checkpoint_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {WEIGHTS_FILE})")
    try:
        model_config = MusicTransformerConfig(**config["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: bad model config ({exc})") from None
    model = MusicTransformer(model_config)
    state = {name: tensor.float() if tensor.is_floating_point() else tensor
             for name, tensor in load_file(str(weights)).items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit the config ({exc})") from None
    model.to(device).eval()
    tokenizer_config = config.get("tokenizer")
    tokenizer = None
    if tokenizer_config:
        tokenizer = get_tokenizer(tokenizer_config["scheme"], **tokenizer_config.get("config", {}))
    return model, tokenizer, config.get("info", {})


def _unwrap(model: torch.nn.Module) -> MusicTransformer:
    """The MusicTransformer inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") and not isinstance(model, MusicTransformer):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
