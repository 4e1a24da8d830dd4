"""Music-theory statistics of generated music, over ``symusic.Score``.

The MusPy statistics in :mod:`cadenza.data.metrics` describe pitch and onset histograms; they
stay close to Bach's even when a continuation has fallen apart. The statistics here look at what
a composer hears: broken passages, the key, voice leading between chords, cadences, and how an
infill or accompaniment fits the music it was given.

Conventions:

- A **beat** is a quarter note (times come from the score's ticks and ``ticks_per_quarter``,
  so a score must carry its musical timing; see :func:`cadenza.data.context.restore_context`
  for model outputs). Drum tracks are ignored.
- An **instant** is an onset time: onsets closer than ``ONSET_TOLERANCE`` beats form one instant
  (generated Event music puts the notes of a chord at the same 10 ms step, but a prompt tempo
  that is not 120 qpm turns 10 ms into an irrational fraction of a beat).
- The **chord** at an instant is every note sounding at it: started at or before it, ending after it.
- **Parts** are the pitched tracks that hold notes. With two or more, voice ``k`` of a chord is
  part ``k``'s (highest) sounding note; with one, the voices are the chord's notes by pitch order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import symusic

ONSET_TOLERANCE = 1 / 32          # beats; onsets closer than this are one instant
DISSONANT_INTERVALS = (1, 2, 6, 10, 11)  # minor/major 2nds, the tritone, minor/major 7ths (mod 12)
PERFECT_INTERVALS = (0, 7)        # unison/octave and fifth (mod 12)

# Key profiles (major, minor), tonic first. music21's default key analysis ('key') uses Aarden-Essen.
KEY_PROFILES = {
    "aarden": (
        (17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624, 8.15494,
         0.232998, 4.95122),
        (18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621, 1.93186,
         7.37619, 1.75623),
    ),
    "krumhansl": (
        (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
        (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
    ),
}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


# -- notes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Notes:
    """Pitched notes as arrays sorted by (start, pitch): times in beats (or seconds), part index."""

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    part: np.ndarray
    parts: int

    def __len__(self) -> int:
        return len(self.start)


def notes_of(score: symusic.Score, unit: str = "beat") -> Notes:
    """The pitched notes of ``score`` in beats (``unit="beat"``) or seconds (``unit="second"``)."""
    if unit == "second":
        timed, scale = score.to("second"), 1.0
    elif unit == "beat":
        timed, scale = score, 1.0 / score.ticks_per_quarter
    else:
        raise ValueError(f"unit must be 'beat' or 'second', not {unit!r}")
    starts, ends, pitches, parts = [], [], [], []
    for track in timed.tracks:
        if track.is_drum or not track.notes:
            continue
        arr = track.notes.numpy()
        start = arr["time"].astype(np.float64) * scale
        starts.append(start)
        ends.append(start + arr["duration"].astype(np.float64) * scale)
        pitches.append(arr["pitch"].astype(np.int64))
        parts.append(np.full(len(start), len(parts), np.int64))
    if not starts:
        empty = np.zeros(0)
        return Notes(empty, empty, empty.astype(np.int64), empty.astype(np.int64), 0)
    start, end, pitch, part = (np.concatenate(x) for x in (starts, ends, pitches, parts))
    order = np.lexsort((pitch, start))
    return Notes(start[order], end[order], pitch[order], part[order], len(starts))


def instants(notes: Notes, tolerance: float = ONSET_TOLERANCE) -> np.ndarray:
    """Onset instants: the first onset of each run of onsets less than ``tolerance`` apart."""
    if len(notes) == 0:
        return np.zeros(0)
    onsets = np.unique(notes.start)
    first = np.concatenate([[True], np.diff(onsets) >= tolerance])
    return onsets[first]


def sounding(notes: Notes, times: np.ndarray, tolerance: float = ONSET_TOLERANCE) -> np.ndarray:
    """(instants, notes) bool matrix: note j sounds at instant i (an onset within ``tolerance``
    after the instant counts as sounding at it)."""
    times = np.asarray(times, np.float64)[:, None]
    return (notes.start[None] < times + tolerance) & (notes.end[None] > times + tolerance)


# -- broken passages ------------------------------------------------------------------------------
def broken_passage(score: symusic.Score, *, max_held_beats: float = 8.0, max_sounding: int = 8,
                   min_on_grid: float = 0.8, grid_per_beat: int = 4, grid_tolerance: float = 0.1) -> dict:
    """Whether a piece has a broken passage, and why.

    Broken: a note held longer than ``max_held_beats`` (``held``), more than ``max_sounding``
    notes sounding at one instant (``stacked``), or fewer than ``min_on_grid`` of the onsets on
    the grid of ``grid_per_beat`` steps per beat (sixteenths), within ``grid_tolerance`` of a
    step (``off_grid``). An empty piece is not broken.
    """
    notes = notes_of(score)
    if len(notes) == 0:
        return {"longest_beats": 0.0, "most_sounding": 0, "on_grid": math.nan,
                "held": False, "stacked": False, "off_grid": False, "broken": False}
    longest = float((notes.end - notes.start).max())
    most = int(sounding(notes, instants(notes)).sum(axis=1).max())
    steps = notes.start * grid_per_beat
    on_grid = float((np.abs(steps - np.round(steps)) <= grid_tolerance).mean())
    flags = {"held": longest > max_held_beats, "stacked": most > max_sounding, "off_grid": on_grid < min_on_grid}
    return {"longest_beats": longest, "most_sounding": most, "on_grid": on_grid, **flags,
            "broken": any(flags.values())}


# -- key --------------------------------------------------------------------------------------------
class Key(NamedTuple):
    tonic: int          # pitch class, 0 = C
    mode: str           # "major" or "minor"
    correlation: float  # Pearson correlation of the piece's profile with the key's

    def __str__(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"

    def same(self, other: "Key") -> bool:
        return self.tonic == other.tonic and self.mode == other.mode


def pitch_class_durations(score: symusic.Score) -> np.ndarray:
    """Total duration (beats) of each pitch class, C first."""
    notes = notes_of(score)
    return np.bincount(notes.pitch % 12, weights=notes.end - notes.start, minlength=12)


def estimate_key(score: symusic.Score, profile: str = "aarden") -> Key | None:
    """Krumhansl-Schmuckler key finding: the key whose profile (rotated to its tonic) correlates
    best with the piece's duration-weighted pitch-class histogram. ``profile="aarden"`` is what
    music21's ``analyze('key')`` uses; ``"krumhansl"`` is the Krumhansl-Kessler profile.
    None for a piece without pitched notes."""
    histogram = pitch_class_durations(score)
    if histogram.sum() <= 0:
        return None
    best = None
    for mode, weights in zip(("major", "minor"), KEY_PROFILES[profile]):
        weights = np.asarray(weights)
        for tonic in range(12):
            rotated = np.roll(weights, tonic)  # rotated[pc] = weight of pc's degree above the tonic
            if histogram.std() == 0:
                corr = 0.0
            else:
                corr = float(np.corrcoef(histogram, rotated)[0, 1])
            if best is None or corr > best.correlation:
                best = Key(tonic, mode, corr)
    return best


MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALES = (0, 2, 3, 5, 7, 8, 9, 10, 11)  # natural minor with the raised sixth and seventh


def scale_pitch_classes(key: Key) -> np.ndarray:
    """The pitch classes of ``key``'s scale: the major scale, or for a minor key the natural minor
    with the raised sixth and seventh of its melodic and harmonic forms (nine of the twelve)."""
    degrees = MAJOR_SCALE if key.mode == "major" else MINOR_SCALES
    return np.sort((np.asarray(degrees) + key.tonic) % 12)


def pitch_classes_outside_key(score: symusic.Score) -> np.ndarray | None:
    """The pitch classes outside the scale of ``score``'s estimated key (``estimate_key``,
    ``scale_pitch_classes``); None for a score without pitched notes."""
    key = estimate_key(score)
    return None if key is None else np.setdiff1d(np.arange(12), scale_pitch_classes(key))


def music21_key(score: symusic.Score) -> Key | None:
    """music21's key estimate (``Stream.analyze('key')``) of the score's notes, placed directly
    in a music21 stream (no MIDI round trip or quantization)."""
    import music21

    notes = notes_of(score)
    if len(notes) == 0:
        return None
    stream = music21.stream.Stream()
    for start, end, pitch in zip(notes.start, notes.end, notes.pitch):
        note = music21.note.Note(int(pitch))
        note.quarterLength = max(float(end - start), 1 / 64)
        stream.insert(float(start), note)
    found = stream.analyze("key")
    return Key(found.tonic.pitchClass, found.mode, float(found.correlationCoefficient))


def key_kept(prompt: symusic.Score, continuation: symusic.Score, method: str = "aarden") -> bool | None:
    """Whether the continuation's estimated key is the prompt's (same tonic and mode). ``method``
    is a profile of :func:`estimate_key` or ``"music21"``. None when either has no notes."""
    estimate = music21_key if method == "music21" else lambda s: estimate_key(s, method)
    a, b = estimate(prompt), estimate(continuation)
    if a is None or b is None:
        return None
    return a.same(b)


# -- voices, parallels, crossing --------------------------------------------------------------------
def chords(score: symusic.Score) -> list[tuple[float, np.ndarray]]:
    """(instant, voices) of every instant: the voices' pitches, one per part (its highest
    sounding note; -1 where the part is silent) when the piece has parts, else the sounding
    pitches from lowest to highest."""
    notes = notes_of(score)
    times = instants(notes)
    on = sounding(notes, times)
    out = []
    for time, row in zip(times, on):
        if notes.parts >= 2:
            voices = np.full(notes.parts, -1, np.int64)
            np.maximum.at(voices, notes.part[row], notes.pitch[row])
        else:
            voices = np.sort(notes.pitch[row])
        out.append((float(time), voices))
    return out


def _is_full(voices: np.ndarray, count: int) -> bool:
    return len(voices) == count and bool((voices >= 0).all())


def parallels(score: symusic.Score, voices: int = 4) -> dict:
    """Parallel fifths and octaves among changes between consecutive ``voices``-voice chords.

    A change is a pair of consecutive instants whose chords both have exactly ``voices`` voices
    (every part sounding, when the piece has ``voices`` parts) and at least one voice moves. It
    has a parallel when two voices both move and the interval between them is a perfect fifth
    (or an octave/unison) in both chords, counted modulo the octave (so consecutive fifths by
    contrary motion count too). Returns the counts and ``rate`` (NaN without changes)."""
    changes = with_parallels = 0
    previous = None
    for _, current in chords(score):
        if previous is not None and _is_full(previous, voices) and _is_full(current, voices):
            moved = previous != current
            if moved.any():
                changes += 1
                if _has_parallel(previous, current, moved):
                    with_parallels += 1
        previous = current
    return {"changes": changes, "with_parallels": with_parallels,
            "rate": with_parallels / changes if changes else math.nan}


def _has_parallel(before: np.ndarray, after: np.ndarray, moved: np.ndarray) -> bool:
    for i in range(len(before)):
        for j in range(i + 1, len(before)):
            if not (moved[i] and moved[j]):
                continue
            first, second = abs(before[i] - before[j]) % 12, abs(after[i] - after[j]) % 12
            if first == second and first in PERFECT_INTERVALS:
                return True
    return False


def voice_count(score: symusic.Score) -> float:
    """The median number of notes sounding at an instant (4 for a four-part chorale); NaN when empty."""
    notes = notes_of(score)
    if len(notes) == 0:
        return math.nan
    return float(np.median(sounding(notes, instants(notes)).sum(axis=1)))


def voice_crossing_rate(score: symusic.Score) -> float:
    """Fraction of instants where two sounding parts are out of their usual order: a part that
    is higher on average (mean pitch) sounds below a lower one. NaN with fewer than two parts."""
    notes = notes_of(score)
    if notes.parts < 2:
        return math.nan
    mean_pitch = np.array([notes.pitch[notes.part == k].mean() for k in range(notes.parts)])
    rank = np.argsort(np.argsort(-mean_pitch))  # 0 = highest part
    crossed = total = 0
    for _, voices in chords(score):
        present = np.flatnonzero(voices >= 0)
        if len(present) < 2:
            continue
        total += 1
        order = present[np.argsort(rank[present])]            # parts from highest to lowest
        crossed += bool((np.diff(voices[order]) > 0).any())   # a lower part above the one over it
    return crossed / total if total else math.nan


# -- cadences and density -----------------------------------------------------------------------------
def bar_beats(score: symusic.Score) -> float:
    """Beats per bar under the first time signature (4 when there is none)."""
    if score.time_signatures:
        ts = score.time_signatures[0]
        return 4 * ts.numerator / ts.denominator
    return 4.0


def held_chords(score: symusic.Score, min_beats: float = 2.0, min_notes: int = 3) -> list[float]:
    """Instants that start a held (cadential) chord: at least ``min_notes`` notes sound there and
    keep sounding for ``min_beats`` beats, and no note starts before those beats are over (a
    chorale's fermata chord, a final half note; a moving voice inside the chord breaks it)."""
    notes = notes_of(score)
    times = instants(notes)
    out = []
    for i, time in enumerate(times):
        until = time + min_beats
        if i + 1 < len(times) and times[i + 1] < until - ONSET_TOLERANCE:
            continue
        held = (notes.start < time + ONSET_TOLERANCE) & (notes.end >= until - ONSET_TOLERANCE)
        if held.sum() >= min_notes:
            out.append(float(time))
    return out


def root_position_triad(pitches) -> bool:
    """Whether the pitches make a consonant chord a phrase can end on: a major or minor triad
    with its root in the bass, the fifth possibly left out (as cadences often leave it), any
    doublings. Fewer than two pitch classes is no chord."""
    pitches = sorted(int(p) for p in pitches)
    if not pitches:
        return False
    root = pitches[0] % 12
    classes = {(p - root) % 12 for p in pitches}
    return 0 in classes and len(classes & {3, 4}) == 1 and classes <= {0, 3, 4, 7}


def may_become_triad(pitches) -> bool:
    """Whether notes struck bass first (``pitches[0]`` the lowest) can still grow into a
    :func:`root_position_triad` as more notes join them from above: only its root, third and
    fifth over the first, not both thirds. No pitches: True."""
    pitches = [int(p) for p in pitches]
    if not pitches:
        return True
    classes = {(p - pitches[0]) % 12 for p in pitches}
    return min(pitches) == pitches[0] and classes <= {0, 3, 4, 7} and not {3, 4} <= classes


def held_triad_share(score: symusic.Score, **held) -> float:
    """Share of the held chords (:func:`held_chords`) whose sounding notes make a
    :func:`root_position_triad`: a cadence is a held consonance, a held dissonance is not one.
    NaN without held chords."""
    times = held_chords(score, **held)
    if not times:
        return math.nan
    notes = notes_of(score)
    triads = 0
    for time in times:
        on = (notes.start < time + ONSET_TOLERANCE) & (notes.end > time + ONSET_TOLERANCE)
        triads += root_position_triad(notes.pitch[on])
    return triads / len(times)


def span_beats(score: symusic.Score) -> float:
    """Beats from the first onset to the last note's end (0 when empty)."""
    notes = notes_of(score)
    return float(notes.end.max() - notes.start.min()) if len(notes) else 0.0


def cadences_per_8_bars(score: symusic.Score, span: float | None = None, **held) -> float:
    """Held chords (see :func:`held_chords`) per 8 bars of ``span`` beats (default: the piece's
    span from its first onset to its last note's end). NaN for an empty span."""
    span = span_beats(score) if span is None else span
    if span <= 0:
        return math.nan
    return len(held_chords(score, **held)) / (span / bar_beats(score) / 8)


def note_density(score: symusic.Score, span: float | None = None) -> float:
    """Notes per beat over ``span`` beats (default: the piece's span)."""
    span = span_beats(score) if span is None else span
    return score.note_num() / span if span > 0 else math.nan


# -- infill and accompaniment ----------------------------------------------------------------------------
def top_voice(score: symusic.Score, unit: str = "second") -> tuple[np.ndarray, np.ndarray]:
    """(instants, highest sounding pitch at each), in seconds by default."""
    notes = notes_of(score, unit)
    tolerance = ONSET_TOLERANCE if unit == "beat" else 0.02
    times = instants(notes, tolerance)
    on = sounding(notes, times, tolerance)
    top = np.where(on, notes.pitch[None], -1).max(axis=1) if len(times) else np.zeros(0, np.int64)
    keep = top >= 0
    return times[keep], top[keep]


def span_joins(score: symusic.Score, start: float, end: float) -> dict[str, float]:
    """Top-voice leaps (semitones) where a regenerated span [start, end) seconds meets the music
    around it: ``entry`` from the last instant before ``start`` to the first inside the span,
    ``exit`` from the last instant inside the span to the first at or after ``end``. NaN where
    one side has no music."""
    times, top = top_voice(score)

    def leap(before: np.ndarray, after: np.ndarray) -> float:
        if not before.any() or not after.any():
            return math.nan
        return float(abs(top[np.flatnonzero(after)[0]] - top[np.flatnonzero(before)[-1]]))

    inside = (times >= start) & (times < end)
    return {"entry": leap(times < start, inside), "exit": leap(inside, times >= end)}


def against_melody(generated: symusic.Score, melody: symusic.Score) -> dict[str, float]:
    """How generated notes sit against a kept melody, at each generated onset where a melody note
    sounds: ``above`` is the fraction of them higher than the melody, ``dissonant`` the fraction
    forming a 2nd, tritone or 7th with it (any octave). Times are compared in seconds."""
    gen, mel = notes_of(generated, "second"), notes_of(melody, "second")
    if len(gen) == 0 or len(mel) == 0:
        return {"notes": 0, "above": math.nan, "dissonant": math.nan}
    on = sounding(mel, gen.start, 0.02)
    has = on.any(axis=1)
    melody_pitch = np.where(on, mel.pitch[None], -1).max(axis=1)[has]
    pitch = gen.pitch[has]
    if len(pitch) == 0:
        return {"notes": 0, "above": math.nan, "dissonant": math.nan}
    return {"notes": int(len(pitch)), "above": float((pitch > melody_pitch).mean()),
            "dissonant": float(np.isin(np.abs(pitch - melody_pitch) % 12, DISSONANT_INTERVALS).mean())}


# -- a continuation against its prompt ---------------------------------------------------------------------
def clip_beats(score: symusic.Score, start: float, end: float | None = None) -> symusic.Score:
    """The notes of ``score`` that start in [start, end) beats (ends kept), other events as they are."""
    tpq = score.ticks_per_quarter
    stop = int(round(end * tpq)) if end is not None else max(score.end(), 0) + 1
    return score.clip(int(round(start * tpq)), stop, clip_end=False)


def continuation_statistics(prompt: symusic.Score, continuation: symusic.Score, start: float | None = None,
                            end: float | None = None, key_method: str = "aarden", **broken) -> dict[str, float]:
    """The music-theory statistics of the new music in ``continuation``: the notes starting in
    [start, end) beats (default: from the prompt's last note end to the end), with the prompt as
    reference: ``broken`` (0/1), ``key_kept`` (0/1, by ``key_method``), ``parallels`` (rate; and
    its ``changes`` and ``with_parallels`` for pooling), ``cadences_per_8_bars``, ``held_triads``
    (share of those held chords that are root-position triads), ``density_ratio``
    (notes per beat against the prompt's), ``voice_count`` and ``voice_crossing``."""
    if start is None:
        prompt_notes = notes_of(prompt)
        start = float(prompt_notes.end.max()) if len(prompt_notes) else 0.0
    new = clip_beats(continuation, start, end)
    span = end - start if end is not None else span_beats(new)
    kept = key_kept(prompt, new, key_method)
    par = parallels(new)
    prompt_density = note_density(prompt)
    return {
        "broken": float(broken_passage(new, **broken)["broken"]),
        "key_kept": math.nan if kept is None else float(kept),
        "parallels": par["rate"], "changes": par["changes"], "with_parallels": par["with_parallels"],
        "cadences_per_8_bars": cadences_per_8_bars(new, span=span),
        "held_triads": held_triad_share(new),
        "density_ratio": note_density(new, span) / prompt_density if prompt_density else math.nan,
        "voice_count": voice_count(new),
        "voice_crossing": voice_crossing_rate(new),
    }


SUMMARY_STATISTICS = ("broken", "key_kept", "parallels", "cadences_per_8_bars", "density_ratio")


def summarize_continuations(pairs, seconds: float | None = None, **options) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count (NaNs left out) of each of ``SUMMARY_STATISTICS`` over
    (prompt, continuation) pairs, each continuation cut ``seconds`` after its prompt (at the
    prompt's first tempo) when given; ``parallels`` is pooled over all chord changes."""
    rows = []
    for prompt, continuation in pairs:
        prompt_notes = notes_of(prompt)
        start = float(prompt_notes.end.max()) if len(prompt_notes) else 0.0
        qpm = prompt.tempos[0].qpm if len(prompt.tempos) else 120.0
        end = start + seconds * qpm / 60 if seconds is not None else None
        rows.append(continuation_statistics(prompt, continuation, start, end, **options))
    out = {}
    for name in SUMMARY_STATISTICS:
        values = np.array([r[name] for r in rows], float)
        values = values[~np.isnan(values)]
        out[name] = {"mean": float(values.mean()) if len(values) else math.nan,
                     "std": float(values.std()) if len(values) else math.nan, "n": int(len(values))}
    changes = sum(r["changes"] for r in rows)
    out["parallels"]["mean"] = sum(r["with_parallels"] for r in rows) / changes if changes else math.nan
    return out
