"""A small, fast reader of the messages of a Standard MIDI File, for tokenizers that must read MIDI
by their reference's rules rather than through ``symusic.Score`` (which pairs notes, merges tempi
and splits tracks by channel before anyone sees the messages).

It reads what mido's ``MidiFile`` reads (mido is the parser of both pretty_midi and
jthickstun/anticipation): every ``MTrk`` chunk, with running status (meta events do not set it;
sysex does), messages after an end-of-track event included, delta times summed into absolute
ticks. Each track becomes flat numpy arrays, one entry per message, in file order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadenza.data.errors import MusicFileError

MIDI_SUFFIXES = (".mid", ".midi")

NOTE_OFF = 0x80
NOTE_ON = 0x90
POLY_AFTERTOUCH = 0xA0
CONTROL_CHANGE = 0xB0
PROGRAM_CHANGE = 0xC0
CHANNEL_AFTERTOUCH = 0xD0
PITCH_WHEEL = 0xE0
SYSEX = 0xF0
META = 0xFF
SET_TEMPO = 0x51      # meta type
END_OF_TRACK = 0x2F   # meta type
_SYSTEM_DATA_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1}  # other system messages carry none


@dataclass
class TrackMessages:
    """One track's messages in file order: absolute tick, kind (the status byte's high nibble for
    channel messages, 0xFF meta, 0xF0/0xF7 sysex, else the system status), channel, and two data
    values (channel messages: their data bytes; meta: its type and, for set_tempo, the tempo in
    microseconds per quarter)."""

    tick: np.ndarray
    kind: np.ndarray
    channel: np.ndarray
    data1: np.ndarray
    data2: np.ndarray

    def __len__(self) -> int:
        return int(self.tick.size)


@dataclass
class MidiMessages:
    """A MIDI file as its header values and its tracks' messages."""

    file_type: int
    ticks_per_beat: int
    tracks: list[TrackMessages]


def is_midi_path(source) -> bool:
    """Whether ``source`` (a Score, a path, anything) names a MIDI file by its suffix."""
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in MIDI_SUFFIXES


def read_midi_messages(path: str | os.PathLike) -> MidiMessages:
    """Parse a MIDI file; MusicFileError (naming the file) when it is missing or malformed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MusicFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise MusicFileError(path, "empty file (0 bytes)")
    if not data.startswith(b"MThd"):
        raise MusicFileError(path, "not a MIDI file (no MThd header)")
    try:
        return parse_midi(data)
    except (IndexError, ValueError) as exc:
        raise MusicFileError(path, f"corrupt or truncated MIDI file ({exc or 'ends early'})") from None


def parse_midi(data: bytes) -> MidiMessages:
    """Parse the bytes of a MIDI file (ValueError or IndexError when they are malformed)."""
    header_size = int.from_bytes(data[4:8], "big")
    file_type, num_tracks, division = (int.from_bytes(data[8 + 2 * i: 10 + 2 * i], "big") for i in range(3))
    if division & 0x8000:
        raise ValueError("SMPTE time division is not supported")
    if file_type == 2:
        raise ValueError("type 2 MIDI files (independent sequences) are not supported")
    position = 8 + header_size
    tracks = []
    while len(tracks) < num_tracks and position + 8 <= len(data):
        name, size = data[position: position + 4], int.from_bytes(data[position + 4: position + 8], "big")
        position += 8
        if name == b"MTrk":
            tracks.append(_parse_track(data, position, position + size))
        position += size
    return MidiMessages(file_type, division, tracks)


def _variable_length(data: bytes, position: int, first: int) -> tuple[int, int]:
    """A MIDI variable-length quantity whose first byte, ``first``, was read just before ``position``."""
    value = first & 0x7F
    while first & 0x80:
        first = data[position]
        position += 1
        value = (value << 7) | (first & 0x7F)
    return value, position


def _parse_track(data: bytes, position: int, end: int) -> TrackMessages:
    """One MTrk chunk's messages (a plain loop over the bytes: this is the reader's hot path)."""
    if end > len(data):
        raise ValueError("a track runs past the end of the file")
    rows: list[tuple[int, int, int, int, int]] = []
    append = rows.append
    tick = 0
    running = -1
    while position < end:
        delta = data[position]
        position += 1
        if delta & 0x80:  # most deltas are one byte
            delta, position = _variable_length(data, position, delta)
        tick += delta
        status = data[position]
        if status < 0x80:
            if running < 0:
                raise ValueError("running status without a previous status byte")
            status = running
        else:
            position += 1
            if status != META:
                running = status
        if status < 0xF0:
            kind = status & 0xF0
            if kind == PROGRAM_CHANGE or kind == CHANNEL_AFTERTOUCH:
                append((tick, kind, status & 0x0F, data[position], 0))
                position += 1
            else:
                append((tick, kind, status & 0x0F, data[position], data[position + 1]))
                position += 2
        elif status == META or status == SYSEX or status == 0xF7:
            meta_type = -1
            if status == META:
                meta_type = data[position]
                position += 1
            length, position = _variable_length(data, position + 1, data[position])
            value = 0
            if meta_type == SET_TEMPO:
                if length != 3:
                    raise ValueError(f"a set_tempo event of {length} bytes")
                value = (data[position] << 16) | (data[position + 1] << 8) | data[position + 2]
            if position + length > end:
                raise ValueError("an event runs past the end of its track")
            append((tick, status, 0, meta_type, value))
            position += length
        else:
            append((tick, status, 0, 0, 0))
            position += _SYSTEM_DATA_BYTES.get(status, 0)
    if not rows:
        empty = np.zeros(0, np.int64)
        return TrackMessages(empty, empty, empty, empty, empty)
    table = np.array(rows, dtype=np.int64)
    return TrackMessages(table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4])
