"""Device choice: ``--device auto`` is CUDA (bf16 autocast) when present, else the CPU."""

from __future__ import annotations

import contextlib

import torch

from cadenza.data.errors import CadenzaError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given."""
    if isinstance(name, torch.device):
        return name
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CadenzaError(f"device {name!r} was asked for but CUDA is not available; use --device cpu or auto")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CadenzaError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise CadenzaError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def autocast_context(device: torch.device | str):
    """bf16 autocast on CUDA; a context that does nothing on the CPU (float32 there)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
