"""The anticipatory tokenizer against the reference's algorithms (jthickstun/anticipation).

Known vectors are worked out by hand from the reference's rules. The vectorized operations are
checked against step-by-step list versions of the same rules (``stepwise_*`` below, one loop
iteration per triple as the reference runs them), and event times against a mido reader that
follows the reference's ``midi_to_compound``.
"""

from __future__ import annotations

import io
from collections import defaultdict

import mido
import numpy as np
import pytest
import symusic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.data.errors import TokenizerError
from cadenza.tokenizers import Tokenizer, get_tokenizer
from cadenza.tokenizers import anticipation_ops as ops
from cadenza.tokenizers.anticipation_ops import (
    ANTICIPATE, AUTOREGRESS, CONTROL_OFFSET, REST, SEPARATOR,
)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("anticipatory")


# -- step-by-step statements of the reference's rules --------------------------------------------
def triples(tokens):
    tokens = list(map(int, tokens))
    return list(zip(tokens[0::3], tokens[1::3], tokens[2::3]))


def stepwise_time(time, note):
    return time - (CONTROL_OFFSET if note >= CONTROL_OFFSET else 0)


def stepwise_pad(tokens, end_time):
    out, previous = [], 0
    for time, dur, note in triples(tokens):
        while time > previous + 100:
            previous += 100
            out += [previous, 10000, REST]
        out += [time, dur, note]
        previous = time
    while end_time > previous + 100:
        previous += 100
        out += [previous, 10000, REST]
    return out


def stepwise_anticipate(events, controls, delta=500):
    controls = triples(controls)
    out, previous = [], 0
    for time, dur, note in triples(events):
        while controls and previous >= controls[0][0] - CONTROL_OFFSET - delta:
            out += list(controls.pop(0))
        out += [time, dur, note]
        previous = time
    return out, [t for c in controls for t in c]


def stepwise_spans(events, rate, rng):
    kept, controls, in_span, span_end, next_span = [], [], True, 0, 0
    for time, dur, note in triples(events):
        if in_span and time >= span_end:
            in_span = False
            next_span = time + int(100 * rng.exponential(1.0 / rate))
        if not in_span and time >= next_span:
            in_span = True
            span_end = time + 500
        if in_span:
            controls += [time + CONTROL_OFFSET, dur + CONTROL_OFFSET, note + CONTROL_OFFSET]
        else:
            kept += [time, dur, note]
    return kept, controls


def stepwise_pack(streams, body=1023):
    """The reference's tokenize() loop: separators, chunks, relativized times, flags."""
    buffer, out, flag = [], [], None
    for tokens, stream_flag in streams:
        if not buffer:
            flag = stream_flag
        buffer += [SEPARATOR] * 3 + list(map(int, tokens))
        while len(buffer) >= body:
            chunk, buffer = buffer[:body], buffer[body:]
            before = []
            for time, dur, note in triples(chunk):
                if note == SEPARATOR:
                    break
                before.append(stepwise_time(time, note))
            shift = -min(before) if before else 0
            shifted, overflow = [], False
            for time, dur, note in triples(chunk):
                if note == SEPARATOR:
                    shift = 0
                    shifted += [time, dur, note]
                    continue
                if not 0 <= stepwise_time(time, note) + shift < 10000:
                    overflow = True
                shifted += [time + shift, dur, note]
            if overflow:
                continue
            out.append([flag] + shifted)
            flag = stream_flag
    return out


