"""Music-theory statistics on constructed pieces whose values are known by hand."""

from __future__ import annotations

import math

import pytest
import symusic

from cadenza.data import theory

Q = 480  # ticks per quarter


def piece(*parts, time_signature=(4, 4), qpm=120.0):
    """Each part: (start_beats, duration_beats, pitch) triples; one track per part."""
    score = symusic.Score(Q)
    score.time_signatures.append(symusic.TimeSignature(0, *time_signature))
    score.tempos.append(symusic.Tempo(0, qpm))
    for index, notes in enumerate(parts):
        track = symusic.Track(f"part{index}", 0, False)
        for start, duration, pitch in notes:
            track.notes.append(symusic.Note(int(round(start * Q)), int(round(duration * Q)), pitch, 80))
        score.tracks.append(track)
    return score


def chords_piece(chords, beats=1.0, as_parts=False):
    """Block chords of ``beats`` each; voices listed from bass to soprano."""
    if as_parts:
        return piece(*[[(i * beats, beats, chord[v]) for i, chord in enumerate(chords)] for v in range(len(chords[0]))])
    return piece([(i * beats, beats, p) for i, chord in enumerate(chords) for p in chord])


# -- broken passages -------------------------------------------------------------------------------
def test_broken_passage_each_criterion():
    clean = piece([(i * 0.5, 0.5, 60 + i % 5) for i in range(16)])
    result = theory.broken_passage(clean)
    assert result == {"longest_beats": 0.5, "most_sounding": 1, "on_grid": 1.0, "held": False,
                      "stacked": False, "off_grid": False, "broken": False}
    held = piece([(0, 8.5, 48), (0, 1, 60)])
    assert theory.broken_passage(held)["held"] and theory.broken_passage(held)["broken"]
    assert not theory.broken_passage(piece([(0, 8, 48)]))["held"]  # exactly 8 beats is allowed
    assert not theory.broken_passage(held, max_held_beats=9)["broken"]
    stacked = piece([(0, 1, 50 + 2 * i) for i in range(9)])
    assert theory.broken_passage(stacked)["most_sounding"] == 9 and theory.broken_passage(stacked)["stacked"]
    assert not theory.broken_passage(piece([(0, 1, 50 + 2 * i) for i in range(8)]))["stacked"]
    # 3 of 4 onsets on the sixteenth grid: 75 % < 80 %
    off = piece([(0, 1, 60), (1, 1, 62), (2, 1, 64), (3.1, 0.5, 65)])
    assert theory.broken_passage(off)["on_grid"] == pytest.approx(0.75)
    assert theory.broken_passage(off)["off_grid"]
    assert not theory.broken_passage(off, min_on_grid=0.7)["broken"]
    assert not theory.broken_passage(piece([(3.01, 1, 60)]))["off_grid"]  # within a tenth of a step
    assert not theory.broken_passage(piece())["broken"]


# -- key ------------------------------------------------------------------------------------------
C_MAJOR_CADENCE = chords_piece([(48, 64, 67, 72), (53, 65, 69, 72), (55, 62, 67, 71), (48, 64, 67, 72)])


def test_key_estimate_of_constructed_pieces():
    assert str(theory.estimate_key(C_MAJOR_CADENCE)) == "C major"
    a_minor = chords_piece([(45, 60, 64, 69), (50, 62, 65, 69), (52, 59, 64, 68), (45, 60, 64, 69)])
    assert str(theory.estimate_key(a_minor)) == "A minor"
    assert theory.estimate_key(piece()) is None
    up_a_fourth = chords_piece([tuple(p + 5 for p in c) for _, c in theory.chords(C_MAJOR_CADENCE)])
    assert str(theory.estimate_key(up_a_fourth)) == "F major"
    assert theory.key_kept(C_MAJOR_CADENCE, C_MAJOR_CADENCE) is True
    assert theory.key_kept(C_MAJOR_CADENCE, up_a_fourth) is False
    assert theory.key_kept(C_MAJOR_CADENCE, up_a_fourth, method="music21") is False
    assert theory.key_kept(C_MAJOR_CADENCE, piece()) is None


def test_our_key_estimate_agrees_with_music21_on_chorales(bach_scores):
    scores = bach_scores[:12]
    ours = [theory.estimate_key(s) for s in scores]
    theirs = [theory.music21_key(s) for s in scores]
    assert sum(a.same(b) for a, b in zip(ours, theirs)) >= 11
    for a, b in zip(ours, theirs):
        if a.same(b):
            assert a.correlation == pytest.approx(b.correlation, abs=1e-6)
    # and both read the key signature's key in most chorales (major/minor from the MIDI key event)
    signed = [s for s in scores if s.key_signatures]
    agree = sum(theory.estimate_key(s).mode == ("minor" if s.key_signatures[0].tonality else "major")
                for s in signed)
    assert agree >= 0.75 * len(signed)


