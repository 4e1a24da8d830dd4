"""MIDI files read as the Anticipatory Music Transformer's reference reads them (over mido).

The reference is jthickstun/anticipation's ``convert.midi_to_events``: ``midi_to_compound`` walks
``mido.MidiFile``'s merged messages, then ``compound_to_events`` makes triples. Its rules:

- Order (mido ``merge_tracks``): every track's messages by absolute tick, a stable sort, so
  messages of one tick come track by track, each track in file order.
- Time (mido ``MidiFile.__iter__`` and ``tick2second``): seconds are a running float sum over
  the merged messages (all of them, meta and sysex included), each adding
  ``delta_ticks * (tempo * 1e-6 / ticks_per_beat)`` with the tempo of the last set_tempo before it,
  from any track (default 500000). End-of-track events are dropped by ``fix_end_of_track`` and
  their delta passes to the next message, so their ticks are no steps of the sum. Times are
  ``round(100 * seconds)`` (round half to even).
- Instruments (``midi_to_compound``): one program per channel, shared by all tracks, changed by
  program_change messages in merged order; a note's instrument is the program of its channel at
  the note-on; channel 10 (index 9) is instrument 128 (drums).
- Pairing (``midi_to_compound``): a note-off (or note-on of velocity 0) ends the oldest open note
  with the key (the channel's instrument *now*, pitch, channel), whatever track it came from;
  with no such note it is ignored. A note never closed lasts 25 ticks (``TIME_RESOLUTION // 4``,
  ``compound_to_events``); durations are capped at 999 ticks.
"""

from __future__ import annotations

import os

import numpy as np

from cadenza.data.errors import TokenizerError

from .anticipation_ops import DRUMS, MAX_DUR, MAX_PITCH, TIME_RESOLUTION, event_triples
from .midi_messages import END_OF_TRACK, META, NOTE_OFF, NOTE_ON, PROGRAM_CHANGE, SET_TEMPO, read_midi_messages

DEFAULT_TEMPO = 500000
DRUM_CHANNEL = 9
UNCLOSED_DURATION = TIME_RESOLUTION // 4


def midi_events(path: str | os.PathLike) -> np.ndarray:
    """The reference's events of a MIDI file, sorted by (time, note, duration), flat."""
    messages = read_midi_messages(path)
    parts = [t for t in messages.tracks if len(t)]
    if not parts:
        raise TokenizerError(f"{path}: the MIDI file holds no notes; there is nothing to encode")
    tick = np.concatenate([t.tick for t in parts])
    order = np.argsort(tick, kind="stable")
    tick = tick[order]
    kind, channel, data1, data2 = (np.concatenate([getattr(t, name) for t in parts])[order]
                                   for name in ("kind", "channel", "data1", "data2"))
    kept = ~((kind == META) & (data1 == END_OF_TRACK))
    tick, kind, channel, data1, data2 = tick[kept], kind[kept], channel[kept], data1[kept], data2[kept]

    # mido's running sum of seconds, message by message (np.cumsum adds in order, as mido does)
    is_tempo = (kind == META) & (data1 == SET_TEMPO)
    stopped = np.flatnonzero(is_tempo & (data2 <= 0))
    if stopped.size:  # mido would put every later message at one instant; refused as read_score does
        raise TokenizerError(f"{path}: a tempo of {int(data2[stopped[0]])} microseconds per quarter note at tick "
                             f"{int(tick[stopped[0]])} is not a tempo (time would stand still)")
    last_tempo = np.maximum.accumulate(np.where(is_tempo, np.arange(tick.size), -1))
    tempo_before = np.concatenate([[-1], last_tempo[:-1]])
    tempo = np.where(tempo_before >= 0, data2[np.maximum(tempo_before, 0)], DEFAULT_TEMPO)
    delta = np.diff(tick, prepend=0)
    seconds = np.cumsum(delta * (tempo * 1e-6 / messages.ticks_per_beat))

    wanted = np.flatnonzero((kind == NOTE_ON) | (kind == NOTE_OFF) | (kind == PROGRAM_CHANGE))
    onsets, notes, durations = [], [], []
    program = [0] * 16
    open_notes: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    rows = zip(kind[wanted].tolist(), channel[wanted].tolist(), data1[wanted].tolist(), data2[wanted].tolist(),
               seconds[wanted].tolist())
    for what, ch, pitch, velocity, time in rows:
        if what == PROGRAM_CHANGE:
            program[ch] = pitch
            continue
        instrument = DRUMS if ch == DRUM_CHANNEL else program[ch]
        if what == NOTE_ON and velocity > 0:
            open_notes.setdefault((instrument, pitch, ch), []).append((len(onsets), time))
            onsets.append(round(TIME_RESOLUTION * time))
            notes.append(MAX_PITCH * instrument + pitch)
            durations.append(-1)
        else:
            pending = open_notes.get((instrument, pitch, ch))
            if pending:
                index, onset_time = pending.pop(0)
                durations[index] = round(TIME_RESOLUTION * (time - onset_time))
    if not onsets:
        raise TokenizerError(f"{path}: the MIDI file holds no notes; there is nothing to encode")
    onsets, notes, durations = (np.array(a, np.int64) for a in (onsets, notes, durations))
    durations = np.where(durations < 0, UNCLOSED_DURATION, np.minimum(durations, MAX_DUR - 1))
    order = np.lexsort((durations, notes, onsets))
    return event_triples(onsets[order], durations[order], notes[order])