def mido_events(data: bytes):
    """Events as the reference's midi_to_compound + compound_to_events compute them, sorted."""
    midi = mido.MidiFile(file=io.BytesIO(data))
    notes, pending, programs, now = [], defaultdict(list), defaultdict(int), 0
    for message in midi:
        now += message.time
        if message.type == "program_change":
            programs[message.channel] = message.program
        elif message.type in ("note_on", "note_off"):
            instrument = 128 if message.channel == 9 else programs[message.channel]
            key = (instrument, message.note, message.channel)
            if message.type == "note_on" and message.velocity > 0:
                notes.append([round(100 * now), -1, 128 * instrument + message.note])
                pending[key].append((len(notes) - 1, now))
            elif pending[key]:
                index, onset = pending[key].pop(0)
                notes[index][1] = round(100 * (now - onset))
    rows = [(t, 25 if d == -1 else min(d, 999), n) for t, d, n in notes]
    rows.sort(key=lambda row: (row[0], row[2], row[1]))
    return [v for t, d, n in rows for v in (t, 10000 + d, 11000 + n)]


def decoded_notes(score):
    """Sorted (time, duration, pitch, instrument) of a decoded Score, in 10 ms ticks."""
    assert score.tpq == 50 and score.tempos[0].mspq == 500000
    rows = []
    for track in score.tracks:
        instrument = 128 if track.is_drum else track.program
        rows += [(n.time, n.duration, n.pitch, instrument) for n in track.notes]
        assert all(n.velocity == 72 for n in track.notes)
    return sorted(rows)


