"""Models that ship with cadenza, found by name (``--model bach-event``) or by directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cadenza.data.errors import CadenzaError

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "bach-event"
DEFAULT_INFILL_MODEL = "bach-anticipatory"
DEFAULT_TRANSCRIBER = "transcriber-framewise"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    kind: str  # "music-transformer" or "transcription"
    scheme: str
    size_mb: float
    info: dict

    def summary(self) -> str:
        info = self.info
        parts = [f"{self.name:22s} {self.kind:18s} {self.scheme:13s} {self.size_mb:6.1f} MB"]
        if "valid_bits_per_note" in info:
            parts.append(f"valid {info['valid_bits_per_note']:.2f} bits/note")
        heldout = info.get("heldout_eval", {})
        if "onset_f1" in heldout:
            parts.append(f"held-out onset F1 {heldout['onset_f1']:.3f} ({heldout.get('soundfont', '?')})")
        if "corpus" in info:
            parts.append(f"corpus {info['corpus']}")
        if "total_steps" in info or "step" in info:  # a model trained in stages counts them all
            parts.append(f"{info.get('total_steps', info.get('step'))} steps")
        return "  ".join(parts)


def _entry(path: Path) -> ModelEntry:
    config = json.loads((path / "config.json").read_text())
    weights = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    tokenizer = config.get("tokenizer") or {}
    scheme = tokenizer.get("scheme", "?")
    kind = "transcription" if scheme == "mt3" or "n_mels" in config.get("model", {}) else "music-transformer"
    return ModelEntry(path.name, path, kind, scheme, weights / 2**20, config.get("info", {}))


def list_models() -> list[ModelEntry]:
    """Shipped models, sorted by name."""
    if not MODELS_DIR.is_dir():
        return []
    return [_entry(p) for p in sorted(MODELS_DIR.iterdir()) if (p / "config.json").exists()]


def resolve_model(name_or_dir: str | os.PathLike) -> Path:
    """A shipped model's directory by name, or a checkpoint directory given by path."""
    path = Path(name_or_dir)
    if (path / "config.json").exists():
        return path
    shipped = MODELS_DIR / str(name_or_dir)
    if (shipped / "config.json").exists():
        return shipped
    names = ", ".join(e.name for e in list_models()) or "none installed"
    raise CadenzaError(f"{name_or_dir}: not a checkpoint directory and not a shipped model (shipped: {names})")