# -- parallels, voices ------------------------------------------------------------------------------
def test_parallel_fifths_and_octaves():
    # C-E-G-C to D-F-A-D in root position: every voice moves up a step, bass-tenor fifths and
    # bass-soprano octaves in parallel; then D to G: contrary motion without perfect consecutives.
    parallel = [(48, 55, 64, 72), (50, 57, 65, 74)]
    good = [(48, 64, 67, 72), (43, 62, 67, 71)]  # bass down, soprano down, alto down, tenor holds
    for as_parts in (False, True):
        assert theory.parallels(chords_piece(parallel, as_parts=as_parts)) == \
            {"changes": 1, "with_parallels": 1, "rate": 1.0}
        assert theory.parallels(chords_piece(good, as_parts=as_parts)) == \
            {"changes": 1, "with_parallels": 0, "rate": 0.0}
    # three changes, the last with fifths (bass-alto) and octaves (bass-soprano) by contrary motion
    contrary = chords_piece([(48, 64, 67, 72), (43, 62, 67, 71), (48, 64, 67, 72), (38, 65, 69, 74)])
    assert theory.parallels(contrary) == {"changes": 3, "with_parallels": 1, "rate": pytest.approx(1 / 3)}
    # a chord of three notes is not a four-voice chord: no change to count
    assert theory.parallels(chords_piece([(48, 55, 64), (50, 57, 65)]))["changes"] == 0
    assert math.isnan(theory.parallels(piece())["rate"])


def test_parts_give_the_voices_even_when_pitches_cross():
    # tenor rises above alto: by pitch order the "alto" would take the tenor's line; by parts
    # the parallel octave between tenor and soprano (both moving) is found
    soprano = [(0, 1, 72), (1, 1, 74)]
    alto = [(0, 1, 64), (1, 1, 64)]
    tenor = [(0, 1, 60), (1, 1, 62)]  # C4 -> D4, octaves with the soprano
    bass = [(0, 1, 48), (1, 1, 43)]
    score = piece(soprano, alto, tenor, bass)
    assert theory.parallels(score)["with_parallels"] == 1
    crossing = piece(soprano, [(0, 1, 64), (1, 1, 62)], [(0, 1, 60), (1, 1, 65)], bass)
    assert theory.voice_crossing_rate(crossing) == pytest.approx(0.5)  # the second of two chords
    assert theory.voice_crossing_rate(score) == 0.0
    assert math.isnan(theory.voice_crossing_rate(piece(soprano)))
    assert theory.voice_count(score) == 4.0
    # 2, 3 and 1 notes sounding at the three instants
    assert theory.voice_count(piece([(0, 2, 60), (0, 2, 64), (1, 1, 67), (3, 1, 67)])) == 2.0


def test_chorales_have_four_voices_and_few_parallels(bach_scores):
    rates = []
    for score in bach_scores[:10]:
        result = theory.parallels(score)
        if result["changes"]:
            rates.append(result["rate"])
    assert len(rates) >= 6 and sum(rates) / len(rates) < 0.03
    assert sorted(theory.voice_count(s) for s in bach_scores[:10])[5] == 4.0


# -- cadences, density -----------------------------------------------------------------------------
def test_held_chords_and_cadences_per_8_bars():
    # 4 bars of 4/4: quarters, a half-note chord at beat 6 (held 2 beats), quarters, a whole-note chord
    chords = [(48, 64, 67, 72)] * 6
    notes = [(i, 1, p) for i in range(6) for p in chords[i]]
    notes += [(6, 2, p) for p in (53, 65, 69, 72)]
    notes += [(8 + i, 1, p) for i in range(4) for p in chords[0]]
    notes += [(12, 4, p) for p in (48, 64, 67, 72)]
    score = piece(notes)
    assert theory.held_chords(score) == [6.0, 12.0]
    assert theory.cadences_per_8_bars(score) == pytest.approx(4.0)   # 2 in 4 bars
    assert theory.held_chords(score, min_beats=3) == [12.0]
    assert theory.held_chords(score, min_notes=5) == []
    # a voice moving inside the half note breaks it
    moving = piece(notes + [(7, 1, 50)])
    assert theory.held_chords(moving) == [12.0]
    # bars follow the time signature: the same 16 beats in 2/4 are 8 bars
    two_four = piece(notes, time_signature=(2, 4))
    assert theory.cadences_per_8_bars(two_four) == pytest.approx(2.0)
    assert math.isnan(theory.cadences_per_8_bars(piece()))


def test_notes_struck_bass_first_that_may_still_become_a_root_position_triad():
    assert theory.may_become_triad([]) and theory.may_become_triad([48]) and theory.may_become_triad([48, 55, 60])
    assert theory.may_become_triad([48, 52]) and theory.may_become_triad([48, 51, 67])
    assert not theory.may_become_triad([48, 53]) and not theory.may_become_triad([48, 51, 52])   # a fourth; both thirds
    assert not theory.may_become_triad([48, 58]) and not theory.may_become_triad([52, 48])      # a seventh; not bass first
    assert all(theory.root_position_triad(c) == theory.may_become_triad(c)
               for c in ([48, 52, 55], [45, 57, 60, 64], [48, 53, 57]))