def events_as_notes(events):
    return sorted((t, d - 10000, (n - 11000) % 128, (n - 11000) // 128) for t, d, n in triples(events))


# -- vocabulary ----------------------------------------------------------------------------------
def test_vocabulary_matches_the_reference(tok):
    assert (ops.DUR_OFFSET, ops.NOTE_OFFSET, REST, CONTROL_OFFSET) == (10000, 11000, 27512, 27513)
    assert (ops.ADUR_OFFSET, ops.ANOTE_OFFSET, SEPARATOR, AUTOREGRESS, ANTICIPATE) == (37513, 38513, 55025, 55026, 55027)
    assert tok.base_vocab_size == 55028 and tok.vocab_size == 55031
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (55028, 55029, 55030)
    ranges = tok.ranges()
    assert ranges[0][1] == 0 and ranges[-1][2] == 55028
    assert all(a[2] == b[1] for a, b in zip(ranges, ranges[1:]))
    assert tok.tokens_to_str([125, 10050, 11000 + 33 * 128 + 40, REST, 27513 + 7, 38513 + 128 * 128 + 36, SEPARATOR,
                              ANTICIPATE, 55029]) == [
        "TIME(125)", "DUR(50)", "NOTE(i33,p40)", "REST", "ATIME(7)", "ANOTE(drums,p36)", "SEPARATOR",
        "ANTICIPATE", "BOS"]
    text = tok.describe()
    assert "55028 scheme ids" in text and "27513-37512" in text and "ANTICIPATE" in text


def test_save_load_keeps_the_config(tmp_path):
    tok = get_tokenizer("anticipatory", controls="instruments:0", seed=3)
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.config == {"controls": "instruments:0", "seed": 3, "overlong": "error"}
    assert again.to_dict() == tok.to_dict()


# -- MIDI to events ------------------------------------------------------------------------------
def known_midi() -> bytes:
    """Four tracks at 480 tpq: 120 bpm, then 60 bpm from 1 s; piano, bass (program 33), drums."""
    midi = mido.MidiFile(ticks_per_beat=480)
    tempo, piano, bass, drums = (mido.MidiTrack() for _ in range(4))
    midi.tracks += [tempo, piano, bass, drums]
    tempo += [mido.MetaMessage("set_tempo", tempo=500000, time=0),
              mido.MetaMessage("set_tempo", tempo=1000000, time=960)]
    piano += [mido.Message("note_on", note=60, velocity=90, time=0),      # 0 s, 0.5 s long
              mido.Message("note_on", note=64, velocity=90, time=120),    # 0.125 s: 12.5 -> 12 (half to even)
              mido.Message("note_off", note=64, velocity=0, time=120),
              mido.Message("note_off", note=60, velocity=0, time=240),
              mido.Message("note_on", note=48, velocity=90, time=1680),   # 3.5 s, 12 s long -> 999
              mido.Message("note_off", note=48, velocity=0, time=5760)]
    bass += [mido.Message("program_change", channel=1, program=33, time=0),
             mido.Message("note_on", channel=1, note=40, velocity=70, time=1200),   # 1.5 s (60 bpm part)
             mido.Message("note_off", channel=1, note=40, velocity=0, time=240)]    # 0.5 s
    drums += [mido.Message("note_on", channel=9, note=36, velocity=100, time=240),  # 0.25 s
              mido.Message("note_off", channel=9, note=36, velocity=0, time=24)]    # 0.275-0.25 = 2.5000000000000022 -> 3
    data = io.BytesIO()
    midi.save(file=data)
    return data.getvalue()


KNOWN_EVENTS = [0, 10050, 11060,            # C4 piano, 0.50 s
                12, 10012, 11064,           # E4 at 12.5 -> 12, lasting 12.5 -> 12
                25, 10003, 27420,           # drums (instrument 128) pitch 36
                150, 10050, 15264,          # 128*33 + 40
                350, 10999, 11048]          # 12 s, capped at 999


def test_known_midi_gives_the_reference_events(tok):
    data = known_midi()
    assert mido_events(data) == KNOWN_EVENTS
    assert tok.events(symusic.Score.from_midi(data)).tolist() == KNOWN_EVENTS


def test_known_midi_encodes_padded_and_with_instrument_controls(tok):
    score = symusic.Score.from_midi(known_midi())
    # a REST after each 100 ticks of silence: 25 -> 150 gets one at 125, 150 -> 350 one at 250
    assert tok.encode(score).tolist() == [0, 10050, 11060, 12, 10012, 11064, 25, 10003, 27420,
                                          125, 10000, REST, 150, 10050, 15264, 250, 10000, REST,
                                          350, 10999, 11048]
    # the bass becomes a control; 150 - 500 <= 0, so it is anticipated before the first event
    assert tok.encode(score, controls="instruments:33").tolist() == [
        27513 + 150, 37513 + 50, 38513 + 33 * 128 + 40,
        0, 10050, 11060, 12, 10012, 11064, 25, 10003, 27420,
        125, 10000, REST, 225, 10000, REST, 325, 10000, REST, 350, 10999, 11048]


def test_scores_in_quarters_and_seconds_encode_alike(tok):
    score = symusic.Score.from_midi(known_midi())
    assert tok.events(score.to("quarter")).tolist() == KNOWN_EVENTS
    # seconds come from symusic's float32 times; on this score they round the same way
    assert tok.events(score.to("second")).tolist() == KNOWN_EVENTS


def test_chorales_match_the_reference_reader(tok, bach_pieces):
    for piece in bach_pieces:
        data = piece.path.read_bytes()
        assert tok.events(symusic.Score.from_midi(data)).tolist() == mido_events(data), piece.id


# -- operations: known vectors ---------------------------------------------------------------------
def test_pad_known_vector():
    events = [0, 10010, 11060, 50, 10010, 11062, 350, 10010, 11064]
    assert ops.pad(events, 600).tolist() == [0, 10010, 11060, 50, 10010, 11062,
                                             150, 10000, REST, 250, 10000, REST,
                                             350, 10010, 11064, 450, 10000, REST, 550, 10000, REST]
    # exactly 100 ticks apart needs no rest; end_time 0 means the sequence's own end
    assert ops.pad([100, 10001, 11000, 200, 10001, 11000], 0).tolist() == [100, 10001, 11000, 200, 10001, 11000]
    assert ops.unpad(ops.pad(events, 600)).tolist() == events


def test_anticipate_known_vector():
    events = [0, 10010, 11060, 100, 10010, 11060, 300, 10010, 11060, 800, 10010, 11060, 900, 10010, 11060]
    controls = [27513 + 400, 37513, 38513, 27513 + 700, 37513, 38513, 27513 + 1500, 37513, 38513]
    tokens, left = ops.anticipate(events, controls)
    # control 400: 0 >= -100 before event 0; control 700: needs a previous event >= 200, i.e.
    # 300, so it goes before event 800; control 1500 needs a previous event >= 1000: left over
    assert tokens.tolist() == [27913, 37513, 38513, 0, 10010, 11060, 100, 10010, 11060, 300, 10010, 11060,
                               28213, 37513, 38513, 800, 10010, 11060, 900, 10010, 11060]
    assert left.tolist() == [29013, 37513, 38513]
    assert stepwise_anticipate(events, controls) == (tokens.tolist(), left.tolist())


def test_split_clip_translate_known_vectors():
    tokens = [27513 + 50, 37513 + 300, 38513 + 60, 0, 10200, 11060, 250, 10100, 11062, 400, 10010, 11064]
    events, controls = ops.split(tokens)
    assert events.tolist() == tokens[3:] and controls.tolist() == tokens[:3]
    # keep times in [0.5 s, 3 s]; the control (0.5 s + 3 s) is cut to end at 3 s
    assert ops.clip(tokens, 0.5, 3.0).tolist() == [27563, 37513 + 250, 38573, 250, 10050, 11062]
    assert ops.translate(tokens, 100).tolist() == [27663, 37813, 38573, 100, 10200, 11060,
                                                   350, 10100, 11062, 500, 10010, 11064]
    # times after a SEPARATOR belong to the next piece and stay put
    assert ops.translate([5, 10001, 11000, SEPARATOR, SEPARATOR, SEPARATOR, 7, 10001, 11000], -5).tolist() == [
        0, 10001, 11000, SEPARATOR, SEPARATOR, SEPARATOR, 7, 10001, 11000]
    with pytest.raises(ops.TimeOverflowError):
        ops.translate(tokens, 9700)
    assert ops.min_time(tokens, seconds=False) == 0 and ops.max_time(tokens) == 4.0
    assert ops.get_instruments(tokens) == {0: 4}


def test_controls_specs_pick_notes(tok, bach_scores):
    score = bach_scores[0]
    plain = tok.encode(score)
    for spec in ("random:0.3", "span:0.05"):
        tokens = tok.encode(score, controls=spec, seed=1)
        assert np.any(tokens >= CONTROL_OFFSET)
        assert decoded_notes(tok.decode(tokens)) == decoded_notes(tok.decode(plain))
        assert np.array_equal(tokens, tok.encode(score, controls=spec, seed=1))   # seeded
    assert not np.array_equal(tok.encode(score, controls="random:0.3", seed=1),
                              tok.encode(score, controls="random:0.3", seed=2))
    assert not np.any(tok.encode(score, controls="random:0") >= CONTROL_OFFSET)
    # random controls: one uniform draw per note, in order, as the reference's extract_random
    events = tok.events(score)
    chosen = np.random.RandomState(5).random_sample(len(events) // 3) < 0.3
    assert ops.split(tok.encode(score, controls="random:0.3", seed=5))[1].tolist() == (
        (events.reshape(-1, 3)[chosen] + CONTROL_OFFSET).ravel().tolist())


# -- operations against their step-by-step statements -------------------------------------------
event_lists = st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 999), st.integers(0, 16511)), max_size=40)


