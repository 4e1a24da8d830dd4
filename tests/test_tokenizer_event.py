"""Event tokenizer: Magenta's known vector, an event-by-event reference walk, round trips, bad input."""

from __future__ import annotations

import io
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import mido
import numpy as np
import pytest
import symusic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.data.errors import TokenizerError
from cadenza.tokenizers import Tokenizer, get_tokenizer
from cadenza.tokenizers.event import EventTokenizer, score_tracks

TPQ = 480  # at 120 qpm one tick is 1/960 s
SECOND = 960


def make_score(tracks, tpq=TPQ, qpm=120.0) -> symusic.Score:
    """tracks: list of (notes [(pitch, velocity, start_tick, end_tick)], pedals [(tick, value)], program, is_drum)."""
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, qpm=qpm))
    for notes, pedals, program, is_drum in tracks:
        track = symusic.Track(name="t", program=program, is_drum=is_drum)
        for pitch, velocity, start, end in notes:
            track.notes.append(symusic.Note(start, end - start, pitch, velocity))
        for tick, value in pedals:
            track.controls.append(symusic.ControlChange(tick, 64, value))
        score.tracks.append(track)
    return score


# -- an event-by-event walk through Magenta's algorithms, for equivalence ------------------------
def reference_sustain(start, end, pitch, pedals, final_time):
    """apply_sustain_control_changes, one event at a time (pedals: [(seconds, value)])."""
    end = list(end)
    removed = set()
    events = [(t, 0 if v >= 64 else 1, v) for t, v in pedals]
    events += [(start[i], 2, i) for i in range(len(start))] + [(end[i], 3, i) for i in range(len(start))]
    events.sort(key=lambda e: e[:2])  # note_seq: pedal-down, pedal-up, note-on, note-off at equal times
    active: list[int] = []
    pedal_down = False
    for time, kind, what in events:
        if kind == 0:
            pedal_down = True
        elif kind == 1:
            pedal_down = False
            still = []
            for i in active:
                if end[i] < time:
                    end[i] = time
                else:
                    still.append(i)
            active = still
        elif kind == 2:
            if pedal_down:
                still = []
                for i in active:
                    if pitch[i] == pitch[what]:
                        end[i] = time
                        if start[i] == end[i]:
                            removed.add(i)
                    else:
                        still.append(i)
                active = still
            active.append(what)
        elif not pedal_down and what in active:
            active.remove(what)
    for i in active:
        end[i] = final_time
    keep = [i for i in range(len(start)) if i not in removed]
    return keep, end


def reference_encode(score, tok: EventTokenizer, sustain=True) -> list[int]:
    tracks = score_tracks(score)
    # the last non-drum note time or CC64 time of the piece
    final_time = max([0.0] + [float(t.end.max()) for t in tracks if not t.is_drum]
                     + [float(t.pedal_time.max()) for t in tracks if t.pedal_time.size])
    notes = []
    for tr in tracks:
        start, end = tr.start.tolist(), tr.end.tolist()
        keep = range(len(start))
        if sustain:
            keep, end = reference_sustain(start, end, tr.pitch.tolist(), list(zip(tr.pedal_time.tolist(),
                                                                               tr.pedal_value.tolist())), final_time)
        if not tr.is_drum:
            notes += [(start[i], end[i], int(tr.pitch[i]), int(tr.velocity[i])) for i in keep]
    quantized = []
    for s, e, p, v in notes:
        qs, qe = int(s * 100 + 0.5), int(e * 100 + 0.5)
        quantized.append((s, qs, qe if qe != qs else qs + 1, p, v))
    quantized.sort(key=lambda n: (n[0], n[3]))
    events = sorted([(n[1], i, False) for i, n in enumerate(quantized)] + [(n[2], i, True) for i, n in enumerate(quantized)])
    ids, current, velocity_bin = [], 0, 0
    for step, i, is_off in events:
        while step > current + 100:
            ids.append(355)
            current += 100
        if step > current:
            ids.append(256 + step - current - 1)
            current = step
        if not is_off and (quantized[i][4] - 1) // 4 + 1 != velocity_bin:
            velocity_bin = (quantized[i][4] - 1) // 4 + 1
            ids.append(356 + velocity_bin - 1)
        ids.append((128 if is_off else 0) + quantized[i][3])
    return ids