def test_root_position_triads_and_the_share_of_held_chords_that_are_one():
    assert theory.root_position_triad([48, 55, 64, 72]) and theory.root_position_triad([45, 57, 60, 64])
    assert theory.root_position_triad([43, 55, 59])                  # fifth left out
    assert not theory.root_position_triad([52, 55, 60])              # first inversion
    assert not theory.root_position_triad([48, 52, 55, 58])          # a seventh chord
    assert not theory.root_position_triad([48, 60]) and not theory.root_position_triad([])
    assert not theory.root_position_triad([48, 51, 52, 55])          # major and minor third
    # a held C major chord and a held dominant seventh: half of the held chords are cadences
    notes = [(0, 2, p) for p in (48, 64, 67, 72)] + [(2, 2, p) for p in (43, 59, 65, 67)]
    assert theory.held_triad_share(piece(notes)) == pytest.approx(0.5)
    assert math.isnan(theory.held_triad_share(piece([(i, 1, 60) for i in range(4)])))


def test_note_density():
    assert theory.note_density(piece([(i, 1, 60) for i in range(8)])) == pytest.approx(1.0)
    assert theory.note_density(C_MAJOR_CADENCE) == pytest.approx(4.0)
    assert theory.note_density(C_MAJOR_CADENCE, span=8) == pytest.approx(2.0)


# -- infill, accompaniment -------------------------------------------------------------------------
def test_span_joins_measure_the_top_voice_leaps():
    # at 120 qpm a beat is 0.5 s; top voice 72 72 | 79 77 | 64 (span 1.0-2.0 s)
    top = [(0, 1, 72), (1, 1, 72), (2, 1, 79), (3, 1, 77), (4, 1, 64)]
    score = piece(top, [(b, 1, 48) for b in range(5)])
    assert theory.span_joins(score, 1.0, 2.0) == {"entry": 7.0, "exit": 13.0}
    assert math.isnan(theory.span_joins(score, 0.0, 1.0)["entry"])


def test_against_melody_counts_notes_above_and_dissonances():
    melody = piece([(0, 2, 67), (2, 2, 72)])
    # under G4: C4 (P4, consonant here), F#4 (2nd below... pc 1: dissonant), A4 (above, 2nd)
    # under C5: B4 (7th below: pc 1), E4, C6 above (octave)
    accomp = piece([(0, 1, 60), (1, 1, 66), (1.5, 0.5, 69), (2, 1, 71), (2, 1, 64), (3, 1, 84), (4, 1, 50)])
    result = theory.against_melody(accomp, melody)
    assert result["notes"] == 6  # the last note sounds after the melody
    assert result["above"] == pytest.approx(2 / 6)
    assert result["dissonant"] == pytest.approx(3 / 6)


def test_continuation_statistics_on_a_chorale(bach_scores):
    score = bach_scores[3]
    prompt = theory.clip_beats(score, 0, 8)
    stats = theory.continuation_statistics(prompt, score, 8, 40)
    assert set(stats) == {"broken", "key_kept", "parallels", "changes", "with_parallels", "cadences_per_8_bars",
                          "held_triads", "density_ratio", "voice_count", "voice_crossing"}
    assert stats["voice_count"] == 4.0 and stats["changes"] > 20
    assert math.isnan(stats["held_triads"]) or stats["held_triads"] >= 0.5
    assert 0.5 < stats["density_ratio"] < 2.0
    assert stats["parallels"] < 0.05
    assert theory.continuation_statistics(prompt, score)["changes"] > stats["changes"]  # to the end


def test_summarize_continuations_pools_parallels():
    prompt = chords_piece([(48, 64, 67, 72)] * 4)
    parallel = chords_piece([(48, 64, 67, 72)] * 4 + [(48, 55, 64, 72), (50, 57, 65, 74)])
    clean = chords_piece([(48, 64, 67, 72)] * 4 + [(48, 64, 67, 72), (43, 62, 67, 71), (48, 64, 67, 72)])
    summary = theory.summarize_continuations([(prompt, parallel), (prompt, clean)], seconds=4.0)
    per_piece = [theory.continuation_statistics(prompt, c, 4, 12) for c in (parallel, clean)]
    pooled = sum(p["with_parallels"] for p in per_piece) / sum(p["changes"] for p in per_piece)
    assert summary["parallels"]["mean"] == pytest.approx(pooled) and per_piece[0]["with_parallels"] == 1
    assert summary["key_kept"] == {"mean": 1.0, "std": 0.0, "n": 2}
    assert summary["broken"]["mean"] == 0.0
