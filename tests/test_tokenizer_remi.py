"""REMI tokenizer: miditok's REMI behind cadenza's face; lossless up to miditok's quantization."""

from __future__ import annotations

import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import symusic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.data.errors import TokenizerError
from cadenza.tokenizers import Tokenizer, get_tokenizer

REPO = Path(__file__).resolve().parent.parent


def notes_in_quarters(score: symusic.Score) -> list[tuple]:
    """(program, is_drum, pitch, onset, duration, velocity) with times as exact fractions of a quarter."""
    tpq = score.ticks_per_quarter
    out = []
    for track in score.tracks:
        for n in track.notes:
            out.append((track.program, track.is_drum, n.pitch, Fraction(n.time, tpq), Fraction(n.duration, tpq),
                        n.velocity))
    return sorted(out)


def tempos_in_quarters(score: symusic.Score) -> list[tuple]:
    tpq = score.ticks_per_quarter
    return sorted((Fraction(t.time, tpq), round(t.qpm, 2)) for t in score.tempos)


def assert_round_trip(tok, score):
    """decode(encode(x)) equals x as miditok quantizes it (its preprocess_score)."""
    expected = tok.miditok.preprocess_score(score)
    decoded = tok.decode(tok.encode(score))
    assert notes_in_quarters(decoded) == notes_in_quarters(expected)
    return decoded, expected


def test_defaults_follow_the_issue():
    tok = get_tokenizer("remi")
    cfg = tok.miditok.config
    assert cfg.beat_res == {(0, 4): 8, (4, 12): 4}
    assert cfg.num_velocities == 32 and cfg.use_tempos and cfg.use_time_signatures
    assert cfg.use_programs and cfg.one_token_stream_for_programs and not cfg.use_rests
    assert tok.base_vocab_size == len(tok.miditok) - 1
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (tok.base_vocab_size, tok.base_vocab_size + 1, tok.base_vocab_size + 2)
    assert tok.token_to_str(0) == "Bar_None" and tok.token_to_str(tok.pad_id) == "PAD"
    kinds = [name for name, _, _ in tok.ranges()]
    for kind in ("Bar", "Pitch", "Velocity", "Duration", "Position", "Tempo", "Program", "TimeSig"):
        assert kind in kinds
    assert "miditok" in tok.describe()


def test_ids_are_miditoks_minus_one(bach_scores):
    tok = get_tokenizer("remi")
    ids = tok.encode(bach_scores[0])
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < tok.base_vocab_size
    assert (ids + 1).tolist() == tok.miditok.encode(bach_scores[0]).ids
    assert tok.tokens_to_str(ids[:3]) == ["Bar_None", "TimeSig_4/4", "Position_0"]


def test_round_trip_real_chorales(bach_scores):
    tok = get_tokenizer("remi")
    for score in bach_scores[:12]:
        decoded, expected = assert_round_trip(tok, score)
        assert tempos_in_quarters(decoded) == tempos_in_quarters(expected)
        assert [(ts.numerator, ts.denominator) for ts in decoded.time_signatures] == \
               [(ts.numerator, ts.denominator) for ts in expected.time_signatures]


def test_round_trip_keeps_seconds_at_integer_tempi(bach_scores):
    """Tempo bins of 1 qpm: 120 and 100 qpm survive exactly, so onsets keep their time in seconds."""
    from cadenza.apps.study import tokenization_figures

    tok = get_tokenizer("remi")
    assert tok.config["num_tempos"] == 211
    assert get_tokenizer("remi", tempo_range=(30, 300)).config["num_tempos"] == 271
    figures = tokenization_figures(tok, bach_scores[:6])
    assert figures["roundtrip_onset_f1"] == 1.0 and figures["roundtrip_onset_offset_f1"] > 0.99


def multitrack_score(parts, tpq=480) -> symusic.Score:
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, qpm=100.0))
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    for program, is_drum, notes in parts:
        track = symusic.Track(name=f"p{program}", program=program, is_drum=is_drum)
        for pitch, start, duration, velocity in notes:
            track.notes.append(symusic.Note(start, duration, pitch, velocity))
        score.tracks.append(track)
    return score


