"""The MT3 event codec: MT3's vocabulary layout, known token vectors, tie sections, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.data.errors import TokenizerError
from cadenza.tokenizers.mt3 import MT3Tokenizer, bin_to_velocity, notes_to_score, velocity_to_bin


def trimmed(rows):
    """MT3's overlap rule: a note ends where the next note of its pitch and program starts."""
    rows = sorted(rows, key=lambda r: (r[4], r[5], r[2], r[0], r[1]))
    out = []
    for i, row in enumerate(rows):
        end = row[1]
        if i + 1 < len(rows) and (rows[i + 1][2], rows[i + 1][4], rows[i + 1][5]) == (row[2], row[4], row[5]):
            end = min(end, rows[i + 1][0])
        if end > row[0]:
            out.append((row[0], end, *row[2:]))
    return sorted(out, key=lambda r: (round(r[0], 2), r[2], r[4], r[5]))


def notes_of(score):
    """(start, end, pitch, velocity, program, is_drum) rows in seconds, sorted."""
    seconds = score.to("second")
    rows = [(round(n.time, 4), round(n.time + n.duration, 4), n.pitch, n.velocity, t.program, t.is_drum)
            for t in seconds.tracks for n in t.notes]
    return sorted(rows, key=lambda r: (round(r[0], 2), r[2], r[4], r[5]))  # robust to ms rounding


def test_vocabulary_matches_mt3_codec():
    tok = MT3Tokenizer()
    # MT3's multi-instrument codec: 1001 shifts + 88 pitches + 2 velocities + tie + 128 programs + 88 drums
    assert tok.base_vocab_size == 1308
    assert [(name, start, stop) for name, start, stop in tok.ranges()] == [
        ("shift", 0, 1001), ("pitch", 1001, 1089), ("velocity", 1089, 1091), ("tie", 1091, 1092),
        ("program", 1092, 1220), ("drum", 1220, 1308)]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (1308, 1309, 1310, 1311)
    assert tok.event_id("pitch", 60) == 1040
    assert tok.event_id("drum", 36) == 1235
    assert tok.event_of(1040) == ("pitch", 60)
    assert tok.token_to_str(1091) == "tie" and tok.token_to_str(250) == "shift_250"
    # the 2021 piano model's 127 velocity bins
    assert MT3Tokenizer(num_velocity_bins=127).base_vocab_size == 1434
    with pytest.raises(TokenizerError):
        tok.event_id("pitch", 20)
    with pytest.raises(TokenizerError):
        MT3Tokenizer(num_velocity_bins=0)


def test_velocity_bins_follow_mt3():
    assert [velocity_to_bin(v, 1) for v in (0, 1, 64, 127)] == [0, 1, 1, 1]
    assert bin_to_velocity(1, 1) == 127 and bin_to_velocity(0, 1) == 0
    assert all(bin_to_velocity(velocity_to_bin(v, 127), 127) == v for v in range(128))
    assert [velocity_to_bin(v, 4) for v in (1, 32, 33, 127)] == [1, 2, 2, 4]


def test_known_vector_one_segment():
    tok = MT3Tokenizer()
    score = notes_to_score([(0.0, 1.0, 60, 100, 0, False), (0.5, 1.0, 64, 80, 0, False),
                            (0.5, 0.6, 36, 90, 0, True)])
    ids = tok.encode(score)
    assert tok.tokens_to_str(ids) == [
        "tie", "program_0", "velocity_1", "pitch_60",
        "shift_50", "pitch_64", "drum_36",  # program/velocity unchanged: not repeated
        "shift_100", "velocity_0", "pitch_60", "pitch_64"]
    assert ids.dtype == np.int64


