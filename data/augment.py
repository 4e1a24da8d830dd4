"""Data augmentation of the Music Transformer paper: transposition and time stretch.

Huang et al. (2019) sample a transposition from {-3, ..., +3} semitones and a time stretch from
{0.95, 0.975, 1.0, 1.025, 1.05}. Both act on the Score before tokenization, so they are exact
for every scheme: transposition moves the pitch of every pitched note (drums stay, notes pushed
out of MIDI range 0..127 are dropped), and time stretch scales every tempo (a stretch of 1.05
makes the piece 5 % longer in seconds while keeping its bars and beats, so the beat-based REMI
sees only its tempo change and the seconds-based Event scheme sees longer time shifts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # symusic is imported where a Score is built, so importing datasets stays light
    import symusic

SEMITONES: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)
STRETCHES: tuple[float, ...] = (0.95, 0.975, 1.0, 1.025, 1.05)
DEFAULT_QPM = 120.0


def transpose(score: symusic.Score, semitones: int) -> symusic.Score:
    """A copy of ``score`` with pitched notes moved by ``semitones``; out-of-range notes dropped."""
    import symusic

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
    import symusic

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


def sample_augmentation(rng: np.random.Generator, semitones: tuple[int, ...] = SEMITONES) -> tuple[int, float]:
    """One (semitones, stretch) pair drawn uniformly from the paper's sets (or from ``semitones``,
    e.g. ``ALL_KEYS``)."""
    return int(rng.choice(semitones)), float(rng.choice(STRETCHES))


# -- all twelve keys, within range ----------------------------------------------------------------
ALL_KEYS: tuple[int, ...] = tuple(range(-5, 7))  # each of the twelve keys by its smallest shift
PIANO_RANGE: tuple[int, int] = (21, 108)


def pitch_extent(score: symusic.Score) -> tuple[int, int] | None:
    """(lowest, highest) pitch of the pitched notes; None without any."""
    pitches = [t.notes.numpy()["pitch"] for t in score.tracks if not t.is_drum and t.note_num()]
    if not pitches:
        return None
    joined = np.concatenate(pitches)
    return int(joined.min()), int(joined.max())


def shift_within(semitones: int, lowest: int, highest: int, low: int = PIANO_RANGE[0],
                 high: int = PIANO_RANGE[1]) -> int | None:
    """The shift into the key ``semitones`` away, in the octave nearest to ``semitones`` (the
    lower on a tie), that keeps pitches ``lowest..highest`` inside ``low..high``; None when no
    octave fits."""
    candidates = sorted((semitones + 12 * k for k in range(-10, 11)), key=lambda s: (abs(s - semitones), s))
    return next((s for s in candidates if lowest + s >= low and highest + s <= high), None)


# What ``RandomCrops`` draws a transposition from: the paper's +-3 semitones, or every key.
TRANSPOSITIONS: dict[str, tuple[int, ...]] = {"paper": SEMITONES, "keys": ALL_KEYS}


def key_transpositions(score: symusic.Score, low: int = PIANO_RANGE[0], high: int = PIANO_RANGE[1]) -> list[int]:
    """One shift per key of ``ALL_KEYS`` that moves ``score`` to that key without a note leaving
    ``low..high`` (the octave nearest to the smallest shift); keys no octave fits are left out."""
    extent = pitch_extent(score)
    if extent is None:
        return [0]
    shifts = (shift_within(k, *extent, low, high) for k in ALL_KEYS)
    return [s for s in shifts if s is not None]


def transpose_within(score: symusic.Score, semitones: int, low: int = PIANO_RANGE[0],
                     high: int = PIANO_RANGE[1]) -> symusic.Score:
    """``score`` moved to the key ``semitones`` away, in the octave that keeps every note inside
    ``low..high`` (see ``shift_within``); unmoved when no octave fits."""
    extent = pitch_extent(score)
    shift = shift_within(semitones, *extent, low, high) if extent is not None else 0
    return transpose(score, 0 if shift is None else shift)


# -- exactly on ids -------------------------------------------------------------------------------
def event_augment_ids(tokenizer, ids, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
    """Event ids transposed and time-stretched exactly, without a Score: the Event tokenizer's own
    ``augment_ids`` (every scheme's tokenizer augments its ids; this name stays for callers)."""
    return tokenizer.augment_ids(ids, semitones, stretch)
