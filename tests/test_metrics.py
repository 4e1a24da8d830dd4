"""Music statistics on constructed pieces whose values are known by hand."""

from __future__ import annotations

import collections
import math

import pytest
import symusic

from cadenza.data import metrics

Q = 480  # ticks per quarter


def piece(notes, time_signature=(4, 4), drums=()):
    """notes: (start_quarters, duration_quarters, pitch)."""
    score = symusic.Score(Q)
    score.time_signatures.append(symusic.TimeSignature(0, *time_signature))
    track = symusic.Track("p", 0, False)
    for start, duration, pitch in notes:
        track.notes.append(symusic.Note(int(start * Q), int(duration * Q), pitch, 80))
    score.tracks.append(track)
    if drums:
        drum = symusic.Track("d", 0, True)
        for start, duration, pitch in drums:
            drum.notes.append(symusic.Note(int(start * Q), int(duration * Q), pitch, 80))
        score.tracks.append(drum)
    return score


C_MAJOR_SCALE = piece([(i, 1, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])])


def test_pitch_class_entropy_of_a_scale():
    # C twice, six other classes once: -(1/4 log 1/4 + 6/8 log 1/8) = 0.5 + 2.25
    assert metrics.pitch_class_entropy(C_MAJOR_SCALE) == pytest.approx(2.75)
    assert metrics.pitch_entropy(C_MAJOR_SCALE) == pytest.approx(3.0)  # eight distinct pitches
    assert metrics.pitch_class_entropy(piece([(0, 1, 60), (1, 1, 72)])) == 0.0


def test_scale_consistency():
    assert metrics.scale_consistency(C_MAJOR_SCALE) == 1.0
    chromatic = piece([(i, 1, 60 + i) for i in range(12)])
    assert metrics.scale_consistency(chromatic) == pytest.approx(7 / 12)
    with_f_sharp = piece([(i, 1, p) for i, p in enumerate([60, 62, 64, 65, 66, 67, 69, 71, 72])])
    assert metrics.scale_consistency(with_f_sharp) == pytest.approx(8 / 9)  # C or G major: 8 of 9
    assert math.isnan(metrics.scale_consistency(piece([], drums=[(0, 1, 36)])))  # drums are ignored


def test_polyphony_counts_only_sounding_steps():
    # a triad for one beat, a rest of one beat, one note for one beat: (3 + 1) / 2
    score = piece([(0, 1, 60), (0, 1, 64), (0, 1, 67), (2, 1, 72)])
    assert metrics.polyphony(score) == pytest.approx(2.0)
    assert metrics.polyphony_rate(score, threshold=2) == pytest.approx(1 / 3)
    assert metrics.polyphony(C_MAJOR_SCALE) == pytest.approx(1.0)


def test_empty_beat_rate():
    score = piece([(0, 1, 60), (3, 1, 62)])  # beats 1 and 2 of 4 are silent
    assert metrics.empty_beat_rate(score) == pytest.approx(0.5)
    held = piece([(0, 2.5, 60), (3, 1, 62)])  # the first note sounds into beat 2, so no beat is empty
    assert metrics.empty_beat_rate(held) == pytest.approx(0.0)
    assert metrics.empty_beat_rate(C_MAJOR_SCALE) == 0.0


def test_groove_consistency():
    same = piece([(m * 4 + b, 1, 60) for m in range(3) for b in range(4)])
    assert metrics.groove_consistency(same) == pytest.approx(1.0)
    # measure 1: onsets on all four quarters; measure 2: only the downbeat -> 3 of 48 steps differ
    varied = piece([(b, 1, 60) for b in range(4)] + [(4, 4, 60)])
    assert metrics.groove_consistency(varied) == pytest.approx(1 - 3 / 48)
    # 3/4: 36 steps per measure
    waltz = piece([(0, 1, 60), (1, 1, 60), (2, 1, 60), (3, 3, 60)], time_signature=(3, 4))
    assert metrics.groove_consistency(waltz) == pytest.approx(1 - 2 / 36)