def test_tie_sections_and_absolute_shifts():
    tok = MT3Tokenizer()
    score = notes_to_score([(0.0, 1.0, 60, 100, 0, False), (0.5, 3.0, 64, 80, 0, False),
                            (1.0, 4.5, 40, 90, 33, False)])
    segments = tok.encode_segments(score)
    assert len(segments) == 3
    assert tok.tokens_to_str(segments[1]) == [
        "program_0", "pitch_64", "program_33", "pitch_40", "tie",  # held over from segment 0
        "shift_95", "program_0", "velocity_0", "pitch_64"]  # 3.0 s = 2.048 s + 0.95 s
    assert tok.tokens_to_str(segments[2]) == ["program_33", "pitch_40", "tie", "shift_40", "velocity_0", "pitch_40"]
    # a window may start anywhere: the tie section lists what sounds at its start
    window = tok.encode_window(tok.note_events(score), 0.7, 0.5)
    assert tok.tokens_to_str(window) == ["program_0", "pitch_60", "pitch_64", "tie",
                                         "shift_30", "velocity_0", "pitch_60",
                                         "program_33", "velocity_1", "pitch_40"]
    decoded = notes_of(tok.decode_segments(segments))
    expected = notes_of(score)
    assert len(decoded) == len(expected)
    for got, want in zip(decoded, expected):
        assert got[2:] == (want[2], 127, want[4], want[5])
        assert abs(got[0] - want[0]) <= 0.0065 and abs(got[1] - want[1]) <= 0.0065


def test_long_shift_spans_several_tokens():
    tok = MT3Tokenizer()
    ids = tok.encode(notes_to_score([(0.0, 25.0, 60, 100, 0, False)]))
    assert tok.tokens_to_str(ids)[-5:] == ["shift_1000", "shift_1000", "shift_500", "velocity_0", "pitch_60"]
    assert notes_of(tok.decode(ids)) == [(0.0, 25.0, 60, 127, 0, False)]


@pytest.mark.parametrize("velocity_bins", [1, 127])
def test_round_trip_on_chorales(bach_scores, velocity_bins):
    tok = MT3Tokenizer(num_velocity_bins=velocity_bins)
    for score in bach_scores[:6]:
        want = trimmed(notes_of(score))
        whole = notes_of(tok.decode(tok.encode(score)))
        stitched = notes_of(tok.decode_segments(tok.encode_segments(score)))
        for got_notes in (whole, stitched):
            assert len(got_notes) == len(want)
            for got, ref in zip(got_notes, want):
                assert got[2] == ref[2] and got[4] == 0  # pitch; every voice on program 0 (chorale tracks)
                assert abs(got[0] - ref[0]) <= 0.0065
                assert abs(got[1] - ref[1]) <= 0.0065
                if velocity_bins == 127:
                    assert got[3] == ref[3]


def test_programs_keep_their_tracks():
    tok = MT3Tokenizer()
    score = notes_to_score([(0.0, 0.5, 60, 90, 40, False), (0.25, 2.5, 48, 90, 0, False),
                            (1.0, 1.01, 42, 90, 0, True)])
    decoded = tok.decode_segments(tok.encode_segments(score)).to("second")
    layout = sorted((t.program, t.is_drum, [n.pitch for n in t.notes]) for t in decoded.tracks)
    assert layout == [(0, False, [48]), (0, True, [42]), (40, False, [60])]


def test_decode_skips_invalid_events_and_stops_at_eos():
    tok = MT3Tokenizer()
    ids = [tok.tie_id, tok.event_id("velocity", 0), tok.event_id("pitch", 70),  # off for a silent pitch
           tok.event_id("velocity", 1), tok.event_id("pitch", 60), 50, tok.event_id("velocity", 0),
           tok.event_id("pitch", 60), tok.eos_id, tok.event_id("velocity", 1), tok.event_id("pitch", 62)]
    score = tok.decode(ids)
    assert notes_of(score) == [(0.0, 0.5, 60, 127, 0, False)]
    assert tok.last_invalid == 1
    # a note left sounding at the end is closed, never dropped
    [(start, end, pitch, *_)] = notes_of(tok.decode([tok.tie_id, tok.event_id("velocity", 1),
                                                     tok.event_id("pitch", 61)]))
    assert (start, pitch) == (0.0, 61) and end == pytest.approx(0.01, abs=1e-3)  # MT3's minimum duration


def test_describe_and_config_round_trip(tmp_path):
    tok = MT3Tokenizer(num_velocity_bins=127)
    assert "tie" in tok.describe() and "absolute within a segment" in tok.describe()
    assert tok.to_dict() == {"scheme": "mt3", "config": {"steps_per_second": 100, "max_shift_seconds": 10,
                                                         "num_velocity_bins": 127, "segment_seconds": 2.048}}
    again = MT3Tokenizer(**tok.to_dict()["config"])
    assert again.base_vocab_size == tok.base_vocab_size
