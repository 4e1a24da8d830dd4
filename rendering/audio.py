"""Audio arrays in and out: WAV/FLAC files written atomically, loading, resampling, peak normalization.

Audio inside cadenza is float32 in [-1, 1], shaped (frames,) for mono or (frames, channels).
"""

from __future__ import annotations

import io
import os
from math import gcd
from pathlib import Path

import numpy as np

from cadenza.data.atomic import atomic_path
from cadenza.data.errors import CadenzaError, MusicFileError

AUDIO_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
SYNTHS = ("fluidsynth", "ddsp")
DEFAULT_RATES = {"fluidsynth": 44100, "ddsp": 16000}


def _format_for(path: Path) -> tuple[str, str]:
    try:
        return AUDIO_FORMATS[path.suffix.lower()]
    except KeyError:
        raise CadenzaError(f"{path}: cannot write audio as {path.suffix or '(no extension)'}; "
                           "use .wav or .flac") from None


def _as_frames(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must be (frames,) or (frames, channels), got shape {audio.shape}")
    return np.clip(audio, -1.0, 1.0)


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write float audio to WAV or FLAC (chosen by suffix) through a temporary file and a rename.

    Samples are clipped to [-1, 1] and stored as 16-bit PCM unless ``subtype`` says otherwise
    (for example "PCM_24", or "FLOAT" for WAV).
    """
    import soundfile

    path = Path(path)
    fmt, default_subtype = _format_for(path)
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), _as_frames(audio), int(sample_rate), subtype=subtype or default_subtype, format=fmt)
    return path


def audio_bytes(audio: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    """Encode audio as an in-memory WAV or FLAC file (for data URIs in HTML pages)."""
    import soundfile

    container, subtype = AUDIO_FORMATS[f".{fmt.lower().lstrip('.')}"]
    buffer = io.BytesIO()
    soundfile.write(buffer, _as_frames(audio), int(sample_rate), subtype=subtype, format=container)
    return buffer.getvalue()


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read an audio file as float32; optionally mix down to mono and resample to ``sample_rate``."""
    import soundfile

    path = Path(path)
    if not path.exists():
        raise MusicFileError(path, "no such file")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise MusicFileError(path, f"cannot read as audio ({str(exc).strip().splitlines()[0][:160]})") from None
    audio = audio.mean(axis=1) if mono else audio
    if sample_rate is not None and sample_rate != rate:
        audio, rate = resample(audio, rate, sample_rate), sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling along the first (time) axis."""
    from scipy.signal import resample_poly

    if orig_rate == target_rate:
        return np.asarray(audio, dtype=np.float32)
    common = gcd(int(orig_rate), int(target_rate))
    out = resample_poly(audio, int(target_rate) // common, int(orig_rate) // common, axis=0)
    return out.astype(np.float32)


def peak_normalize(audio: np.ndarray, headroom_db: float = 1.0) -> np.ndarray:
    """Scale so the loudest sample sits ``headroom_db`` below full scale; silence stays silence."""
    audio = np.asarray(audio, dtype=np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0.0:
        return audio
    return audio * np.float32(10.0 ** (-headroom_db / 20.0) / peak)


def synthesize(score, synth: str = "fluidsynth", *, sample_rate: int | None = None, stereo: bool = False,
               soundfont: str | os.PathLike | None = None, preset=None, tail: float = 1.0,
               allow_fallback: bool = False) -> tuple[np.ndarray, int]:
    """(audio, sample rate) of a Score from FluidSynth (a SoundFont) or the DDSP synth (a preset).

    The sample rate defaults to the synthesizer's own (44.1 kHz FluidSynth, 16 kHz DDSP). Each
    synthesizer takes only its own timbre option: a SoundFont for FluidSynth, a preset for DDSP.
    """
    if synth not in SYNTHS:
        raise CadenzaError(f"unknown synthesizer {synth!r}; choose {' or '.join(SYNTHS)}")
    if preset is not None and synth != "ddsp":
        raise CadenzaError("a preset applies to the DDSP synth; FluidSynth takes a SoundFont")
    if soundfont is not None and synth != "fluidsynth":
        raise CadenzaError("a SoundFont applies to FluidSynth; the DDSP synth takes a preset")
    rate = int(sample_rate or DEFAULT_RATES[synth])
    if synth == "ddsp":
        from . import ddsp

        audio = ddsp.render(score, preset=preset or "strings", sample_rate=rate)
        return (np.stack([audio, audio], axis=1) if stereo else audio), rate
    from .fluidsynth import render

    return render(score, sample_rate=rate, soundfont=soundfont, stereo=stereo, tail=tail,
                  allow_fallback=allow_fallback), rate