def test_music_statistics_and_summary_on_chorales(bach_scores):
    stats = metrics.music_statistics(bach_scores[0])
    assert set(stats) == {"pitch_class_entropy", "pitch_entropy", "scale_consistency", "polyphony",
                          "polyphony_rate", "empty_beat_rate", "groove_consistency"}
    assert 2.5 < stats["pitch_class_entropy"] < 3.6  # tonal: well below log2(12) = 3.58
    assert stats["scale_consistency"] > 0.85
    assert 3.0 < stats["polyphony"] <= 4.5  # four voices
    summary = metrics.summarize(bach_scores[:6])
    assert summary["polyphony"]["n"] == 6 and summary["polyphony"]["std"] >= 0


# -- against the definitions, and where muspy's code differs ----------------------------------------
def _random_piece(seed, n=30):
    import numpy as np

    rng = np.random.default_rng(seed)
    starts = np.sort(rng.integers(0, 64, n)) / 4          # sixteenth grid, 16 bars at most
    return piece([(s, int(rng.integers(1, 9)) / 4, int(rng.integers(48, 84))) for s in starts])


def _empty_beats_by_definition(score):
    """Beats (quarters up to the last note's end) in which no note sounds, walked beat by beat."""
    notes = [(n.time / Q, (n.time + n.duration) / Q) for t in score.tracks for n in t.notes]
    beats = math.ceil(max(end for _, end in notes))
    empty = sum(not any(start < b + 1 and end > b for start, end in notes) for b in range(beats))
    return empty / beats


def _groove_by_definition(score, steps_per_quarter=12):
    """1 - mean Hamming distance of neighbouring measures' onset vectors / steps per measure."""
    steps = 4 * steps_per_quarter
    onsets = {round(n.time / Q * steps_per_quarter) for t in score.tracks for n in t.notes}
    measures = max(onsets) // steps + 1
    vectors = [[(m * steps + i) in onsets for i in range(steps)] for m in range(measures)]
    distances = [sum(a != b for a, b in zip(vectors[m], vectors[m + 1])) for m in range(measures - 1)]
    return 1 - sum(distances) / len(distances) / steps


@pytest.mark.parametrize("seed", range(5))
def test_ours_match_the_definitions_on_random_pieces(seed):
    score = _random_piece(seed)
    assert metrics.empty_beat_rate(score) == pytest.approx(_empty_beats_by_definition(score))
    assert metrics.groove_consistency(score) == pytest.approx(_groove_by_definition(score))
    pitches = [n.pitch for t in score.tracks for n in t.notes]
    counts = collections.Counter(p % 12 for p in pitches)
    entropy = -sum(c / len(pitches) * math.log2(c / len(pitches)) for c in counts.values())
    assert metrics.pitch_class_entropy(score) == pytest.approx(entropy)


def test_where_muspy_differs():
    # muspy fills beats start//res .. end//res inclusive: a quarter note ending on beat 1 fills beat 1 too
    score = piece([(0, 1, 60), (2, 1, 62)])
    assert metrics.empty_beat_rate(score) == pytest.approx(1 / 3)     # beat 1 is silent
    res, length = Q, 3 * Q
    filled = {b for t in score.tracks for n in t.notes for b in range(n.time // res, (n.time + n.duration) // res + 1)}
    assert 1 - len(filled) / (length // res + 1) == 0.0              # muspy's rule: nothing is empty
    # groove consistency depends on the grid: one differing onset costs 1/48 at 12 steps per quarter, 1/96 at 24
    varied = piece([(0, 1, 60), (1, 1, 60), (4, 1, 60)])
    assert metrics.groove_consistency(varied, resolution=12) == pytest.approx(1 - 1 / 48)
    assert metrics.groove_consistency(varied, resolution=24) == pytest.approx(1 - 1 / 96)
    # polyphony rate: at least `threshold` pitches (muspy: more than threshold)
    dyad = piece([(0, 1, 60), (0, 1, 64)])
    assert metrics.polyphony_rate(dyad, threshold=2) == 1.0
