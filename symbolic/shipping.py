"""Turning a training run into a shipped model: fp16 weights, the figures a user compares by."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from cadenza.data.errors import CadenzaError

from .checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from .registry import MODELS_DIR

MAX_SHIPPED_MB = 25.0


def _metrics_of_these_weights(run_dir: Path, step: int | None) -> dict:
    """The valid figures logged at the checkpoint's own step; evaluated afresh when the run was
    stopped between evaluations (an interrupted run keeps older figures in its info)."""
    log = run_dir / "log.jsonl"
    if log.exists() and step is not None:
        for line in reversed(log.read_text().splitlines()):
            record = json.loads(line)
            if record.get("kind") == "eval" and record.get("split") == "valid" and record.get("step") == step:
                return record
    from .train import evaluate_checkpoint

    return evaluate_checkpoint(run_dir, split="valid", device="cpu", progress=False)


def ship_model(run_dir: str | os.PathLike, name: str, *, command: str, models_dir: str | os.PathLike = MODELS_DIR,
               max_mb: float = MAX_SHIPPED_MB) -> Path:
    """Copy a trained checkpoint into ``models_dir/name`` with fp16 weights.

    config.json's info gains what ``cadenza models`` shows: the corpus and split it saw, the
    steps, the valid figures (NLL per token, bits per note, bits per second), the parameter
    count and the exact training command, so the model can be reproduced.
    """
    run_dir = Path(run_dir)
    config = read_checkpoint_config(run_dir)
    info = dict(config.get("info") or {})
    model, tokenizer, _ = load_checkpoint(run_dir)
    state = json.loads((run_dir / "training_state.json").read_text()) if (run_dir / "training_state.json").exists() else {}
    metrics = _metrics_of_these_weights(run_dir, state.get("step"))
    settings = info.get("settings", {})
    shipped = {
        "corpus": info.get("corpus"),
        "split": "train (evaluated on valid)",
        "step": state.get("step", settings.get("steps")),
        "seq_len": settings.get("seq_len"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "valid_nll_per_token": metrics.get("nll_per_token"),
        "valid_bits_per_note": metrics.get("bits_per_note"),
        "valid_bits_per_second": metrics.get("bits_per_second"),
        "training_command": command,
        "settings": settings,
    }
    if isinstance(info.get("init"), dict):  # fine-tuned: count the steps the initial weights had seen too
        shipped["init"] = info["init"]
        shipped["total_steps"] = int(info["init"].get("steps", 0)) + int(shipped["step"] or 0)
    target = Path(models_dir) / name
    staging = Path(models_dir) / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(staging, model, tokenizer, shipped, dtype=torch.float16)
    size_mb = (staging / "model.safetensors").stat().st_size / 2**20
    if size_mb > max_mb:
        shutil.rmtree(staging)
        raise CadenzaError(f"{name}: {size_mb:.1f} MB of weights is over the {max_mb:g} MB a shipped model may take")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
