"""Transposition into all twelve keys, each in an octave that keeps the piece inside its range."""

from __future__ import annotations

import numpy as np
import symusic

from cadenza.data.augment import (ALL_KEYS, key_transpositions, pitch_extent, sample_augmentation, shift_within,
                                  transpose_within)


def score_of(pitches):
    score = symusic.Score(480)
    track = symusic.Track("p", 0, False)
    for i, pitch in enumerate(pitches):
        track.notes.append(symusic.Note(i * 480, 480, pitch, 80))
    score.tracks.append(track)
    drums = symusic.Track("d", 0, True)
    drums.notes.append(symusic.Note(0, 480, 127, 80))  # drums neither move nor count
    score.tracks.append(drums)
    return score


def test_all_keys_are_the_twelve_pitch_classes_by_their_smallest_shift():
    assert sorted(k % 12 for k in ALL_KEYS) == list(range(12))
    assert max(abs(k) for k in ALL_KEYS) == 6


def test_shift_within_picks_the_nearest_octave_that_fits():
    assert shift_within(5, 48, 72) == 5                       # fits as it is
    assert shift_within(5, 60, 105) == -7                     # up a fourth would leave 108: down a fifth
    assert shift_within(-5, 22, 60) == 7                      # down would leave 21: up
    assert shift_within(3, 21, 108) is None                   # the full range: only 0 fits
    assert shift_within(0, 21, 108) == 0
    assert shift_within(6, 50, 70, low=40, high=80) == 6 and shift_within(6, 50, 76, low=40, high=80) == -6


def test_key_transpositions_reach_every_key_inside_the_range():
    tune = score_of([60, 64, 67, 98, 104])                    # up to G#7; the piano stops at C8 (108)
    shifts = key_transpositions(tune)
    assert shifts == [-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, -7, -6]  # a fourth or a tritone up: an octave lower
    assert all(21 <= 60 + s and 104 + s <= 108 for s in shifts)
    assert key_transpositions(score_of([21, 108])) == [0]     # the whole keyboard: only its own key


def test_transpose_within_moves_pitched_notes_only():
    tune = score_of([60, 64, 67, 98, 104])
    moved = transpose_within(tune, 6)                          # a tritone up leaves the range: down instead
    assert [n.pitch for n in moved.tracks[0].notes] == [54, 58, 61, 92, 98]
    assert [n.pitch for n in moved.tracks[1].notes] == [127]
    assert pitch_extent(moved) == (54, 98) and pitch_extent(score_of([])) is None
    assert [n.pitch for n in transpose_within(tune, 2).tracks[0].notes] == [62, 66, 69, 100, 106]


def test_sampling_from_all_keys():
    rng = np.random.default_rng(0)
    drawn = {sample_augmentation(rng, ALL_KEYS)[0] for _ in range(300)}
    assert drawn == set(ALL_KEYS)
    assert {sample_augmentation(rng)[0] for _ in range(300)} == set(range(-3, 4))  # the paper's set by default
