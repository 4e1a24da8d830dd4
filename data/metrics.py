"""Statistics of music as MusPy defines them, over ``symusic.Score``.

Used to compare generated music with a corpus (the tokenization study) and to describe
corpora. Drum tracks are ignored by the pitch metrics, as in MusPy. Times are measured on
a grid of ``resolution`` steps per quarter note. These statistics describe histograms; the
music-theory statistics that tell a broken or off-key continuation from Bach are in
:mod:`cadenza.data.theory`.

Where ours differ from the muspy package's code (``muspy/metrics/metrics.py``):

- ``empty_beat_rate``: muspy marks the beats ``start // resolution`` to ``end // resolution``
  *inclusive* as filled, so a note ending exactly on a beat also fills the beat after it, and it
  counts ``length // resolution + 1`` beats (one more beat when the piece ends on a beat). Ours
  fills only the beats a note sounds in and counts the beats up to the last note's end: one
  quarter note, a rest of one beat, one quarter note is 1/3 empty here and 0 in muspy.
- ``groove_consistency``: muspy takes the steps per measure in the Music object's own time
  unit, so the figure depends on its resolution (each differing onset costs 1 / steps per
  measure: 1/96 at 24 per quarter, 1/48 at 12), and counts ``length // measure + 1``
  measures (a trailing empty measure when the piece ends on a barline adds a full pattern's
  distance). Ours uses a fixed grid (``DEFAULT_RESOLUTION``, 12 per quarter) and the measures
  up to the last onset.
- ``polyphony_rate``: muspy counts steps with *more than* ``threshold`` pitches; ours counts
  steps with at least ``threshold`` (two: more than one pitch, as the definition says).
- ``polyphony`` is the same definition on our grid; the entropies and scale consistency are
  the same.
"""

from __future__ import annotations

import math

import numpy as np
import symusic

MAJOR_SCALE = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)  # C major
MINOR_SCALE = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)  # C natural minor
DEFAULT_RESOLUTION = 12  # steps per quarter: sixteenths and triplets both land on the grid


def _note_arrays(score: symusic.Score, resolution: int, pitched_only: bool) -> dict[str, np.ndarray]:
    """start, end (grid steps) and pitch of every note, concatenated over tracks."""
    scale = resolution / score.ticks_per_quarter
    starts, ends, pitches = [], [], []
    for track in score.tracks:
        if not track.notes or (pitched_only and track.is_drum):
            continue
        arr = track.notes.numpy()
        start = np.round(arr["time"] * scale).astype(np.int64)
        starts.append(start)
        ends.append(np.maximum(start + 1, np.round((arr["time"] + arr["duration"]) * scale).astype(np.int64)))
        pitches.append(arr["pitch"].astype(np.int64))
    if not starts:
        empty = np.zeros(0, np.int64)
        return {"start": empty, "end": empty, "pitch": empty}
    return {"start": np.concatenate(starts), "end": np.concatenate(ends), "pitch": np.concatenate(pitches)}


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return math.nan
    prob = counts[counts > 0] / total
    return float(-(prob * np.log2(prob)).sum())


def pitch_class_entropy(score: symusic.Score) -> float:
    """Shannon entropy (bits) of the normalized pitch-class histogram of note onsets."""
    pitches = _note_arrays(score, DEFAULT_RESOLUTION, True)["pitch"]
    return _entropy(np.bincount(pitches % 12, minlength=12).astype(float))


def pitch_entropy(score: symusic.Score) -> float:
    """Shannon entropy (bits) of the normalized pitch histogram."""
    pitches = _note_arrays(score, DEFAULT_RESOLUTION, True)["pitch"]
    return _entropy(np.bincount(pitches, minlength=128).astype(float))


def scale_consistency(score: symusic.Score) -> float:
    """The largest fraction of notes inside one major or natural-minor scale, over all 24 scales."""
    pitches = _note_arrays(score, DEFAULT_RESOLUTION, True)["pitch"]
    if len(pitches) == 0:
        return math.nan
    histogram = np.bincount(pitches % 12, minlength=12)
    best = 0
    for scale in (MAJOR_SCALE, MINOR_SCALE):
        for root in range(12):
            best = max(best, int(histogram[np.roll(scale, root)].sum()))
    return best / len(pitches)


