"""MT3's event vocabulary (Gardner et al., ICLR 2022) for audio-to-MIDI transcription.

The scheme's ids follow MT3's event codec exactly (before MT3 shifts them by its three
special tokens): ``shift`` 0..1000 (steps of 10 ms), ``pitch`` 21..108, ``velocity``
0..N (bin 0 is note-off; N = 1 as in MT3, 127 as in the 2021 piano model), ``tie``,
``program`` 0..127 and ``drum`` 21..108. PAD/BOS/EOS follow the scheme ids.

A transcription target is one *segment* of audio (2.048 s in MT3). Its tokens are a tie
section -- ``program pitch`` for every note still sounding from the previous segment, then
``tie`` -- followed by the segment's events. A shift holds the time since the segment start
(absolute, not the gap since the last event); ``program`` and ``velocity`` are state changes
and are written only when they change. Onsets are ``program velocity pitch``, offsets
``program velocity(0) pitch``, drums ``velocity drum`` (drums have no offsets).
Decoding runs the segments through one state, so notes that cross segment boundaries are
stitched back into single notes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import symusic

from cadenza.data.errors import TokenizerError

from .base import Tokenizer

MIN_PITCH, MAX_PITCH = 21, 108
NUM_PROGRAMS = 128
MIN_NOTE_SECONDS = 0.01  # quantization can give zero-length notes; keep them audible


def velocity_to_bin(velocity: int, num_bins: int) -> int:
    """MIDI velocity -> bin (0 only for velocity 0, i.e. note-off)."""
    return 0 if velocity == 0 else math.ceil(num_bins * velocity / 127)


def bin_to_velocity(velocity_bin: int, num_bins: int) -> int:
    """Bin -> the top MIDI velocity of that bin (1 bin -> 127)."""
    return 0 if velocity_bin == 0 else int(127 * velocity_bin / num_bins)


@dataclass(frozen=True)
class NoteEvent:
    """One onset or offset (velocity 0) in seconds; what the codec serializes."""

    time: float
    pitch: int
    velocity: int
    program: int
    is_drum: bool


@dataclass
class _DecodeState:
    current_velocity: int = 127
    current_program: int = 0
    active: dict[tuple[int, int], tuple[float, int]] = field(default_factory=dict)  # (pitch, program) -> (onset, vel)
    notes: list[tuple[float, float, int, int, int, bool]] = field(default_factory=list)  # start, end, pitch, vel, prog, drum
    invalid: int = 0

    def close(self, key: tuple[int, int], end: float) -> None:
        onset, velocity = self.active.pop(key)
        self.notes.append((onset, max(end, onset + MIN_NOTE_SECONDS), key[0], velocity, key[1], False))


class MT3Tokenizer(Tokenizer):
    """MT3 event codec with per-segment encoding (tie sections) and stitching decode."""

    name = "mt3"

    def __init__(self, steps_per_second: int = 100, max_shift_seconds: int = 10, num_velocity_bins: int = 1,
                 segment_seconds: float = 2.048):
        if num_velocity_bins < 1 or num_velocity_bins > 127:
            raise TokenizerError(f"num_velocity_bins must be 1..127, got {num_velocity_bins}")
        super().__init__(steps_per_second=steps_per_second, max_shift_seconds=max_shift_seconds,
                         num_velocity_bins=num_velocity_bins, segment_seconds=segment_seconds)
        self.steps_per_second = int(steps_per_second)
        self.max_shift_steps = int(steps_per_second * max_shift_seconds)
        self.num_velocity_bins = int(num_velocity_bins)
        self.segment_seconds = float(segment_seconds)
        sizes = [("shift", self.max_shift_steps + 1), ("pitch", MAX_PITCH - MIN_PITCH + 1),
                 ("velocity", self.num_velocity_bins + 1), ("tie", 1), ("program", NUM_PROGRAMS),
                 ("drum", MAX_PITCH - MIN_PITCH + 1)]
        self._ranges: list[tuple[str, int, int]] = []
        start = 0
        for kind, size in sizes:
            self._ranges.append((kind, start, start + size))
            start += size
        self._offsets = {kind: lo for kind, lo, _ in self._ranges}
        self._base_size = start
        self.tie_id = self._offsets["tie"]

    # -- vocabulary -------------------------------------------------------------------
    @property
    def base_vocab_size(self) -> int:
        return self._base_size

    def ranges(self) -> list[tuple[str, int, int]]:
        return list(self._ranges)

    def event_id(self, kind: str, value: int) -> int:
        """Id of one event, e.g. ``event_id("pitch", 60)``."""
        low = {"pitch": MIN_PITCH, "drum": MIN_PITCH}.get(kind, 0)
        for name, start, stop in self._ranges:
            if name == kind:
                if not 0 <= value - low < stop - start:
                    raise TokenizerError(f"{kind} value {value} is outside the MT3 vocabulary")
                return start + value - low
        raise TokenizerError(f"unknown MT3 event type {kind!r}")

    def event_of(self, token_id: int) -> tuple[str, int]:
        """(type, value) of one scheme id."""
        token_id = int(token_id)
        for name, start, stop in self._ranges:
            if start <= token_id < stop:
                low = MIN_PITCH if name in ("pitch", "drum") else 0
                return name, token_id - start + low
        raise TokenizerError(f"id {token_id} is not an MT3 event id")

    def _base_token_to_str(self, token_id: int) -> str:
        kind, value = self.event_of(token_id)
        return "tie" if kind == "tie" else f"{kind}_{value}"

    def describe_notes(self) -> str:
        return (f"  shifts are absolute within a segment ({self.steps_per_second} steps/s); "
                f"segments of {self.segment_seconds:g} s start with a tie section ending in 'tie'")

    # -- scores <-> events ------------------------------------------------------------
    @staticmethod
    def note_events(score: symusic.Score) -> list[NoteEvent]:
        """Onsets and offsets of every note, sorted by time; at equal times offsets come first
        and then (drum, program, pitch) order, as in MT3. As MT3 does, a note that overlaps the
        next note of its pitch and program ends where that one starts (unisons become one)."""
        seconds = score.to("second")
        notes = []
        for track in seconds.tracks:
            program = 0 if track.is_drum else int(track.program)
            for note in track.notes:
                if MIN_PITCH <= note.pitch <= MAX_PITCH and note.duration > 0:
                    notes.append((bool(track.is_drum), program, int(note.pitch), float(note.time),
                                  float(note.time + note.duration), max(1, int(note.velocity))))
        notes = _trim_overlaps(notes)
        notes.sort(key=lambda n: (n[0], n[1], n[2]))
        offsets = [NoteEvent(end, pitch, 0, prog, False) for drum, prog, pitch, _, end, _ in notes if not drum]
        onsets = [NoteEvent(start, pitch, vel, prog, drum) for drum, prog, pitch, start, _, vel in notes]
        return sorted(offsets + onsets, key=lambda e: e.time)  # stable: offsets first at equal times

    def _quantize(self, seconds: float) -> int:
        return int(round(seconds * self.steps_per_second))

    def encode(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        """The whole score as one segment starting at 0 (long shifts span several tokens)."""
        events = self.note_events(self.as_score(score))
        return self._encode_segment(events, [], 0.0)

    def encode_segments(self, score: symusic.Score | str | os.PathLike, num_segments: int | None = None,
                        segment_seconds: float | None = None) -> list[np.ndarray]:
        """One id array per segment of ``segment_seconds`` (default: the tokenizer's), each
        beginning with its tie section. ``num_segments`` defaults to enough to cover all notes."""
        seg = float(segment_seconds or self.segment_seconds)
        events = self.note_events(self.as_score(score))
        if num_segments is None:
            last = max((self._quantize(e.time) / self.steps_per_second for e in events), default=0.0)
            num_segments = max(1, int(math.floor(last / seg + 1e-9)) + 1)
        return [self.encode_window(events, i * seg, seg) for i in range(num_segments)]

    def encode_window(self, events: Sequence[NoteEvent], start: float, seconds: float) -> np.ndarray:
        """Ids of the window [start, start + seconds) of sorted ``note_events``: the notes sounding
        at ``start`` form the tie section, then the events whose quantized time falls inside."""
        stop = start + seconds
        active: dict[tuple[int, int], None] = {}
        inside = []
        for event in events:
            quantized = self._quantize(event.time) / self.steps_per_second
            if quantized >= stop - 1e-9:
                break
            if quantized >= start - 1e-9:
                inside.append(event)
            elif not event.is_drum:
                if event.velocity > 0:
                    active[(event.pitch, event.program)] = None
                else:
                    active.pop((event.pitch, event.program), None)
        tied = sorted(active, key=lambda key: (key[1], key[0]))
        return self._encode_segment(inside, tied, start)

    def _encode_segment(self, events: Sequence[NoteEvent], tied: Sequence[tuple[int, int]],
                        start_seconds: float) -> np.ndarray:
        ids: list[int] = []
        state = {"program": None, "velocity": None}

        def state_change(kind: str, value: int) -> None:
            if state[kind] != value:
                state[kind] = value
                ids.append(self.event_id(kind, value))

        for pitch, program in tied:
            state_change("program", program)
            ids.append(self.event_id("pitch", pitch))
        ids.append(self.tie_id)
        written_steps = 0
        for event in events:
            steps = max(0, self._quantize(event.time - start_seconds))
            if steps != written_steps:
                remaining = steps
                while remaining > 0:  # absolute time since the segment start, split in max shifts
                    chunk = min(remaining, self.max_shift_steps)
                    ids.append(chunk)
                    remaining -= chunk
                written_steps = steps
            velocity_bin = velocity_to_bin(event.velocity, self.num_velocity_bins)
            if event.is_drum:
                state_change("velocity", velocity_bin)
                ids.append(self.event_id("drum", event.pitch))
            else:
                state_change("program", event.program)
                state_change("velocity", velocity_bin)
                ids.append(self.event_id("pitch", event.pitch))
        return np.asarray(ids, dtype=np.int64)

    # -- events -> scores -------------------------------------------------------------
    def decode(self, ids) -> symusic.Score:
        """A Score from the ids of one segment starting at 0 s (special ids ignored)."""
        return self.decode_segments([ids], [0.0])

    def decode_segments(self, segments: Iterable, start_times: Sequence[float] | None = None) -> symusic.Score:
        """Stitch segments (each with its tie section) into one Score, one track per program.

        Ids after EOS in a segment are ignored; invalid events (a note-off for a silent
        pitch, a tie for a silent note) are skipped and counted in ``self.last_invalid``.
        """
        segments = list(segments)
        if start_times is None:
            start_times = [i * self.segment_seconds for i in range(len(segments))]
        state = _DecodeState()
        last_time = 0.0
        for ids, start in zip(segments, start_times):
            last_time = self._decode_segment(np.asarray(ids, dtype=np.int64).ravel(), float(start), state)
        for key in list(state.active):
            onset = state.active[key][0]
            state.close(key, max(last_time, onset + MIN_NOTE_SECONDS))
        self.last_invalid = state.invalid
        return notes_to_score(state.notes)

    def _decode_segment(self, ids: np.ndarray, start: float, state: _DecodeState) -> float:
        eos = np.flatnonzero(ids == self.eos_id)
        if eos.size:
            ids = ids[: eos[0]]
        ids = ids[ids < self.base_vocab_size]
        in_tie_section = True
        tied: set[tuple[int, int]] = set()
        shift_steps = 0
        time = start
        for token in ids.tolist():
            kind, value = self.event_of(token)
            if kind == "shift":
                shift_steps += value
                time = start + shift_steps / self.steps_per_second
                continue
            shift_steps = 0
            if kind == "program":
                state.current_program = value
            elif kind == "velocity":
                state.current_velocity = bin_to_velocity(value, self.num_velocity_bins)
            elif kind == "tie":
                if not in_tie_section:
                    state.invalid += 1
                    continue
                for key in [k for k in state.active if k not in tied]:
                    state.close(key, start)
                in_tie_section = False
            elif kind == "drum":
                if in_tie_section or state.current_velocity == 0:
                    state.invalid += 1
                    continue
                state.notes.append((time, time + MIN_NOTE_SECONDS, value, state.current_velocity, 0, True))
            else:  # pitch
                key = (value, state.current_program)
                if in_tie_section:
                    if key in state.active and key not in tied:
                        tied.add(key)
                    else:
                        state.invalid += 1
                elif state.current_velocity == 0:
                    if key in state.active:
                        state.close(key, time)
                    else:
                        state.invalid += 1
                else:
                    if key in state.active:  # re-struck before its offset: end the old note here
                        state.close(key, time)
                    state.active[key] = (time, state.current_velocity)
        if in_tie_section:  # a segment cut off before its tie: treat everything listed as tied
            for key in [k for k in state.active if k not in tied]:
                state.close(key, start)
        return time


def _trim_overlaps(notes: list[tuple]) -> list[tuple]:
    """(drum, program, pitch, start, end, velocity) rows with same-key overlaps cut, empty notes dropped."""
    notes = sorted(notes, key=lambda n: (n[0], n[1], n[2], n[3], n[4]))
    out = []
    for i, note in enumerate(notes):
        end = note[4]
        if i + 1 < len(notes) and notes[i + 1][:3] == note[:3]:
            end = min(end, notes[i + 1][3])
        if end > note[3]:
            out.append((*note[:4], end, note[5]))
    return out


def notes_to_score(notes: Iterable[tuple[float, float, int, int, int, bool]], tpq: int = 480) -> symusic.Score:
    """A tick Score (120 bpm) from (start, end, pitch, velocity, program, is_drum) in seconds,
    one track per (program, drum)."""
    score = symusic.Score(tpq, ttype="second")
    tracks: dict[tuple[int, bool], symusic.Track] = {}
    for start, end, pitch, velocity, program, is_drum in sorted(notes):
        key = (int(program), bool(is_drum))
        if key not in tracks:
            name = "Drums" if is_drum else f"Program {program}"
            tracks[key] = symusic.Track(name=name, program=int(program), is_drum=bool(is_drum), ttype="second")
        tracks[key].notes.append(symusic.Note(float(start), float(end - start), int(pitch), int(velocity),
                                              ttype="second"))
    for key in sorted(tracks):
        score.tracks.append(tracks[key])
    return score.to("tick")