def test_multitrack_round_trip_keeps_programs_and_drums():
    score = multitrack_score([
        (0, False, [(60, 0, 480, 90), (64, 240, 960, 70)]),
        (40, False, [(76, 120, 240, 100), (79, 1440, 120, 50)]),
        (73, False, [(84, 3 * 480, 480, 60)]),
        (0, True, [(36, 0, 120, 110), (42, 480, 120, 80)]),
    ])
    tok = get_tokenizer("remi")
    decoded, _ = assert_round_trip(tok, score)
    assert sorted((t.program, t.is_drum) for t in decoded.tracks) == [(0, False), (0, True), (40, False), (73, False)]
    merged = get_tokenizer("remi", use_programs=False)
    flat = merged.decode(merged.encode(score))
    assert len(flat.tracks) == 1 and flat.note_num() == score.note_num()


part_strategy = st.tuples(
    st.sampled_from([0, 24, 40, 73]),
    st.just(False),
    st.lists(st.tuples(st.integers(21, 108), st.integers(0, 8000), st.integers(1, 3000), st.integers(1, 127)),
             min_size=1, max_size=12),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(part_strategy, min_size=1, max_size=3, unique_by=lambda p: p[0]))
def test_round_trip_random_multitrack_scores(parts):
    assert_round_trip(get_tokenizer("remi"), multitrack_score(parts))


def test_config_is_exposed_and_saved(tmp_path):
    tok = get_tokenizer("remi", beat_res={(0, 4): 8}, num_velocities=8, use_tempos=False, use_rests=True,
                        use_time_signatures=False)
    kinds = {name for name, _, _ in tok.ranges()}
    assert "Rest" in kinds and "Tempo" not in kinds and "TimeSig" not in kinds
    assert sum(stop - start for name, start, stop in tok.ranges() if name == "Velocity") == 8
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.config == tok.config and again.vocab_size == tok.vocab_size
    assert again.config["beat_res"] == {"0_4": 8}


def test_bad_input():
    tok = get_tokenizer("remi")
    with pytest.raises(TokenizerError, match="no notes"):
        tok.encode(symusic.Score(480))
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(TokenizerError, match="unknown"):
        get_tokenizer("remi", beat_resolution=4)
    score = multitrack_score([(0, False, [(60, 0, 480, 90)])])
    ids = tok.encode(score)
    with_specials = np.concatenate([[tok.bos_id], ids, [tok.eos_id, tok.pad_id]])
    assert notes_in_quarters(tok.decode(with_specials)) == notes_in_quarters(tok.decode(ids))
    assert tok.decode([]).note_num() == 0


def test_miditok_imports_from_the_repository_root():
    """There, the folder tokenizers/ would shadow the Hugging Face package that miditok needs."""
    code = ("import tokenizers, cadenza.tokenizers as ct; t = ct.get_tokenizer('remi'); "
            "import miditok; print(len(t.miditok))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) == get_tokenizer("remi").base_vocab_size + 1


def test_pitch_range_is_inclusive_as_in_miditok():
    """miditok 3.1 has Pitch tokens 21..109, both ends included."""
    tok = get_tokenizer("remi")
    names = [tok.token_to_str(i) for i in range(tok.base_vocab_size)]
    assert names.count("Pitch_109") == 1 and names.count("Pitch_21") == 1 and "Pitch_110" not in names
    edges = multitrack_score([(0, False, [(21, 0, 480, 90), (109, 480, 480, 90)])])
    decoded, _ = assert_round_trip(tok, edges)
    assert sorted(n.pitch for t in decoded.tracks for n in t.notes) == [21, 109]
    for outside in (20, 110):
        with pytest.raises(TokenizerError, match="outside REMI's pitch range 21-109"):
            tok.encode(multitrack_score([(0, False, [(60, 0, 480, 90), (outside, 0, 480, 90)])]))


def test_tracks_of_one_program_are_merged_with_a_warning():
    from cadenza.tokenizers.remi import MergedTracksWarning

    score = multitrack_score([(0, False, [(60, 0, 480, 90)]), (0, False, [(67, 240, 480, 70)]),
                              (40, False, [(72, 0, 960, 80)])])
    tok = get_tokenizer("remi")
    with pytest.warns(MergedTracksWarning, match="share a program"):
        decoded = tok.decode(tok.encode(score))
    assert sorted((t.program, sorted(n.pitch for n in t.notes)) for t in decoded.tracks) == [(0, [60, 67]), (40, [72])]
    assert "tracks of one program (merged into one, with a warning)" in tok.describe()
    distinct = multitrack_score([(0, False, [(60, 0, 480, 90)]), (40, False, [(72, 0, 960, 80)])])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MergedTracksWarning)
        tok.encode(distinct)