def _pianoroll_counts(notes: dict[str, np.ndarray]) -> np.ndarray:
    """Number of sounding pitches at each grid step (distinct pitches; unisons count once)."""
    if len(notes["start"]) == 0:
        return np.zeros(0, np.int64)
    length = int(notes["end"].max())
    roll = np.zeros((length + 1, 128), np.int64)
    np.add.at(roll, (notes["start"], notes["pitch"]), 1)
    np.add.at(roll, (notes["end"], notes["pitch"]), -1)
    return (np.cumsum(roll, axis=0)[:length] > 0).sum(axis=1)


def polyphony(score: symusic.Score, resolution: int = DEFAULT_RESOLUTION) -> float:
    """Mean number of pitches sounding together, over the steps where at least one sounds."""
    counts = _pianoroll_counts(_note_arrays(score, resolution, True))
    sounding = counts[counts > 0]
    return float(sounding.mean()) if len(sounding) else math.nan


def polyphony_rate(score: symusic.Score, threshold: int = 2, resolution: int = DEFAULT_RESOLUTION) -> float:
    """Fraction of steps where at least ``threshold`` pitches sound together."""
    counts = _pianoroll_counts(_note_arrays(score, resolution, True))
    return float((counts >= threshold).mean()) if len(counts) else math.nan


def empty_beat_rate(score: symusic.Score) -> float:
    """Fraction of beats (quarter notes, up to the last note's end) in which no note sounds."""
    notes = _note_arrays(score, 48, False)
    if len(notes["start"]) == 0:
        return math.nan
    beat_start = notes["start"] // 48
    beat_end = (notes["end"] - 1) // 48  # the beat holding the note's last step
    n_beats = int(beat_end.max()) + 1
    covered = np.zeros(n_beats + 1, np.int64)
    np.add.at(covered, beat_start, 1)
    np.add.at(covered, beat_end + 1, -1)
    return float((np.cumsum(covered)[:n_beats] == 0).mean())


def measure_steps(score: symusic.Score, resolution: int = DEFAULT_RESOLUTION) -> int:
    """Grid steps per measure under the first time signature (4/4 when there is none)."""
    if score.time_signatures:
        ts = score.time_signatures[0]
        return int(round(resolution * 4 * ts.numerator / ts.denominator))
    return 4 * resolution


def groove_consistency(score: symusic.Score, resolution: int = DEFAULT_RESOLUTION) -> float:
    """1 − mean Hamming distance between the onset patterns of neighbouring measures,
    normalized by the steps per measure (the first time signature is assumed throughout)."""
    notes = _note_arrays(score, resolution, False)
    if len(notes["start"]) == 0:
        return math.nan
    steps = measure_steps(score, resolution)
    measure, position = np.divmod(notes["start"], steps)
    n_measures = int(measure.max()) + 1
    if n_measures < 2:
        return math.nan
    patterns = np.zeros((n_measures, steps), bool)
    patterns[measure, position] = True
    distances = (patterns[1:] != patterns[:-1]).sum(axis=1)
    return float(1 - distances.mean() / steps)


def music_statistics(score: symusic.Score) -> dict[str, float]:
    """All statistics of one piece, by name."""
    return {
        "pitch_class_entropy": pitch_class_entropy(score),
        "pitch_entropy": pitch_entropy(score),
        "scale_consistency": scale_consistency(score),
        "polyphony": polyphony(score),
        "polyphony_rate": polyphony_rate(score),
        "empty_beat_rate": empty_beat_rate(score),
        "groove_consistency": groove_consistency(score),
    }


def summarize(scores) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each statistic over several pieces (NaNs left out)."""
    rows = [music_statistics(s) for s in scores]
    out = {}
    for name in rows[0] if rows else []:
        values = np.array([r[name] for r in rows], float)
        values = values[~np.isnan(values)]
        out[name] = {"mean": float(values.mean()) if len(values) else math.nan,
                     "std": float(values.std()) if len(values) else math.nan, "n": int(len(values))}
    return out
