"""Small MIDI files that each isolate one feature of MIDI reading, and their reference ids.

The files are built here with mido (deterministically, so the committed fixtures can be checked
against this script); their goldens come from the references themselves:

- ``event``: Magenta note-seq (``pip install -e '.[conformance]'``): ``midi_file_to_note_sequence``
  -> ``apply_sustain_control_changes`` -> drum notes dropped -> ``quantize_note_sequence_absolute(100)``
  -> ``Performance(num_velocity_bins=32, max_shift_steps=100)`` -> ``PerformanceOneHotEncoding``
  over pitches 0-127 (an empty list where no pitched note is left);
- ``anticipatory_events``: jthickstun/anticipation's ``convert.midi_to_events`` (not on PyPI: pass a
  checkout with ``--anticipation DIR``), triples sorted by (time, note, duration).

    python -m tests.conformance_gen                 # check the committed files against this script
    python -m tests.conformance_gen --regenerate [--anticipation DIR]   # rewrite files and goldens
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import mido

OUT = Path(__file__).parent / "fixtures" / "conformance" / "generated"
TPQ = 480          # at 120 qpm one tick is 1/960 s
S = 960            # ticks per second at 120 qpm
PEDAL = 64


def on(tick, pitch, velocity=80, channel=0):
    return tick, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)


def off(tick, pitch, channel=0, as_note_on=False):
    if as_note_on:
        return tick, mido.Message("note_on", note=pitch, velocity=0, channel=channel)
    return tick, mido.Message("note_off", note=pitch, velocity=0, channel=channel)


def note(start, end, pitch, velocity=80, channel=0):
    return [on(start, pitch, velocity, channel), off(end, pitch, channel)]


def pedal(tick, value, channel=0):
    return tick, mido.Message("control_change", control=PEDAL, value=value, channel=channel)


def program(tick, number, channel=0):
    return tick, mido.Message("program_change", program=number, channel=channel)


def tempo(tick, qpm):
    return tick, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm))


def midi(*tracks, tpq=TPQ, file_type=1) -> mido.MidiFile:
    """A MIDI file from tracks of (absolute tick, message); each track keeps its listed order at equal ticks."""
    out = mido.MidiFile(type=file_type, ticks_per_beat=tpq)
    for events in tracks:
        track = mido.MidiTrack()
        now = 0
        for tick, message in sorted(events, key=lambda e: e[0]):
            track.append(message.copy(time=tick - now))
            now = tick
        out.tracks.append(track)
    return out


def conductor(*events):
    return [tempo(0, 120), *events]


# -- the cases: name -> (what it isolates, file) ----------------------------------------------------------
def cases() -> dict[str, tuple[str, mido.MidiFile]]:
    c = {}
    c["baseline"] = ("a plain melody and a chord", midi(conductor(), [
        *note(0, S // 2, 60), *note(S // 2, S, 62), *note(S, 2 * S, 60), *note(S, 2 * S, 64), *note(S, 2 * S, 67)]))
    c["sustain_extends"] = ("notes released under the pedal last to the pedal-up", midi(conductor(), [
        pedal(10, 127), *note(0, S // 4, 60), *note(S // 4, S // 2, 64), pedal(2 * S, 0), *note(3 * S, 4 * S, 67)]))
    c["sustain_restrike_cuts"] = ("a pitch struck again under the pedal ends the earlier note", midi(conductor(), [
        pedal(0, 127), *note(0, S // 4, 60), *note(S, S + S // 4, 60), pedal(3 * S, 0)]))
    c["sustain_restrike_same_tick"] = ("two note-ons of one pitch at one tick under the pedal: one is deleted",
                                       midi(conductor(), [pedal(0, 127), on(S, 60, 50), on(S, 60, 100),
                                                          off(2 * S, 60), pedal(3 * S, 0), *note(4 * S, 5 * S, 62)]))
    c["sustain_release_at_note_off"] = ("the pedal lifts at the very tick of a note-off", midi(conductor(), [
        pedal(0, 127), *note(0, S, 60), pedal(S, 0), *note(0, 3 * S, 64), pedal(2 * S, 127), pedal(4 * S, 0)]))
    c["sustain_press_release_same_tick"] = ("press then release, and release then press, at one tick", midi(conductor(), [
        pedal(0, 127), *note(0, S // 2, 60), pedal(S, 127), pedal(S, 0), *note(S, S + S // 2, 62),
        pedal(2 * S, 0), pedal(2 * S, 127), *note(2 * S, 2 * S + S // 2, 64), pedal(3 * S, 0), *note(4 * S, 5 * S, 65)]))
    c["sustain_held_to_end"] = ("pedal never released; drums and a last CC64 end later", midi(conductor(), [
        pedal(0, 127), *note(0, S, 60), *note(S, 2 * S, 64)], [*note(0, 4 * S, 36, channel=9)],
        [pedal(3 * S, 100, channel=1)]))
    c["sustain_holding_list"] = ("CC64 before any note of its program: later instruments of the channel share it",
                                 midi(conductor(), [pedal(0, 127), program(S // 2, 40), *note(S // 2, S, 60),
                                                    program(S, 0), *note(S, S + S // 4, 62), pedal(3 * S, 0),
                                                    *note(4 * S, 5 * S, 64)]))
    c["sustain_existing_instrument"] = ("CC64 after the program's instrument exists goes to it alone", midi(conductor(), [
        *note(0, S // 4, 60), program(S // 2, 40), pedal(S // 2, 127), *note(S, S + S // 4, 62),
        program(2 * S, 0), *note(2 * S, 2 * S + S // 4, 64), pedal(3 * S, 0), *note(4 * S, 5 * S, 65)]))
    c["sustain_after_pitch_bend"] = ("a pitch bend creates the holding list that a later pedal joins", midi(conductor(), [
        (0, mido.Message("pitchwheel", pitch=100)), pedal(10, 127), *note(20, S // 4, 60), pedal(2 * S, 0),
        *note(3 * S, 4 * S, 62)]))
    c["sustain_other_channel"] = ("a pedal on channel 1 does not hold channel 0's notes", midi(conductor(), [
        pedal(0, 127, channel=1), *note(0, S // 4, 60), *note(S, 2 * S, 48, channel=1), pedal(3 * S, 0, channel=1)]))
    c["tempo_track0_only"] = ("tempo events outside track 0 are ignored", midi(conductor(tempo(S, 60)), [
        tempo(S // 2, 200), *note(0, S, 60), *note(2 * S, 3 * S, 62), *note(4 * S, 5 * S, 64)]))
    c["tempo_repeated_and_at_zero"] = ("two tempi at tick 0 (the last wins) and a repeated tempo", midi(
        [tempo(0, 100), tempo(0, 90), tempo(S, 90), tempo(2 * S, 150)],
        [*note(0, S, 60), *note(S + 7, 2 * S + 7, 62), *note(3 * S, 4 * S, 64)]))
    c["noteoff_closes_every_earlier_onset"] = ("one note-off ends two open notes of its pitch", midi(conductor(), [
        on(0, 60), on(S // 2, 60, 100), off(S, 60), *note(2 * S, 3 * S, 62)]))
    c["noteoff_keeps_onset_of_its_tick"] = ("off and on at one tick: the new note stays open", midi(conductor(), [
        on(0, 60), on(S, 60, 100), off(S, 60), off(2 * S, 60), *note(3 * S, 4 * S, 62)]))
    c["zero_length_and_unclosed"] = ("a zero-length note, a never-closed note, a note-off with no note-on", midi(
        conductor(), [on(0, 60), off(0, 60), *note(S // 2, S, 62), off(S, 70), on(2 * S, 64), *note(3 * S, 4 * S, 65)]))
    c["velocity0_noteoff"] = ("note-on of velocity 0 as note-off", midi(conductor(), [
        on(0, 60), off(S // 2, 60, as_note_on=True), on(S, 62, 127), off(2 * S, 62, as_note_on=True)]))
    c["instrument_order_first_closed"] = ("same start and pitch on two channels: the first closed comes first",
                                          midi(conductor(), [on(0, 60, 30, 1), on(0, 60, 110, 0), off(S, 60, 1),
                                                             off(2 * S, 60, 0)]))
    c["program_at_note_off"] = ("a program change between a note's on and off", midi(conductor(), [
        on(0, 60), program(S // 2, 40), off(S, 60), *note(2 * S, 3 * S, 62)]))
    c["program_shared_across_tracks"] = ("a program change in one track, notes of that channel in another", midi(
        conductor(), [program(0, 33, 1), program(2 * S, 40, 1)], [*note(0, S, 40, channel=1),
                                                                 *note(3 * S, 4 * S, 43, channel=1)]))
    c["noteoff_in_other_track"] = ("a note-on in one track, its note-off in another", midi(conductor(), [
        on(0, 60), *note(2 * S, 3 * S, 62)], [off(S, 60)]))
    c["dense_chords"] = ("12-note chords every 60 ms", midi(conductor(), [
        m for k in range(12) for p in range(48, 84, 3) for m in note(k * 58, k * 58 + 50, p, 20 + 8 * (p % 12))]))
    c["velocity_boundaries"] = ("velocities at the edges of the 32 bins", midi(conductor(), [
        m for k, v in enumerate([1, 4, 5, 8, 9, 64, 124, 125, 126, 127]) for m in note(k * S // 4, k * S // 4 + 100, 60, v)]))
    c["pitch_extremes"] = ("pitches 0 and 127 with 21 and 108", midi(conductor(), [
        *note(0, S, 0), *note(0, S, 127), *note(S, 2 * S, 21), *note(S, 2 * S, 108)]))
    c["drums_mixed"] = ("drums on channel 10 between pitched notes", midi(conductor(), [
        *note(0, S, 60), *note(S // 4, S // 2, 36, channel=9), *note(S // 2, 3 * S // 4, 60, channel=9),
        *note(S, 2 * S, 64)]))
    c["drums_only"] = ("only drums: note-seq keeps nothing", midi(conductor(), [
        *note(0, S // 4, 36, channel=9), *note(S // 2, 3 * S // 4, 38, channel=9)]))
    c["rest_one_second"] = ("rests of exactly 1 s, 2 s and 1.01 s", midi(conductor(), [
        *note(0, 10, 60), *note(S, S + 10, 62), *note(3 * S, 3 * S + 10, 64), *note(4 * S + 10, 4 * S + 20, 65)],
        tpq=TPQ))
    c["rest_over_ten_seconds"] = ("a rest of 12.5 s", midi(conductor(), [*note(0, S, 60), *note(13 * S + S // 2, 14 * S, 62)]))
    c["note_over_ten_seconds"] = ("a note of 10.5 s", midi(conductor(), [*note(0, 10 * S + S // 2, 60), *note(S, 2 * S, 64)]))
    c["note_over_hundred_seconds"] = ("a note of 101 s and a note after it", midi(conductor(), [
        *note(0, 101 * S, 48), *note(S, 2 * S, 60), *note(102 * S, 103 * S, 62)]))
    c["rolled_chord_in_one_step"] = ("a chord rolled downwards within 10 ms", midi(conductor(), [
        *note(0, S, 72, 90), *note(2, S, 67, 70), *note(4, S, 64, 50), *note(6, S, 60, 30)]))
    c["nested_same_pitch"] = ("a note of one pitch inside a longer one, with a note of another pitch between",
                              midi(conductor(), [on(0, 60), on(10, 62), on(20, 60, 100), off(50, 62), off(52, 60),
                                                 off(S, 60)]))
    c["half_step_ties"] = ("tpq 100 at 120 qpm: 5 ms ticks fall on .5 step ties", midi(conductor(), [
        *note(1, 3, 60), *note(5, 8, 62), *note(11, 101, 64), *note(203, 305, 65)], tpq=100))
    c["type0_channels"] = ("type 0: two channels and programs in one track, tempo change", midi(
        [tempo(0, 100), program(0, 33, 1), *note(0, S, 40, channel=1), *note(0, S // 2, 64), tempo(S, 150),
         *note(S, 2 * S, 67), program(S + S // 2, 0, 1), *note(2 * S, 3 * S, 43, channel=1)], file_type=0))
    return c


def running_status_file() -> bytes:
    """A hand-written file: running status, a sysex and text events between notes (mido never writes these)."""
    def vlq(value):
        out = [value & 0x7F]
        value >>= 7
        while value:
            out.insert(0, 0x80 | (value & 0x7F))
            value >>= 7
        return bytes(out)

    body = b"".join([
        vlq(0), b"\xff\x51\x03\x07\xa1\x20",            # 120 qpm
        vlq(0), b"\x90\x3c\x50",                        # on 60
        vlq(7), b"\x40\x50",                            # running status: on 64
        vlq(333), b"\xff\x01\x03abc",                   # a text event (does not break running status)
        vlq(100), b"\x3c\x00",                          # running status: on 60 velocity 0 (off)
        vlq(13), b"\xf0\x03\x7e\x00\xf7",               # a sysex
        vlq(200), b"\x80\x40\x00",                      # off 64
        vlq(5), b"\xb0\x40\x7f", vlq(0), b"\x90\x43\x40", vlq(481), b"\x80\x43\x00", vlq(3), b"\xb0\x40\x00",
        vlq(0), b"\xff\x2f\x00",
    ])
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + TPQ.to_bytes(2, "big")
    return header + b"MTrk" + len(body).to_bytes(4, "big") + body


def file_bytes() -> dict[str, bytes]:
    out = {}
    for name, (_, file) in cases().items():
        data = io.BytesIO()
        file.save(file=data)
        out[f"{name}.mid"] = data.getvalue()
    out["running_status_sysex_text.mid"] = running_status_file()
    return out


def descriptions() -> dict[str, str]:
    out = {f"{name}.mid": what for name, (what, _) in cases().items()}
    out["running_status_sysex_text.mid"] = "running status, a sysex and a text event between notes"
    return out


# -- the references ------------------------------------------------------------------------------------
def note_seq_ids(path: Path) -> list[int]:
    import note_seq
    from note_seq import performance_lib, sequences_lib
    from note_seq.performance_encoder_decoder import PerformanceOneHotEncoding

    sequence = sequences_lib.apply_sustain_control_changes(note_seq.midi_file_to_note_sequence(str(path)))
    pitched = [n for n in sequence.notes if not n.is_drum]
    del sequence.notes[:]
    sequence.notes.extend(pitched)
    quantized = sequences_lib.quantize_note_sequence_absolute(sequence, 100)
    performance = performance_lib.Performance(quantized, num_velocity_bins=32, max_shift_steps=100)
    encoding = PerformanceOneHotEncoding(num_velocity_bins=32, max_shift_steps=100, min_pitch=0, max_pitch=127)
    return [int(encoding.encode_event(event)) for event in performance]


def anticipation_events(path: Path, checkout: Path) -> list[int]:
    sys.path.insert(0, str(checkout))
    try:
        from anticipation.convert import midi_to_events
    finally:
        sys.path.pop(0)
    events = midi_to_events(str(path))
    rows = sorted(zip(events[0::3], events[1::3], events[2::3]), key=lambda t: (t[0], t[2], t[1]))
    return [int(v) for row in rows for v in row]


def regenerate(anticipation: Path | None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.glob("*.mid"):
        stale.unlink()
    golden = {}
    for name, data in file_bytes().items():
        path = OUT / name
        path.write_bytes(data)
        golden[name] = {"feature": descriptions()[name], "event": note_seq_ids(path)}
        if anticipation is not None:
            golden[name]["anticipatory_events"] = anticipation_events(path, anticipation)
    (OUT / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {len(golden)} files and {OUT / 'golden.json'}")


def check() -> int:
    """0 when the committed files are the bytes this script builds and every one has a golden."""
    golden = json.loads((OUT / "golden.json").read_text())
    built = file_bytes()
    stale = [n for n, data in built.items() if not (OUT / n).exists() or (OUT / n).read_bytes() != data]
    missing = sorted(set(built) ^ set(golden))
    for name in stale + missing:
        print(f"out of date: {name} (run python -m tests.conformance_gen --regenerate)")
    return 1 if stale or missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate", action="store_true", help="rewrite the files and their goldens (needs note-seq)")
    parser.add_argument("--anticipation", type=Path, help="a checkout of jthickstun/anticipation, for its goldens")
    args = parser.parse_args(argv)
    if args.regenerate:
        regenerate(args.anticipation)
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