def to_events(rows):
    rows = sorted(rows)
    return [v for t, d, n in rows for v in (t, 10000 + d, 11000 + n)]


@SETTINGS
@given(event_lists, st.integers(0, 4000), st.lists(st.integers(0, 4000), max_size=12))
def test_pad_and_anticipate_match_stepwise(rows, end_time, control_times):
    events = to_events(rows)
    assert ops.pad(events, end_time).tolist() == stepwise_pad(events, end_time or ops.max_time(events, seconds=False))
    controls = [v for t in sorted(control_times) for v in (27513 + t, 37513 + 5, 38513 + 60)]
    padded = ops.pad(events, end_time)
    tokens, left = ops.anticipate(padded, controls)
    assert (tokens.tolist(), left.tolist()) == stepwise_anticipate(padded.tolist(), controls)


@SETTINGS
@given(event_lists, st.sampled_from([0.05, 0.2, 1.0]), st.integers(0, 2**16))
def test_span_controls_match_stepwise(rows, rate, seed):
    events = to_events(rows)
    kept, controls = ops.extract_spans(events, rate, np.random.RandomState(seed))
    assert (kept.tolist(), controls.tolist()) == stepwise_spans(events, rate, np.random.RandomState(seed))


# -- round trips --------------------------------------------------------------------------------
@st.composite
def scores(draw):
    """A multi-track score at 480 tpq with chords, same-pitch overlaps, long rests and long notes."""
    score = symusic.Score(480)
    for tick, qpm in draw(st.lists(st.tuples(st.integers(0, 20000), st.sampled_from([60.0, 90.0, 120.0, 151.0])),
                                   min_size=1, max_size=3)):
        score.tempos.append(symusic.Tempo(tick, qpm=qpm))
    for program, is_drum in draw(st.lists(st.sampled_from([(0, False), (33, False), (73, False), (0, True)]),
                                          min_size=1, max_size=3, unique=True)):
        track = symusic.Track(program=program, is_drum=is_drum)
        grid = draw(st.sampled_from([1, 30, 120, 240]))
        for start, length, pitch in draw(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 100),
                                                            st.integers(0, 127)), min_size=1, max_size=25)):
            track.notes.append(symusic.Note(start * grid, length * grid * draw(st.sampled_from([1, 1, 40])), pitch, 80))
        score.tracks.append(track)
    return score


