"""MIDI files read as Magenta reads them for the Event tokenizer: note_seq over pretty_midi.

The Event scheme's reference is note_seq's ``midi_file_to_note_sequence`` (which reads the file
with pretty_midi), ``apply_sustain_control_changes``, ``quantize_note_sequence_absolute`` and
``Performance``. When a MIDI *file* is encoded, this module turns its messages into the
instruments those functions see; every rule below names the function it follows.

- Tempo (pretty_midi ``PrettyMIDI._load_tempo_changes``): only track 0's set_tempo events count;
  one at tick 0 replaces the 120 qpm default (the last such wins); a later one that gives the same
  seconds per tick as the tempo before it starts no new segment. Seconds follow
  ``_update_tick_to_time`` (see ``event.tick_seconds``).
- Notes (``PrettyMIDI._load_instruments``): per track, channel and pitch, a note-off (or a note-on
  of velocity 0) at tick t closes every open note begun before t; notes begun at t stay open
  only if the note-off closed something, otherwise they are forgotten; a note-off with nothing
  open is ignored; notes never closed are lost. So no note has zero length.
- Instruments (``_load_instruments``): a closed note belongs to (the channel's program in that
  track at the note-off, channel, track); instruments are listed in the order of their first
  closed note, tracks in file order, and each keeps its notes in closing order. note_seq's
  ``midi_to_note_sequence`` appends the notes instrument by instrument, and that order breaks the
  (start, pitch) ties of ``Performance``'s sort. Channel 10 (index 9) is a drum instrument.
- Sustain pedal events (``_load_instruments``' ``__get_instrument`` with ``create_new=False``): a
  control change (or pitch bend) goes to the instrument (program now, channel, track) if it
  exists; otherwise to a holding instrument of (channel, track), created by the first such
  event, whose list of control changes every instrument of that (channel, track) created later
  shares (pretty_midi hands the same list object on). note_seq copies every instrument's control
  changes into the sequence, so a shared event counts for each instrument that shares it.

Sustain itself (per instrument, ``apply_sustain_control_changes``) is ``event.apply_sustain``.
"""

from __future__ import annotations

import os

import numpy as np

from .event import _TrackArrays, tick_seconds
from cadenza.data.errors import TokenizerError

from .midi_messages import (
    CONTROL_CHANGE, META, NOTE_OFF, NOTE_ON, PITCH_WHEEL, PROGRAM_CHANGE, SET_TEMPO, MidiMessages,
    read_midi_messages,
)

DRUM_CHANNEL = 9
SUSTAIN_CONTROL = 64
DEFAULT_MSPQ = 500000


def tempo_map(messages: MidiMessages, path: str | os.PathLike = "<midi>") -> tuple[np.ndarray, np.ndarray]:
    """(ticks, microseconds per quarter) of the tempo segments pretty_midi builds from track 0.

    A tempo of 0 microseconds per quarter is refused: pretty_midi divides by it, and note_seq's
    ``midi_file_to_note_sequence`` turns that ZeroDivisionError into a MIDIConversionError."""
    if not messages.tracks:
        return np.zeros(1, np.int64), np.full(1, DEFAULT_MSPQ, np.float64)
    track = messages.tracks[0]
    is_tempo = (track.kind == META) & (track.data1 == SET_TEMPO)
    ticks, mspq = track.tick[is_tempo].tolist(), track.data2[is_tempo].tolist()
    resolution = messages.ticks_per_beat
    for tick, tempo in zip(ticks, mspq):
        if tempo <= 0:
            raise TokenizerError(f"{path}: a tempo of {tempo} microseconds per quarter note at tick {tick} "
                                 "is not a tempo (time would stand still)")
    segments = [(0, DEFAULT_MSPQ, 60.0 / (120.0 * resolution))]
    for tick, tempo in zip(ticks, mspq):
        scale = 60.0 / ((6e7 / tempo) * resolution)
        if tick == 0:
            segments = [(0, tempo, scale)]
        elif scale != segments[-1][2]:
            segments.append((tick, tempo, scale))
    return (np.array([s[0] for s in segments], np.int64), np.array([s[1] for s in segments], np.float64))


def _check_duration(seconds: np.ndarray, path) -> None:
    """The duration limit ``read_score`` applies, before the ids (a time shift per step) are made:
    a file read here bypasses it, and one note at tick 2^28 of a slow file is a year of shifts."""
    from cadenza.data.limits import LIMITS, limit_error

    end = float(seconds.max()) if seconds.size else 0.0
    if not np.isfinite(end) or end > LIMITS.max_seconds:
        found = "an unbounded duration" if not np.isfinite(end) else f"{end:.0f} s"
        raise limit_error(str(path), "lasts", found, "max_seconds")


def _programs(track) -> np.ndarray:
    """Every message's channel's program at that point of the track (0 before any program change)."""
    out = np.zeros(len(track), np.int64)
    is_change = track.kind == PROGRAM_CHANGE
    for channel in np.unique(track.channel[is_change]).tolist():
        on_channel = track.channel == channel
        last = np.maximum.accumulate(np.where(is_change & on_channel, np.arange(len(track)), -1))
        out[on_channel] = np.where(last >= 0, track.data1[np.maximum(last, 0)], 0)[on_channel]
    return out


