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
    """The parsed config.json of a checkpoint directory (or of a shipped model, by name)."""
    directory = checkpoint_directory(directory)
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON config ({_first_line(exc)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path}: not a checkpoint config (no \"model\" object)")
    return config


def checkpoint_directory(directory: str | os.PathLike) -> Path:
    """A checkpoint directory given by path, or a shipped model's given by name; one line if neither."""
    path = Path(directory)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"{path}: not a checkpoint (no {CONFIG_FILE})")
        return path
    if path.exists():
        raise CheckpointError(f"{path}: a checkpoint is a directory (config.json + model.safetensors), not a file")
    from .registry import resolve_model

    return resolve_model(directory)


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, tokenizer, info)`` from a checkpoint directory or a shipped model's name; the
    model is float32 in eval mode. Everything is checked before a tensor is made (see
    ``load_model``), and the tokenizer must number exactly the ids the model predicts."""
    from cadenza.tokenizers import get_tokenizer

    directory = checkpoint_directory(directory)
    config = read_checkpoint_config(directory)
    tokenizer = None
    tokenizer_config = config.get("tokenizer")
    if tokenizer_config:
        if not isinstance(tokenizer_config, dict) or not isinstance(tokenizer_config.get("config", {}), dict):
            raise CheckpointError(f"{directory / CONFIG_FILE}: the tokenizer entry is not an object")
        try:
            tokenizer = get_tokenizer(tokenizer_config.get("scheme"), **tokenizer_config.get("config", {}))
        except CadenzaError as exc:
            raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{directory / CONFIG_FILE}: bad tokenizer config ({_first_line(exc)})") from None
    model = load_model(directory, MusicTransformerConfig, MusicTransformer, config["model"], device=device)
    if tokenizer is not None and tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(f"{directory}: the model predicts {model.config.vocab_size} ids but its "
                              f"{tokenizer.name} tokenizer has {tokenizer.vocab_size}")
    model.use_output_groups(tokenizer)
    info = config.get("info", {})
    info = info if isinstance(info, dict) else {}
    settings = info.get("settings")
    seq_len = info.get("seq_len", settings.get("seq_len") if isinstance(settings, dict) else None)
    if isinstance(seq_len, int) and seq_len > 0:
        model.trained_context = seq_len  # the crop length: sampling's context and attention window
    return model, tokenizer, info


# -- validation, the same for every model kind ----------------------------------------------------
SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                        "U8": 1, "BOOL": 1}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
MAX_HEADER_BYTES = 100 * 2**20
MAX_DIMENSION = 2**31 - 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from a safetensors file's header, with every tensor's bytes
    checked to lie inside the file; one line naming the file if it is empty, truncated or not
    safetensors. Nothing but the header is read."""
    import math
    import struct

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path}: {size} bytes, too short for a safetensors file (empty or truncated)")
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > size - 8 or length > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: its header claims {length} bytes of a {size}-byte file "
                                  "(truncated, or not a safetensors file)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object (a garbage header)")
    data_bytes = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], [int(n) for n in entry["shape"]], entry["data_offsets"]
            itemsize = SAFETENSORS_ITEMSIZE[dtype]
            well_formed = all(n >= 0 for n in shape) and isinstance(begin, int) and isinstance(end, int)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: the header entry of {name!r} is malformed") from None
        if not well_formed or not 0 <= begin <= end or end - begin != math.prod(shape) * itemsize:
            raise CheckpointError(f"{path}: the header entry of {name!r} does not describe its shape {shape}")
        if end > data_bytes:
            raise CheckpointError(f"{path}: truncated ({name!r} needs bytes up to {end} of a "
                                  f"{data_bytes}-byte data section)")
        tensors[name] = (dtype, tuple(shape))
    return tensors


def check_config(config_class, values: Any, where: str | os.PathLike, build=None):
    """A config dataclass from checkpoint JSON, or one line saying what is wrong with it: every
    integer size a positive integer, every rate a finite number, the vocabulary under the limit."""
    import dataclasses
    import math

    from cadenza.data.limits import LIMITS, limit_error

    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: the model config is not a JSON object")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CheckpointError(f"{where}: unknown model config field(s) {', '.join(unknown)}")
    for name, value in values.items():
        kind = str(fields[name].type)
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)
                              or not 1 <= value <= MAX_DIMENSION):
            raise CheckpointError(f"{where}: model config {name} must be an integer from 1 to {MAX_DIMENSION} "
                                  f"(got {value!r})")
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not math.isfinite(value) or value < 0):
            raise CheckpointError(f"{where}: model config {name} must be a finite number >= 0 (got {value!r})")
    if values.get("vocab_size", 0) > LIMITS.max_vocab:
        raise limit_error(str(where), "the model config asks for", f"{values['vocab_size']} ids", "max_vocab")
    try:
        return build(values) if build is not None else config_class(**values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: bad model config ({_first_line(exc)})") from None


def load_model(directory: str | os.PathLike, config_class, model_class, config_values: Any,
               device: str | torch.device = "cpu", build_config=None) -> torch.nn.Module:
    """Build ``model_class(config)`` from ``directory/model.safetensors``, float32, in eval mode.

    In order, each failure one line: the config (``check_config``), the model's size (counted on
    the meta device, which allocates nothing, against the ``--max-parameters`` limit), the
    safetensors header (``read_safetensors_header``), then every tensor's name, shape and dtype
    against the model the config describes. Only then are tensors made and the weights read.
    ``build_config(values)`` makes the config where ``config_class(**values)`` does not.
    """
    from safetensors.torch import load_file

    from cadenza.data.limits import LIMITS, limit_error

    directory = Path(directory)
    where = directory / CONFIG_FILE
    config = check_config(config_class, config_values, where, build=build_config)
    try:
        with torch.device("meta"):
            skeleton = model_class(config)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{where}: the model config does not describe a model ({_first_line(exc)})") from None
    parameters = sum(p.numel() for p in skeleton.parameters())
    if parameters > LIMITS.max_parameters:
        raise limit_error(str(where), "the model config asks for", f"{parameters} parameters", "max_parameters")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {WEIGHTS_FILE})")
    header = read_safetensors_header(weights)
    expected = skeleton.state_dict()
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "")] if missing else []) + \
                ([f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "")]
                 if unexpected else [])
        raise CheckpointError(f"{weights}: the weights do not fit the config ({'; '.join(parts)})")
    for name, tensor in expected.items():
        dtype, shape = header[name]
        if shape != tuple(tensor.shape):
            raise CheckpointError(f"{weights}: {name} has shape {list(shape)}, the config asks for "
                                  f"{list(tensor.shape)}")
        if tensor.is_floating_point() != (dtype in FLOAT_DTYPES):
            raise CheckpointError(f"{weights}: {name} is stored as {dtype}, the model needs "
                                  f"{'a floating-point' if tensor.is_floating_point() else 'an integer'} tensor")
    del skeleton
    model = model_class(config)
    try:
        state = {name: tensor.float() if tensor.is_floating_point() else tensor
                 for name, tensor in load_file(str(weights)).items()}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: unreadable weights ({_first_line(exc)})") from None
    return model.to(device).eval()


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
