"""DDSP presets: an instrument as a small set of named numbers, saved and loaded as JSON.

A ``Preset`` maps a note (pitch, velocity, duration) to the synth's controls: the harmonic
distribution and its spectral tilt over time, the ADSR envelope, the noise's spectral shape and
level, and vibrato. ``PresetParameters`` (from ``preset_parameters``) holds the same numbers as
unconstrained torch parameters (log for positive ones, logit for levels in [0, 1]) so that
``cadenza.rendering.ddsp_fit`` can fit them by gradient descent.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cadenza.data.errors import CadenzaError

if TYPE_CHECKING:
    import torch

# Centres of the noise bands (Hz): log-spaced so a preset means the same at any sample rate.
NOISE_BAND_HZ = tuple(float(x) for x in np.geomspace(125.0, 16000.0, 16))


@dataclass
class Preset:
    """An instrument: the numbers that map a note (pitch, velocity, duration) to DDSP controls.

    Times are in seconds; ``decay`` and ``release`` are exponential time constants.
    ``harmonics`` are relative amplitudes of harmonics 1..K (normalized at synthesis).
    ``tilt_*`` are spectral tilts: harmonic k is scaled by k ** -tilt, so a larger tilt is darker.
    """

    name: str
    harmonics: list[float]
    attack: float = 0.02
    decay: float = 0.5
    sustain: float = 0.7
    release: float = 0.15
    tilt_attack: float = 0.0  # tilt at the onset ...
    tilt_sustain: float = 0.0  # ... relaxing to this with time constant tilt_decay
    tilt_decay: float = 0.2
    velocity_tilt: float = 1.0  # extra tilt for a velocity-0 note (soft notes are darker)
    velocity_exponent: float = 2.0  # amplitude = (velocity / 127) ** velocity_exponent
    key_tracking_db: float = 0.0  # gain change per octave above middle C
    decay_key_scaling: float = 0.0  # decay time halves per octave up when 1
    noise_gain: float = 0.01  # sustained noise, relative to the harmonic amplitude
    burst_gain: float = 0.0  # onset noise burst (bow scratch, breath chiff, pluck)
    burst_decay: float = 0.02
    noise_bands: list[float] = field(default_factory=lambda: [1.0] * len(NOISE_BAND_HZ))
    vibrato_rate: float = 0.0  # Hz; not fit (pitch is given by the score)
    vibrato_depth_cents: float = 0.0
    vibrato_delay: float = 0.3

    def to_dict(self) -> dict:
        return {"format": "cadenza-ddsp-preset", "version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Preset":
        """Build a preset from a dict, rejecting unknown keys and wrong lengths with a clear message."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k not in ("format", "version")}
        unknown = set(values) - known
        if unknown:
            raise CadenzaError(f"DDSP preset has unknown fields: {', '.join(sorted(unknown))}")
        if "name" not in values or "harmonics" not in values:
            raise CadenzaError("DDSP preset needs at least 'name' and 'harmonics'")
        preset = cls(**values)
        preset.harmonics = [float(x) for x in preset.harmonics]
        preset.noise_bands = [float(x) for x in preset.noise_bands]
        if not preset.harmonics or min(preset.harmonics) < 0 or sum(preset.harmonics) <= 0:
            raise CadenzaError("DDSP preset 'harmonics' must be non-negative with a positive sum")
        if len(preset.noise_bands) != len(NOISE_BAND_HZ):
            raise CadenzaError(f"DDSP preset 'noise_bands' must have {len(NOISE_BAND_HZ)} values")
        return preset

    def save(self, path: str | os.PathLike) -> Path:
        """Write the preset as JSON (atomically)."""
        from cadenza.data.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Preset":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CadenzaError(f"{path}: no such preset file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CadenzaError(f"{path}: not a JSON preset ({exc})") from None
        if not isinstance(data, dict):
            raise CadenzaError(f"{path}: a preset is a JSON object")
        return cls.from_dict(data)


