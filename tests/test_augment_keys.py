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


class _Pieces:
    """A stand-in piece source: fixed ids, a known pitch extent, and the transpositions asked for."""

    def __init__(self, extents):
        from types import SimpleNamespace

        self.tokenizer = SimpleNamespace(pad_id=0, bos_id=1, eos_id=2)
        self.extents = extents
        self.lengths = np.full(len(extents), 40)
        self.asked: list[int] = []

    def ids(self, index, semitones=0, stretch=1.0):
        self.asked.append(semitones)
        return np.arange(3, 43, dtype=np.int64)

    def pitch_extent(self, index):
        return self.extents[index]


def test_training_crops_visit_every_key_inside_the_piano_range():
    from cadenza.data.datasets import RandomCrops

    source = _Pieces([(60, 105)])                         # a major third up or more would pass C8 (108)
    crops = RandomCrops(source, 16, seed=0, augment=True, transpose="keys")
    shifts = [crops.example(n)[2].semitones for n in range(400)]
    assert {s % 12 for s in shifts} == set(range(12))      # every key is reached
    assert all(21 <= 60 + s and 105 + s <= 108 for s in shifts)
    assert source.asked == shifts                          # the source is asked for the shift it reports
    assert set(shifts) == {*range(-8, 4)}                 # +4, +5 and +6 go down an octave instead
    whole = RandomCrops(_Pieces([(21, 108)]), 16, seed=0, augment=True, transpose="keys")
    assert {whole.example(n)[2].semitones for n in range(100)} == {0}
    paper = RandomCrops(_Pieces([(60, 100)]), 16, seed=0, augment=True, transpose="paper")
    assert {paper.example(n)[2].semitones for n in range(300)} == set(range(-3, 4))


def test_a_resumed_run_recorded_before_key_transpositions_keeps_the_papers():
    from cadenza.symbolic.train import TrainSettings, _resume_settings

    saved = TrainSettings(out="r", corpus="bach-chorales", scheme="event", size="debug").resolved().to_json()
    del saved["transpose"]
    resumed = _resume_settings(TrainSettings(out="r", resume=True), saved, __import__("pathlib").Path("r"))
    assert resumed.transpose == "paper"
    assert TrainSettings(out="r").transpose == "keys"