def reference_decode(ids) -> tuple[list[tuple[int, int, int, int]], bool]:
    """Performance.to_sequence, one id at a time: (start step, end step, pitch, velocity), and
    whether its first-in-first-out pairing kept every step's NOTE_OFFs in NOTE_ON order."""
    open_notes = defaultdict(list)  # pitch -> [(NOTE_ON number, start step, velocity)]
    notes, step, velocity, rank, in_order, bar, bar_step = [], 0, 100, 0, True, -1, -1
    for i in ids:
        if i < 128:
            open_notes[i].append((rank, step, velocity))
            rank += 1
        elif i < 256:
            if open_notes[i - 128]:
                number, begin, vel = open_notes[i - 128].pop(0)
                if step != bar_step:
                    bar, bar_step = -1, step
                in_order &= number > bar
                bar = number
                if step > begin:
                    notes.append((begin, step, i - 128, vel))
        elif i < 356:
            step += i - 255
        elif i < 388:
            velocity = 1 + (i - 356) * 4
    for pitch, pending in open_notes.items():
        notes += [(begin, step, pitch, vel) for _, begin, vel in pending if step > begin]
    return sorted(notes, key=lambda n: (n[0], n[2], n[1], n[3])), in_order


def note_tuples(score) -> list[tuple[int, int, int, int]]:
    """(start step, end step, pitch, velocity) of a decoded score (100 ticks per step)."""
    out = []
    for track in score.tracks:
        for n in track.notes:
            out.append((n.time // 100, (n.time + n.duration) // 100, n.pitch, n.velocity))
    return sorted(out, key=lambda n: (n[0], n[2], n[1], n[3]))


# -- strategies ----------------------------------------------------------------------------------
note_strategy = st.tuples(
    st.integers(58, 64),  # a narrow pitch band forces chords and overlapping same-pitch notes
    st.integers(1, 127),
    st.sampled_from([0, 5, 24, 480, 959, 960, 1500, 3000, 2 * SECOND + 7]),  # at 0, on rounding ties, after long rests
    st.sampled_from([0, 0, 3, 96, 300]),
    st.sampled_from([0, 4, 5, 24, 240, 960, 1000, 2400]),  # zero-length up to longer than a TIME_SHIFT
).map(lambda n: (n[0], n[1], n[2] + n[3], n[2] + n[3] + n[4]))
pedal_strategy = st.lists(st.tuples(st.integers(0, 6000), st.sampled_from([0, 63, 64, 127])), max_size=6)
track_strategy = st.tuples(st.lists(note_strategy, min_size=1, max_size=14), pedal_strategy,
                           st.sampled_from([0, 40]), st.booleans().map(lambda b: False))
score_strategy = st.lists(track_strategy, min_size=1, max_size=2).map(make_score)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- tests ---------------------------------------------------------------------------------------
def test_magenta_known_vector():
    score = make_score([([(60, 100, 0, 4 * SECOND), (64, 100, 0, 3 * SECOND), (67, 127, SECOND, 2 * SECOND)], [], 0, False)])
    tok = get_tokenizer("event")
    ids = tok.encode(score)
    assert ids.dtype == np.int64
    assert ids.tolist() == [380, 60, 64, 355, 387, 67, 355, 195, 355, 192, 355, 188]
    assert tok.tokens_to_str(ids[:4]) == ["VELOCITY_25", "NOTE_ON_60", "NOTE_ON_64", "TIME_SHIFT_100"]
    assert note_tuples(tok.decode(ids)) == [(0, 400, 60, 97), (0, 300, 64, 97), (100, 200, 67, 125)]


def test_vocabulary_layout():
    tok = get_tokenizer("event")
    assert (tok.base_vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (388, 388, 389, 390, 391)
    assert [r[1:] for r in tok.ranges()] == [(0, 128), (128, 256), (256, 356), (356, 388)]
    assert tok.token_to_str(200) == "NOTE_OFF_72" and tok.token_to_str(389) == "BOS"
    piano = get_tokenizer("event", pitch_range=(21, 108))
    assert piano.base_vocab_size + 2 == 310  # Magenta's piano vocabulary counts 2 reserved ids
    assert piano.token_to_str(0) == "NOTE_ON_21" and piano.token_to_str(88) == "NOTE_OFF_21"
    text = tok.describe()
    assert "drum" in text and "TIME_SHIFT" in text and "388" in text


def test_quantization_rounding_and_zero_length_notes():
    # 0.005 s rounds up to step 1; 0.0049 s rounds down; a zero-length note lasts one step
    score = make_score([([(60, 64, 0, 0), (62, 64, 5, 5)], [], 0, False)], tpq=500)  # 1 tick = 1 ms
    ids = get_tokenizer("event").encode(score)
    assert get_tokenizer("event").tokens_to_str(ids) == [
        "VELOCITY_16", "NOTE_ON_60", "TIME_SHIFT_1", "NOTE_OFF_60", "NOTE_ON_62", "TIME_SHIFT_1", "NOTE_OFF_62"]
    score = make_score([([(60, 64, 4, 1004)], [], 0, False)], tpq=500)
    assert get_tokenizer("event").tokens_to_str(get_tokenizer("event").encode(score))[:3] == [
        "VELOCITY_16", "NOTE_ON_60", "TIME_SHIFT_100"]


def test_long_gap_is_split_into_maximal_shifts():
    score = make_score([([(60, 100, 0, 10), (61, 100, int(2.505 * SECOND), int(2.6 * SECOND))], [], 0, False)])
    names = get_tokenizer("event").tokens_to_str(get_tokenizer("event").encode(score))
    # the off is at step 1, the next onset at 2404 ticks = 2.5042 s = step 250: 249 steps later
    assert names[:4] == ["VELOCITY_25", "NOTE_ON_60", "TIME_SHIFT_1", "NOTE_OFF_60"]
    assert names[4:8] == ["TIME_SHIFT_100", "TIME_SHIFT_100", "TIME_SHIFT_49", "NOTE_ON_61"]


def test_sustain_pedal_extends_and_truncates_like_magenta():
    s = SECOND
    notes = [(60, 80, 0, s // 2), (60, 80, s, s + s // 4), (64, 80, 0, s // 4)]
    pedals = [(s // 10, 127), (s * 3 // 2, 0)]
    tok = get_tokenizer("event")
    decoded = note_tuples(tok.decode(tok.encode(make_score([(notes, pedals, 0, False)]))))
    # the first C is cut where the next C starts under the pedal; the second C and the E last to the release
    assert decoded == [(0, 100, 60, 77), (0, 150, 64, 77), (100, 150, 60, 77)]
    off = get_tokenizer("event", sustain=False)
    assert note_tuples(off.decode(off.encode(make_score([(notes, pedals, 0, False)])))) == [
        (0, 50, 60, 77), (0, 25, 64, 77), (100, 125, 60, 77)]


def test_sustain_release_at_the_same_time_as_note_end_ends_the_note():
    s = SECOND
    score = make_score([([(60, 80, 0, s), (62, 80, 0, 3 * s)], [(0, 127), (s, 0)], 0, False)])
    decoded = note_tuples(get_tokenizer("event").decode(get_tokenizer("event").encode(score)))
    # note_seq sorts by (time, kind): the release comes before the note-off, which then ends the note
    assert decoded == [(0, 100, 60, 77), (0, 300, 62, 77)]
    # a press and a release at one instant leave the pedal up, whatever their order in the file
    for pedals in ([(0, 127), (s, 127), (s, 0)], [(0, 127), (s, 0), (s, 127)]):
        score = make_score([([(60, 80, 0, s), (62, 80, 0, 3 * s)], pedals, 0, False)])
        assert note_tuples(get_tokenizer("event").decode(get_tokenizer("event").encode(score)))[0] == (0, 100, 60, 77)


@FAST
@given(score_strategy)
def test_encode_equals_event_by_event_reference(score):
    tok = get_tokenizer("event")
    assert tok.encode(score).tolist() == reference_encode(score, tok)
    plain = get_tokenizer("event", sustain=False)
    assert plain.encode(score).tolist() == reference_encode(score, plain, sustain=False)


def onsets_of(ids) -> Counter:
    """(step, pitch, velocity) of every NOTE_ON of an id sequence."""
    out, step, velocity = Counter(), 0, 100
    for i in ids:
        if i < 128:
            out[(step, i, velocity)] += 1
        elif 256 <= i < 356:
            step += i - 255
        elif 356 <= i < 388:
            velocity = 1 + (i - 356) * 4
    return out


@FAST
@given(st.lists(st.integers(0, 390), max_size=80))
def test_decode_equals_reference_on_any_id_sequence(ids):
    """Magenta's decoding wherever its pairing keeps each step's NOTE_OFFs in onset order; else
    the notes still begin where the ids' NOTE_ONs put them."""
    tok = get_tokenizer("event")
    expected, in_order = reference_decode([i for i in ids if i < 388])
    decoded = note_tuples(tok.decode(np.array(ids, dtype=np.int64)))
    if in_order:
        assert decoded == expected
    else:
        assert Counter((s, p, v) for s, _, p, v in decoded) - onsets_of(ids) == Counter()


def kept_by_scheme(tok: EventTokenizer, score) -> tuple[list, list]:
    """What the scheme keeps of a score without pedal: the quantized onsets (step, pitch, velocity
    of its bin) and the quantized offsets (step, pitch); which onset an offset ends is kept only
    where notes of one pitch do not overlap."""
    tracks = [t for t in score_tracks(score) if not t.is_drum]
    pitch = np.concatenate([t.pitch for t in tracks])
    velocity = np.concatenate([t.velocity for t in tracks])
    qs, qe = tok.quantize(np.concatenate([t.start for t in tracks]), np.concatenate([t.end for t in tracks]))
    onsets = sorted(zip(qs.tolist(), pitch.tolist(), (1 + (velocity - 1) // 4 * 4).tolist()))
    return onsets, sorted(zip(qe.tolist(), pitch.tolist()))


def onsets_and_offsets(notes) -> tuple[list, list]:
    return sorted((s, p, v) for s, _, p, v in notes), sorted((e, p) for _, e, p, _ in notes)


@FAST
@given(score_strategy)
def test_round_trip_keeps_quantized_onsets_offsets_and_velocity_bins(score):
    """decode(encode(x)) is x quantized by the scheme (see kept_by_scheme)."""
    tok = get_tokenizer("event", sustain=False)
    assert onsets_and_offsets(note_tuples(tok.decode(tok.encode(score)))) == kept_by_scheme(tok, score)


# -- encode(decode(ids)) == ids on random MIDI files -----------------------------------------------
def random_midi_bytes(tracks, tempo_changes) -> bytes:
    """A type-1 MIDI file (480 tpq) from tracks of (channel, program, notes, pedals) and track-0 tempi."""
    file = mido.MidiFile(ticks_per_beat=TPQ)
    conductor = [(0, mido.MetaMessage("set_tempo", tempo=500000))]
    conductor += [(tick, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm))) for tick, qpm in tempo_changes]
    events_of_tracks = [conductor]
    for channel, program, notes, pedals in tracks:
        events = [(0, mido.Message("program_change", channel=channel, program=program))]
        for pitch, velocity, start, end in notes:
            events.append((start, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
            events.append((end, mido.Message("note_off", channel=channel, note=pitch)))
        events += [(tick, mido.Message("control_change", channel=channel, control=64, value=v)) for tick, v in pedals]
        events_of_tracks.append(events)
    for events in events_of_tracks:
        track, now = mido.MidiTrack(), 0
        for tick, message in sorted(events, key=lambda e: e[0]):
            track.append(message.copy(time=tick - now))
            now = tick
        file.tracks.append(track)
    data = io.BytesIO()
    file.save(file=data)
    return data.getvalue()


file_note = st.tuples(st.integers(55, 64), st.integers(1, 127), st.integers(0, 4000), st.integers(1, 1500)).map(
    lambda n: (n[0], n[1], n[2], n[2] + n[3]))
file_track = st.tuples(st.sampled_from([0, 1, 9]), st.sampled_from([0, 40]), st.lists(file_note, min_size=1, max_size=24),
                       st.lists(st.tuples(st.integers(0, 5000), st.sampled_from([0, 64, 127])), max_size=5))
file_strategy = st.tuples(st.lists(file_track, min_size=1, max_size=3),
                          st.lists(st.tuples(st.integers(1, 4000), st.sampled_from([60.0, 97.3, 200.0])), max_size=2))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file_strategy)
def test_encode_of_decode_gives_back_the_ids_of_random_files(case):
    tok = get_tokenizer("event")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "random.mid"
        path.write_bytes(random_midi_bytes(*case))
        try:
            ids = tok.encode(path)
        except TokenizerError:  # only drums
            return
    assert tok.encode(tok.decode(ids)).tolist() == ids.tolist()


def test_decode_keeps_nested_notes_and_onsets_within_a_step_in_their_order():
    # at 1 ms per tick: C4 0-100 ms holds a C4 20-50 ms inside it, and D4 10-50 ms ends with the inner C4
    nested = make_score([([(60, 80, 0, 100), (62, 80, 10, 50), (60, 80, 20, 50)], [], 0, False)], tpq=500)
    # a chord rolled downwards within one 10 ms step: 64 at 1 ms, then 60 at 3 ms
    rolled = make_score([([(64, 80, 1, 500), (60, 80, 3, 500)], [], 0, False)], tpq=500)
    tok = get_tokenizer("event")
    for score in (nested, rolled):
        ids = tok.encode(score)
        assert tok.encode(tok.decode(ids)).tolist() == ids.tolist()
    names = tok.tokens_to_str(tok.encode(rolled))
    assert names[1:3] == ["NOTE_ON_64", "NOTE_ON_60"]
    decoded = tok.decode(tok.encode(rolled)).tracks[0].notes
    assert [(n.time, n.pitch) for n in decoded] == [(0, 64), (1, 60)]  # one tick (0.1 ms) apart in its step
    # the step's NOTE_OFFs at 50 ms are D4 then C4: the C4 that ends there is the inner one
    inner = sorted((n.time // 100, (n.time + n.duration) // 100, n.pitch) for n in tok.decode(tok.encode(nested)).tracks[0].notes)
    assert inner == [(0, 10, 60), (1, 5, 62), (2, 5, 60)]


def test_round_trip_real_chorales(bach_scores):
    tok = get_tokenizer("event")
    for score in bach_scores:
        ids = tok.encode(score)
        assert ids.min() >= 0 and ids.max() < tok.base_vocab_size
        decoded = tok.decode(ids)
        assert decoded.note_num() == score.note_num()
        assert onsets_and_offsets(note_tuples(decoded)) == kept_by_scheme(tok, score)
        assert tok.encode(decoded).tolist() == tok.encode(tok.decode(tok.encode(decoded))).tolist()


def test_drums_are_dropped_and_tracks_merged():
    s = SECOND
    score = make_score([([(60, 100, 0, s)], [], 0, False), ([(36, 100, 0, s)], [], 0, True),
                        ([(67, 100, 0, s)], [], 40, False)])
    tok = get_tokenizer("event")
    assert tok.tokens_to_str(tok.encode(score))[:3] == ["VELOCITY_25", "NOTE_ON_60", "NOTE_ON_67"]
    with pytest.raises(TokenizerError, match="only drums"):
        tok.encode(make_score([([(36, 100, 0, s)], [], 0, True)]))


def test_bad_input_errors_and_documented_repairs():
    tok = get_tokenizer("event", pitch_range=(21, 108))
    low = make_score([([(10, 100, 0, 100), (60, 100, 0, 100)], [], 0, False)])
    with pytest.raises(TokenizerError, match="outside 21-108"):
        tok.encode(low)
    dropped = get_tokenizer("event", pitch_range=(21, 108), out_of_range="drop")
    assert dropped.tokens_to_str(dropped.encode(low))[1] == "NOTE_ON_60"
    with pytest.raises(TokenizerError, match="no notes"):
        tok.encode(symusic.Score(480))
    full = get_tokenizer("event")
    with pytest.raises(TokenizerError, match="outside"):
        full.decode([60, 400])
    with pytest.raises(TokenizerError, match="integers"):
        full.decode([60.5, 1.0])
    # specials ignored; OFF without ON ignored; an open note closes at the last step
    assert note_tuples(full.decode([389, 188, 60, 300, 390])) == [(0, 45, 60, 100)]
    assert full.decode([]).note_num() == 0
    with pytest.raises(TokenizerError, match="unknown"):
        get_tokenizer("event", pitch_rnage=(0, 1))


def test_seconds_scores_and_tempo_changes():
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=120.0))
    score.tempos.append(symusic.Tempo(960, qpm=60.0))  # after 1 s, a quarter lasts 1 s
    track = symusic.Track(name="t", program=0, is_drum=False)
    track.notes.append(symusic.Note(960, 480, 60, 100))  # 1.0 s to 2.0 s
    score.tracks.append(track)
    tok = get_tokenizer("event")
    assert note_tuples(tok.decode(tok.encode(score))) == [(100, 200, 60, 97)]
    assert tok.encode(score.to("second")).tolist() == tok.encode(score).tolist()
    assert tok.encode(score.to("quarter")).tolist() == tok.encode(score).tolist()


def test_save_load_and_path_input(tmp_path, bach_pieces):
    tok = get_tokenizer("event", pitch_range=(21, 108), sustain=False)
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert isinstance(again, EventTokenizer) and again.config == tok.config
    assert again.encode(bach_pieces[0].path).tolist() == tok.encode(symusic.Score(str(bach_pieces[0].path))).tolist()


def test_seconds_equal_pretty_midis_exactly(tmp_path, bach_pieces):
    """Magenta reads MIDI through pretty_midi; our float64 times must be bit-identical to its times."""
    import pretty_midi

    score = make_score([([(60, 90, 0, 700), (62, 90, 333, 2900), (64, 90, 2901, 5000)], [(100, 127), (4000, 0)], 0, False)])
    score.tempos.append(symusic.Tempo(1000, qpm=73.87))
    score.tempos.append(symusic.Tempo(2500, qpm=171.3))
    path = tmp_path / "tempi.mid"
    score.dump_midi(str(path))
    for midi_path in [path] + [p.path for p in bach_pieces[:3]]:
        pm = pretty_midi.PrettyMIDI(str(midi_path))
        theirs = sorted((n.start, n.end, n.pitch) for inst in pm.instruments for n in inst.notes)
        ours = sorted((s, e, p) for t in score_tracks(symusic.Score(str(midi_path)))
                      for s, e, p in zip(t.start.tolist(), t.end.tolist(), t.pitch.tolist()))
        assert ours == theirs
    pm = pretty_midi.PrettyMIDI(str(path))
    assert score_tracks(symusic.Score(str(path)))[0].pedal_time.tolist() == [c.time for c in pm.instruments[0].control_changes]