def _noise_shape(low_hz: float, high_hz: float, peak_hz: float | None = None, floor: float = 0.05) -> list[float]:
    """Band magnitudes for a presets' noise: flat between low and high (optionally peaked), a floor outside."""
    shape = []
    for hz in NOISE_BAND_HZ:
        inside = low_hz <= hz <= high_hz
        value = 1.0 if inside else floor
        if peak_hz is not None:
            value *= math.exp(-0.5 * (math.log2(hz / peak_hz) / 1.0) ** 2) * 0.8 + 0.2
        shape.append(round(value, 4))
    return shape


def _harmonic_series(count: int, slope: float, odd_boost: float = 1.0, formant: tuple[int, float] | None = None) -> list[float]:
    """Harmonic amplitudes k ** -slope, odd harmonics scaled by ``odd_boost``, one optional bump."""
    values = []
    for k in range(1, count + 1):
        value = k ** -slope * (odd_boost if k % 2 else 1.0)
        if formant is not None:
            value *= 1.0 + formant[1] * math.exp(-0.5 * ((k - formant[0]) / 1.5) ** 2)
        values.append(round(value, 5))
    return values


PRESETS: dict[str, Preset] = {
    "flute": Preset(
        name="flute", harmonics=_harmonic_series(12, 2.2, odd_boost=1.4),
        attack=0.06, decay=0.4, sustain=0.85, release=0.08,
        tilt_attack=0.6, tilt_sustain=0.3, tilt_decay=0.15, velocity_tilt=1.0,
        noise_gain=0.05, burst_gain=0.15, burst_decay=0.04, noise_bands=_noise_shape(800, 9000, peak_hz=3000),
        vibrato_rate=5.0, vibrato_depth_cents=12.0, vibrato_delay=0.35,
    ),
    "strings": Preset(
        name="strings", harmonics=_harmonic_series(40, 1.0, formant=(4, 0.8)),
        attack=0.08, decay=0.6, sustain=0.8, release=0.12,
        tilt_attack=0.3, tilt_sustain=0.0, tilt_decay=0.1, velocity_tilt=1.2,
        noise_gain=0.02, burst_gain=0.08, burst_decay=0.05, noise_bands=_noise_shape(1500, 8000, peak_hz=3500),
        vibrato_rate=5.5, vibrato_depth_cents=15.0, vibrato_delay=0.25,
    ),
    "organ": Preset(
        name="organ",
        harmonics=[1.0, 0.7, 0.35, 0.5, 0.12, 0.25, 0.05, 0.3, 0.03, 0.08, 0.02, 0.12, 0.01, 0.02, 0.01, 0.06],
        attack=0.015, decay=0.1, sustain=1.0, release=0.06,
        tilt_attack=0.0, tilt_sustain=0.0, tilt_decay=0.1, velocity_tilt=0.0, velocity_exponent=0.5,
        noise_gain=0.004, burst_gain=0.03, burst_decay=0.015, noise_bands=_noise_shape(200, 4000),
    ),
    "plucked": Preset(
        name="plucked", harmonics=_harmonic_series(40, 0.8),
        attack=0.004, decay=0.5, sustain=0.0, release=0.12,
        tilt_attack=0.2, tilt_sustain=1.6, tilt_decay=0.25, velocity_tilt=1.5,
        key_tracking_db=-1.0, decay_key_scaling=0.5,
        noise_gain=0.0, burst_gain=0.25, burst_decay=0.012, noise_bands=_noise_shape(500, 12000),
    ),
}


def load_preset(preset: "str | os.PathLike | Preset") -> Preset:
    """A preset by name (``PRESETS``), from a JSON file, or passed through; a copy, safe to change."""
    if isinstance(preset, Preset):
        return Preset.from_dict(preset.to_dict())
    text = str(preset)
    if text in PRESETS:
        return Preset.from_dict(PRESETS[text].to_dict())
    if text.endswith(".json") or Path(text).is_file():
        return Preset.load(text)
    raise CadenzaError(f"unknown DDSP preset {text!r}; choose one of {', '.join(PRESETS)} or a preset .json file")