def midi_instruments(path: str | os.PathLike) -> list[_TrackArrays]:
    """The instruments note_seq sees in a MIDI file, in its order, with their notes (closing order)
    and their CC64 events, times in seconds with pretty_midi's arithmetic.

    Notes and program changes are walked message by message. Control changes and pitch bends are
    not: one can only make a holding list the first time its (channel, program) occurs in a track
    (later ones find that instrument or that list already there), so only those are walked, and
    each CC64 event is then routed at once, to the instrument of its (program, channel) if that
    was made before it, else to its channel's holding list.
    """
    messages = read_midi_messages(path)
    keys: dict[tuple[int, int, int], int] = {}  # (program, channel, track) -> instrument number
    notes: list[list[tuple[int, int, int, int]]] = []  # per instrument: (start, end, pitch, velocity) ticks
    channel_of, track_of, made_at, shares = [], [], [], []  # made_at: the message that made it
    holding: set[tuple[int, int]] = set()  # (channel, track) pairs that have a holding list
    pedals = []  # per track: (ticks, values, target: instrument number, or -1 - channel for the holding list)
    for track_index, track in enumerate(messages.tracks):
        program = [0] * 16
        program_now = _programs(track)
        open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}
        controls = np.flatnonzero((track.kind == CONTROL_CHANGE) | (track.kind == PITCH_WHEEL))
        firsts = controls[np.unique(program_now[controls] * 16 + track.channel[controls], return_index=True)[1]]
        wanted = np.union1d(np.flatnonzero((track.kind == NOTE_ON) | (track.kind == NOTE_OFF)
                                           | (track.kind == PROGRAM_CHANGE)), firsts)
        rows = zip(wanted.tolist(), track.tick[wanted].tolist(), track.kind[wanted].tolist(),
                   track.channel[wanted].tolist(), track.data1[wanted].tolist(), track.data2[wanted].tolist())
        for row, tick, kind, channel, data1, data2 in rows:
            if kind == NOTE_ON and data2 > 0:
                open_notes.setdefault((channel, data1), []).append((tick, data2))
            elif kind == NOTE_ON or kind == NOTE_OFF:
                pending = open_notes.get((channel, data1))
                if pending is None:
                    continue
                closing = [n for n in pending if n[0] != tick]
                if closing:
                    key = (program[channel], channel, track_index)
                    number = keys.get(key)
                    if number is None:
                        number = keys[key] = len(notes)
                        notes.append([])
                        channel_of.append(channel)
                        track_of.append(track_index)
                        made_at.append(row)
                        shares.append((channel, track_index) in holding)
                    notes[number].extend((start, tick, data1, velocity) for start, velocity in closing)
                    if len(closing) < len(pending):
                        open_notes[(channel, data1)] = [n for n in pending if n[0] == tick]
                        continue
                del open_notes[(channel, data1)]
            elif kind == PROGRAM_CHANGE:
                program[channel] = data1
            elif (program[channel], channel, track_index) not in keys:  # no instrument yet: the holding list
                holding.add((channel, track_index))
        rows = np.flatnonzero((track.kind == CONTROL_CHANGE) & (track.data1 == SUSTAIN_CONTROL))
        if rows.size:
            number_of = np.full(128 * 16, -1, np.int64)
            made = np.full(128 * 16, np.iinfo(np.int64).max, np.int64)
            for (program_number, channel, owner), number in keys.items():
                if owner == track_index:
                    number_of[program_number * 16 + channel] = number
                    made[program_number * 16 + channel] = made_at[number]
            slot = program_now[rows] * 16 + track.channel[rows]
            target = np.where(made[slot] < rows, number_of[slot], -1 - track.channel[rows])
            pedals.append((track_index, track.tick[rows], track.data2[rows], target))
    if not notes:
        return []
    cc_table = []
    for number in range(len(notes)):
        parts = []
        for track_index, ticks, values, target in pedals:
            if track_index != track_of[number]:
                continue
            if shares[number]:  # the holding list, which every sharing instrument of the channel fills too
                group = np.where(target < 0, -1 - target, -1)
                for other in np.unique(target[target >= 0]).tolist():
                    if shares[other] and channel_of[other] == channel_of[number]:
                        group[target == other] = channel_of[number]
                mine = group == channel_of[number]
            else:
                mine = target == number
            parts.append(np.stack([ticks[mine], values[mine]], axis=1))
        cc_table.append(np.concatenate(parts) if parts else np.zeros((0, 2), np.int64))
    tempo_ticks, tempo_mspq = tempo_map(messages, path)
    note_table = [np.array(n, np.int64).reshape(-1, 4) for n in notes]
    ticks = np.concatenate([t[:, :2].ravel() for t in note_table] + [c[:, 0] for c in cc_table])
    seconds = tick_seconds(ticks, tempo_ticks, tempo_mspq, messages.ticks_per_beat)
    _check_duration(seconds, path)
    instruments, at = [], 0
    for table, ccs, channel in zip(note_table, cc_table, channel_of):
        both = seconds[at: at + 2 * len(table)].reshape(-1, 2)
        at += 2 * len(table)
        instruments.append(_TrackArrays(both[:, 0], both[:, 1], table[:, 2], table[:, 3], channel == DRUM_CHANNEL,
                                        None, ccs[:, 1]))
    for instrument, ccs in zip(instruments, cc_table):
        instrument.pedal_time = seconds[at: at + len(ccs)]
        at += len(ccs)
    return instruments