@SETTINGS
@given(scores(), st.sampled_from([None, "instruments:33,128", "random:0.5", "span:0.1"]))
def test_round_trip_is_the_reference_quantization(score, controls):
    tok = get_tokenizer("anticipatory", overlong="clip")
    data = score.dumps_midi()
    read_back = symusic.Score.from_midi(data)   # the same file mido reads
    expected = [row for row in triples(mido_events(data)) if row[0] < 10000]
    assert tok.events(read_back).tolist()[: 3 * len(expected)] == [v for row in expected for v in row]
    tokens = tok.encode(read_back, controls=controls, seed=7)
    decoded = tok.decode(tokens)
    assert decoded_notes(decoded) == events_as_notes([v for row in expected for v in row])
    # a decoded score is already quantized: it encodes to the same sequence
    if expected:   # (unless every note started after 100 s and was clipped)
        assert np.array_equal(tok.encode(decoded, controls=controls, seed=7), tokens)


def test_chorales_round_trip(tok, bach_scores):
    for score in bach_scores:
        tokens = tok.encode(score)
        decoded = tok.decode(tokens)
        assert decoded_notes(decoded) == events_as_notes(tok.events(score))
        assert np.array_equal(tok.encode(decoded), tokens)
        events, controls = ops.extract_instruments(tok.events(score), [0])
        # instrument controls are the reference's pad(events, end) then anticipate(events, controls)
        stepwise, left = stepwise_anticipate(stepwise_pad(events, ops.max_time(tok.events(score), seconds=False)),
                                             controls)
        assert tok.encode(score, controls="instruments:0").tolist() == stepwise + left


def test_decode_follows_pieces_across_separators(tok):
    first = [0, 10100, 11060, 50, 10300, 11064]            # ends at 350
    second = [20, 10010, 11000 + 128 * 128 + 36]
    score = tok.decode([AUTOREGRESS] + first + [SEPARATOR] * 3 + second + [tok.eos_id])
    assert decoded_notes(score) == [(0, 100, 60, 0), (50, 300, 64, 0), (370, 10, 36, 128)]
    assert [t.is_drum for t in score.tracks] == [False, True]