# --------------------------------------------------------------------------------------------
# Torch side: a preset as unconstrained parameters for gradient descent.


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


# (field, transform): positive values are stored as log, [0, 1] values as logit, others as-is.
_PARAMETER_SPACE = {
    "attack": "log", "decay": "log", "sustain": "logit", "release": "log",
    "tilt_attack": "linear", "tilt_sustain": "linear", "tilt_decay": "log", "velocity_tilt": "linear",
    "velocity_exponent": "log", "key_tracking_db": "linear", "decay_key_scaling": "linear",
    "noise_gain": "log", "burst_gain": "log", "burst_decay": "log",
}
_FLOOR = 1e-5  # positive quantities are kept above this so their logs stay finite


def _to_free(value: float, space: str) -> float:
    if space == "log":
        return math.log(max(value, _FLOOR))
    if space == "logit":
        return _logit(value)
    return float(value)


def _build_parameter_module():
    import torch

    class PresetParameters(torch.nn.Module):
        """A preset's continuous numbers as unconstrained torch parameters (log/logit where bounded).

        ``controls()`` maps them back to constrained values; ``to_preset()`` back to a Preset.
        Vibrato stays fixed (a buffer): it shapes pitch, which the score gives.
        """

        def __init__(self, preset: Preset):
            super().__init__()
            self.name = preset.name
            harmonics = torch.tensor(preset.harmonics, dtype=torch.float64)
            self.harmonic_logits = torch.nn.Parameter(torch.log(harmonics / harmonics.sum() + _FLOOR).float())
            bands = torch.tensor(preset.noise_bands, dtype=torch.float64)
            self.log_noise_bands = torch.nn.Parameter(torch.log(bands.clamp_min(_FLOOR)).float())
            for name, space in _PARAMETER_SPACE.items():
                setattr(self, name, torch.nn.Parameter(torch.tensor(_to_free(getattr(preset, name), space))))
            vibrato = [preset.vibrato_rate, preset.vibrato_depth_cents, preset.vibrato_delay]
            self.register_buffer("vibrato", torch.tensor(vibrato, dtype=torch.float64))

        def controls(self) -> dict[str, "torch.Tensor"]:
            """Constrained values keyed like Preset fields (harmonics normalized to sum to one)."""
            out = {"harmonic_logits": self.harmonic_logits, "noise_bands": torch.exp(self.log_noise_bands)}
            for name, space in _PARAMETER_SPACE.items():
                free = getattr(self, name)
                out[name] = torch.exp(free) if space == "log" else torch.sigmoid(free) if space == "logit" else free
            out["vibrato_rate"], out["vibrato_depth_cents"], out["vibrato_delay"] = (float(x) for x in self.vibrato)
            return out

        def to_preset(self, name: str | None = None) -> Preset:
            with torch.no_grad():
                c = self.controls()
                harmonics = torch.softmax(c["harmonic_logits"].double(), 0)
                values = {k: float(c[k]) for k in _PARAMETER_SPACE}
                return Preset(
                    name=name or self.name,
                    harmonics=[round(float(x), 6) for x in harmonics],
                    noise_bands=[round(float(x), 6) for x in c["noise_bands"]],
                    vibrato_rate=c["vibrato_rate"], vibrato_depth_cents=c["vibrato_depth_cents"],
                    vibrato_delay=c["vibrato_delay"],
                    **{k: round(v, 6) for k, v in values.items()},
                )

    return PresetParameters


_PRESET_PARAMETERS_CLASS = None


def preset_parameters(preset: "str | Preset"):
    """A ``PresetParameters`` torch module for a preset (name, JSON path or Preset)."""
    global _PRESET_PARAMETERS_CLASS
    if _PRESET_PARAMETERS_CLASS is None:
        _PRESET_PARAMETERS_CLASS = _build_parameter_module()
    return _PRESET_PARAMETERS_CLASS(load_preset(preset))
