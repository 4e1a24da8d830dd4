"""Event and Anticipatory ids of MIDI files against the ids their reference implementations give.

``fixtures/conformance/`` holds 52 targeted and 300 mixed MIDI files (sustain pedal, overlapping
same-pitch notes, tempo and program changes, several tracks and channels, drums) with the ids of
Magenta note-seq 0.0.5 (Event) and of jthickstun/anticipation's ``midi_to_events``
(Anticipatory); its README says how they were computed. ``fixtures/conformance/generated/`` holds
files of our own, one feature each, with note-seq's ids (``python -m tests.conformance_gen``).
Every file must match exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import symusic

from cadenza.data.errors import TokenizerError
from cadenza.tokenizers import get_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "conformance"
SETS = {"targeted": FIXTURES / "targeted", "mixed": FIXTURES / "mixed", "generated": FIXTURES / "generated"}
GOLDEN = {"targeted": FIXTURES / "golden_targeted.json", "mixed": FIXTURES / "golden_mixed.json",
          "generated": FIXTURES / "generated" / "golden.json"}


def goldens(name: str) -> dict:
    return json.loads(GOLDEN[name].read_text())


def mismatches(name: str, tokenize, key: str) -> list[str]:
    """Names of the files of a set whose ids differ from the golden (an empty golden: no notes to encode)."""
    bad = []
    for file_name, golden in goldens(name).items():
        if key not in golden:
            continue
        try:
            ids = tokenize(SETS[name] / file_name).tolist()
        except TokenizerError:
            ids = []
        if ids != golden[key]:
            bad.append(file_name)
    return bad


@pytest.mark.parametrize("name", ["targeted", "mixed", "generated"])
def test_event_ids_equal_note_seq(name):
    tok = get_tokenizer("event")
    assert mismatches(name, tok.encode, "event") == []


@pytest.mark.parametrize("name", ["targeted", "mixed", "generated"])
def test_anticipatory_events_equal_the_reference(name):
    tok = get_tokenizer("anticipatory")
    assert mismatches(name, tok.events, "anticipatory_events") == []


def test_the_sets_are_complete_and_cover_what_they_claim():
    for name in SETS:
        files = sorted(p.name for p in SETS[name].glob("*.mid"))
        assert files == sorted(goldens(name)), name
    targeted = goldens("targeted")
    assert len(targeted) == 52 and len(goldens("mixed")) == 300
    generated = goldens("generated")
    assert len(generated) >= 30
    assert all("event" in g and "anticipatory_events" in g for g in generated.values())


def test_the_generated_files_are_what_the_generator_builds():
    import conformance_gen

    assert conformance_gen.check() == 0


def test_a_file_without_pitched_notes_is_refused():
    """note-seq keeps nothing of a drums-only file (its golden is empty); the tokenizer says so."""
    assert goldens("generated")["drums_only.mid"]["event"] == []
    with pytest.raises(TokenizerError, match="no notes"):
        get_tokenizer("event").encode(SETS["generated"] / "drums_only.mid")


def test_a_file_and_its_score_differ_only_where_the_references_read_messages(tmp_path):
    """Encoding a Score keeps the Score's own notes; encoding the file applies the reference's reading."""
    path = SETS["targeted"] / "overlap_same_pitch.mid"
    tok = get_tokenizer("event")
    from_file = tok.encode(path).tolist()
    assert from_file == goldens("targeted")["overlap_same_pitch.mid"]["event"]
    score = symusic.Score(str(path))
    assert tok.encode(score).tolist() != from_file  # symusic pairs the overlapping notes its own way
    baseline = SETS["targeted"] / "baseline.mid"
    assert tok.encode(symusic.Score(str(baseline))).tolist() == tok.encode(baseline).tolist()


def test_anticipatory_reads_a_file_by_the_reference_rules_and_a_score_by_its_tracks():
    """A program change between a note-on and its note-off: the reference never ends the note (25 ticks)."""
    path = SETS["generated"] / "program_at_note_off.mid"
    tok = get_tokenizer("anticipatory")
    from_file = tok.events(path).tolist()
    assert from_file[:3] == [0, 10025, 11060]
    assert tok.events(symusic.Score(str(path))).tolist()[:3] != from_file[:3]


@pytest.mark.parametrize("scheme", ["event", "anticipatory"])
def test_broken_midi_files_are_refused_naming_the_file(tmp_path, scheme):
    from cadenza.data.errors import MusicFileError

    good = (SETS["targeted"] / "baseline.mid").read_bytes()
    cases = {"truncated.mid": good[:40], "not_midi.mid": b"RIFF0000WAVEfmt ", "empty.mid": b""}
    tok = get_tokenizer(scheme)
    encode = tok.encode if scheme == "event" else tok.events
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MusicFileError, match=name):
            encode(tmp_path / name)
    with pytest.raises(MusicFileError, match="missing.mid"):
        encode(tmp_path / "missing.mid")


def test_the_message_reader_reads_what_mido_reads():
    """Every message of every targeted and generated file: absolute tick, kind, channel, data, as mido has them."""
    import mido

    from cadenza.tokenizers.midi_messages import META, read_midi_messages

    kinds = {"note_off": 0x80, "note_on": 0x90, "polytouch": 0xA0, "control_change": 0xB0, "program_change": 0xC0,
             "aftertouch": 0xD0, "pitchwheel": 0xE0, "sysex": 0xF0}
    for path in sorted(SETS["targeted"].glob("*.mid")) + sorted(SETS["generated"].glob("*.mid")):
        theirs = mido.MidiFile(str(path))
        ours = read_midi_messages(path)
        assert (ours.file_type, ours.ticks_per_beat, len(ours.tracks)) == (theirs.type, theirs.ticks_per_beat,
                                                                             len(theirs.tracks)), path.name
        for mine, track in zip(ours.tracks, theirs.tracks):
            expected, tick = [], 0
            for message in track:
                tick += message.time
                if message.is_meta:
                    expected.append((tick, META, message.tempo if message.type == "set_tempo" else None))
                else:
                    values = {"note_on": ("note", "velocity"), "note_off": ("note", "velocity"),
                              "control_change": ("control", "value"), "program_change": ("program",)}.get(message.type, ())
                    expected.append((tick, kinds[message.type], getattr(message, "channel", 0),
                                     *[getattr(message, v) for v in values]))
            got = []
            for t, k, c, d1, d2 in zip(*(a.tolist() for a in (mine.tick, mine.kind, mine.channel, mine.data1, mine.data2))):
                if k == META:
                    got.append((t, META, d2 if d1 == 0x51 else None))
                else:
                    n = {0x80: 2, 0x90: 2, 0xB0: 2, 0xC0: 1}.get(k, 0)
                    got.append((t, k, c, *[d1, d2][:n]))
            assert got == expected, path.name
