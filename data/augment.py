"""Data augmentation of the Music Transformer paper: transposition and time stretch.

Huang et al. (2019) sample a transposition from {-3, ..., +3} semitones and a time stretch from
{0.95, 0.975, 1.0, 1.025, 1.05}. Both act on the Score before tokenization, so they are exact
for every scheme: transposition moves the pitch of every pitched note (drums stay, notes pushed
out of MIDI range 0..127 are dropped), and time stretch scales every tempo (a stretch of 1.05
makes the piece 5 % longer in seconds while keeping its bars and beats, so the beat-based REMI
sees only its tempo change and the seconds-based Event scheme sees longer time shifts).
"""

from __future__ import annotations

import numpy as np
import symusic

SEMITONES: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)
STRETCHES: tuple[float, ...] = (0.95, 0.975, 1.0, 1.025, 1.05)
DEFAULT_QPM = 120.0


def transpose(score: symusic.Score, semitones: int) -> symusic.Score:
    """A copy of ``score`` with pitched notes moved by ``semitones``; out-of-range notes dropped."""
    out = score.copy()
    if semitones == 0:
        return out
    for track in out.tracks:
        if track.is_drum or track.note_num() == 0:
            continue
        arrays = track.notes.numpy()
        pitch = arrays["pitch"].astype(np.int16) + semitones
        keep = (pitch >= 0) & (pitch <= 127)
        track.notes = symusic.Note.from_numpy(
            arrays["time"][keep], arrays["duration"][keep], pitch[keep].astype(np.int8),
            arrays["velocity"][keep], out.ttype,
        )
    return out


def stretch_time(score: symusic.Score, factor: float) -> symusic.Score:
    """A copy of ``score`` lasting ``factor`` times as long in seconds (every tempo divided by it).

    A score without tempo events plays at the MIDI default of 120 quarters per minute; it gets an
    explicit tempo of 120 / factor at time 0.
    """
    if factor <= 0:
        raise ValueError(f"time stretch must be positive, got {factor}")
    out = score.copy()
    if factor == 1.0:
        return out
    if len(out.tempos) == 0:
        out.tempos.append(symusic.Tempo(0, DEFAULT_QPM / factor))
        return out
    for tempo in out.tempos:
        tempo.qpm = tempo.qpm / factor
    return out


def augment_score(score: symusic.Score, semitones: int = 0, stretch: float = 1.0) -> symusic.Score:
    """Transpose, then stretch; (0, 1.0) returns an unchanged copy."""
    return stretch_time(transpose(score, semitones), stretch)


def sample_augmentation(rng: np.random.Generator) -> tuple[int, float]:
    """One (semitones, stretch) pair drawn uniformly from the paper's sets."""
    return int(rng.choice(SEMITONES)), float(rng.choice(STRETCHES))
