"""Rendering without the FluidSynth library, for users who pass --allow-fallback.

symusic's built-in SoundFont synthesizer is tried first. Where it cannot run (some symusic
builds cannot hand their audio buffer to NumPy), a plain additive synthesizer plays each note
as a few decaying harmonics, enough to hear the notes and their timing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

HARMONIC_AMPLITUDES = np.array([1.0, 0.5, 0.3, 0.2, 0.1], dtype=np.float32)
RELEASE_SECONDS = 0.15


def render_fallback(score_seconds, soundfont: Path, sample_rate: int, tail: float) -> np.ndarray:
    """(frames, 2) float32 audio of a Score in seconds, lasting until its end plus ``tail``."""
    total = int(np.ceil((max(float(score_seconds.end()), 0.0) + max(tail, 0.0)) * sample_rate))
    audio = _render_symusic(score_seconds, soundfont, sample_rate)
    if audio is None:
        warnings.warn("symusic's synthesizer is unavailable here; using the additive fallback synthesizer",
                      RuntimeWarning, stacklevel=3)
        audio = render_additive(score_seconds, sample_rate, total)
    out = np.zeros((total, 2), dtype=np.float32)
    frames = min(total, len(audio))
    out[:frames] = audio[:frames]
    return out


def _render_symusic(score_seconds, soundfont: Path, sample_rate: int) -> np.ndarray | None:
    try:
        from symusic import Synthesizer

        buffer = Synthesizer(str(soundfont), sample_rate, 0).render(score_seconds, True)
    except Exception:
        return None
    buffer = np.asarray(buffer, dtype=np.float32)
    return buffer.T if buffer.shape[0] == 2 and buffer.shape[1] != 2 else buffer


def render_additive(score_seconds, sample_rate: int, total_frames: int) -> np.ndarray:
    """Each note as decaying harmonics with a short attack and release; velocity sets the level."""
    mono = np.zeros(total_frames, dtype=np.float32)
    for track in score_seconds.tracks:
        notes = track.notes.numpy()
        columns = (notes["time"], notes["duration"], notes["pitch"], notes["velocity"])
        for start, duration, pitch, velocity in zip(*columns):
            first = int(round(float(start) * sample_rate))
            length = int((max(float(duration), 0.01) + RELEASE_SECONDS) * sample_rate)
            length = min(length, total_frames - first)
            if length <= 0:
                continue
            t = np.arange(length, dtype=np.float32) / sample_rate
            frequency = 440.0 * 2.0 ** ((int(pitch) - 69) / 12.0)
            wave = np.zeros(length, dtype=np.float32)
            for k, amplitude in enumerate(HARMONIC_AMPLITUDES, start=1):
                if k * frequency < sample_rate / 2:
                    wave += amplitude * np.sin(2 * np.pi * k * frequency * t, dtype=np.float32)
            envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t * 1.5)
            release_from = max(float(duration), 0.01)
            envelope *= np.clip(1.0 - (t - release_from) / RELEASE_SECONDS, 0.0, 1.0)
            mono[first:first + length] += (int(velocity) / 127.0) * 0.2 * wave * envelope
    return np.stack([mono, mono], axis=1)