# -- training sequences ---------------------------------------------------------------------------
def test_training_sequences_known_vector():
    # context 7 = flag + 2 triples. Piece A pads RESTs at 100 and 220 (250 - 120 > 100):
    # stream SEP R100 e120 R220 e250 | SEP e30, cut two triples at a time
    piece_a = [120, 10005, 11060, 250, 10005, 11062]
    piece_b = [30, 10005, 11070]
    sequences = ops.training_sequences([piece_a, piece_b], context_size=7)
    S = SEPARATOR
    assert sequences.tolist() == [
        [AUTOREGRESS, S, S, S, 100, 10000, REST],            # a leading SEPARATOR: no shift
        [AUTOREGRESS, 0, 10005, 11060, 100, 10000, REST],    # 120 -> 0, 220 -> 100
        [AUTOREGRESS, 0, 10005, 11062, S, S, S],             # min time stops at the SEPARATOR
    ]                                                        # e30 waits for more tokens


def test_training_sequences_match_the_reference_loop(tok, bach_scores):
    pieces = [tok.events(score) for score in bach_scores[:8]]
    pieces = [p[p.reshape(-1, 3)[:, 0].repeat(3) < 10000] for p in pieces]
    sequences = ops.training_sequences(pieces, augment_factor=10, seed=0)
    assert sequences.shape[1] == 1024 and sequences.shape[0] > 50
    streams = list(ops.augmented_streams(pieces, augment_factor=10, seed=0))
    assert sequences.tolist() == stepwise_pack(streams)
    assert set(sequences[:, 0].tolist()) == {AUTOREGRESS, ANTICIPATE}
    assert sequences[0, 1:4].tolist() == [SEPARATOR] * 3
    assert np.all(sequences[:, 1:] < AUTOREGRESS)
    # nine of ten augmentations carry controls; the first of each piece does not
    assert [flag for _, flag in streams[:10]] == [AUTOREGRESS] + [ANTICIPATE] * 9
    assert not np.any(streams[0][0] >= CONTROL_OFFSET) and np.any(streams[1][0] >= CONTROL_OFFSET)
    for tokens, _ in streams[:10]:   # every augmentation keeps every note
        assert decoded_notes(tok.decode(tokens)) == decoded_notes(tok.decode(streams[0][0]))


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_is_refused(tok):
    with pytest.raises(TokenizerError, match="no notes"):
        tok.encode(symusic.Score(480))
    long_score = symusic.Score(480)
    track = symusic.Track()
    track.notes.append(symusic.Note(0, 480, 60, 80))
    track.notes.append(symusic.Note(480 * 2 * 101, 480, 62, 80))      # starts at 101 s
    long_score.tracks.append(track)
    with pytest.raises(TokenizerError, match="below 100 s"):
        tok.encode(long_score)
    assert get_tokenizer("anticipatory", overlong="clip").encode(long_score).tolist() == [0, 10050, 11060]
    bad_pitch = symusic.Score(480)
    bad_pitch.tracks.append(symusic.Track())
    bad_pitch.tracks[0].notes.append(symusic.Note(0, 10, -3, 80))
    with pytest.raises(TokenizerError, match="pitch"):
        tok.encode(bad_pitch)
    short_score = symusic.Score.from_midi(known_midi())
    for spec in ("instruments:", "instruments:200", "random:1.5", "span:0", "chords:3"):
        with pytest.raises(TokenizerError, match="bad controls"):
            tok.encode(short_score, controls=spec)
    with pytest.raises(TokenizerError, match="triples"):
        tok.decode([0, 10050])
    with pytest.raises(TokenizerError, match="not a valid"):
        tok.decode([0, 11060, 10050])
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([0, 10050, 99999])
    with pytest.raises(TokenizerError, match="splits"):
        tok.decode([0, AUTOREGRESS, 10050, 11060])
    with pytest.raises(TokenizerError, match="unknown"):
        get_tokenizer("anticipatory", delta=3)
    with pytest.raises(TokenizerError, match="events only"):
        ops.pad([27513, 37513, 38513], 0)
