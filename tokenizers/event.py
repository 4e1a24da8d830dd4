"""Event tokenizer: the Performance RNN / Music Transformer vocabulary.

Id for id the same as Magenta note_seq's ``PerformanceOneHotEncoding`` over a
``Performance`` built at 100 steps per second, max shift 100 and 32 velocity bins:

    0-127    NOTE_ON(pitch)        128-255  NOTE_OFF(pitch)
    256-355  TIME_SHIFT(1..100 steps of 10 ms)
    356-387  VELOCITY(bin 1..32)   then PAD, BOS, EOS = 388, 389, 390

The encoder follows Magenta step by step, vectorized with numpy (no Python loop per note of a Score):

1. times in seconds (float64, from ticks through the tempo map, as pretty_midi computes them);
2. the sustain pedal (CC64 >= 64) extends notes exactly as ``sequences_lib.apply_sustain_control_changes``
   does, per instrument, in its event order (pedal-down < pedal-up < note-on < note-off at equal
   times: a note-off at the very time the pedal lifts ends the note there);
3. drum tracks are dropped and the other tracks merged;
4. ``step = floor(seconds * 100 + 0.5)``; a note that would last zero steps lasts one;
5. notes sorted by (start seconds, pitch); onsets and offsets merged in (step, note index) order;
   a VELOCITY event before a NOTE_ON only when the bin changes; gaps as TIME_SHIFT(100)s plus rest.

A MIDI *file* is read by note_seq's own rules (``event_midi``: tempo from track 0, pretty_midi's
note pairing and instruments, sustain per instrument); a ``symusic.Score`` (generated music)
takes its tracks as the instruments.

Decoding follows Magenta's ``Performance.to_sequence`` (a NOTE_OFF with no open note is ignored,
notes still open at the end are closed at the last step, zero-length notes are dropped, velocity
before any VELOCITY is 100) with two changes that make ``encode(decode(ids)) == ids`` for every
encoder output: a NOTE_OFF ends, of the open notes of its pitch, the oldest one that keeps its
step's NOTE_OFFs in the order their notes began (Magenta: the oldest), and onsets within one step
keep their order through sub-step start ticks (Magenta: all at the step, re-sorted by pitch).
"""

from __future__ import annotations

import bisect
import collections
import os
from typing import Any

import numpy as np
import symusic

from cadenza.data.errors import TokenizerError
from cadenza.data.theory import root_position_triad

from .base import Tokenizer
from .grammar import Grammar, SamplingConstraints, parallel_pitches
from .midi_messages import is_midi_path

MIDI_PITCHES = 128
DEFAULT_DECODE_VELOCITY = 100  # Magenta's Performance.to_sequence default
SUSTAIN_CONTROL = 64
DECODE_QPM = 120.0
TICKS_PER_STEP = 100  # of decoded Scores: room to keep the order of the onsets within one step


# -- times ------------------------------------------------------------------------------
def tick_seconds(ticks: np.ndarray, tempo_ticks: np.ndarray, tempo_mspq: np.ndarray, tpq: int) -> np.ndarray:
    """Seconds (float64) of MIDI ticks under a tempo map, with pretty_midi's arithmetic (Magenta
    reads MIDI through pretty_midi): seconds per tick = 60 / ((6e7 / mspq) * tpq), accumulated
    tempo segment by tempo segment, so quantization ties fall on the same side as there.

    ``tempo_ticks`` must be sorted; without a tempo at tick 0 the MIDI default 120 qpm applies
    until the first one.
    """
    tempo_ticks = np.asarray(tempo_ticks, dtype=np.int64)
    tempo_mspq = np.asarray(tempo_mspq, dtype=np.float64)
    if tempo_ticks.size == 0 or tempo_ticks[0] != 0:
        tempo_ticks = np.concatenate([[0], tempo_ticks])
        tempo_mspq = np.concatenate([[500000.0], tempo_mspq])
    seconds_per_tick = 60.0 / ((6e7 / tempo_mspq) * tpq)
    segment_start = np.concatenate([[0.0], np.cumsum(np.diff(tempo_ticks) * seconds_per_tick[:-1])])
    which = np.searchsorted(tempo_ticks, ticks, side="right") - 1
    return segment_start[which] + (ticks - tempo_ticks[which]) * seconds_per_tick[which]


class _TrackArrays:
    """One track's notes (seconds, float64) and its sustain-pedal events, as numpy arrays."""

    __slots__ = ("start", "end", "pitch", "velocity", "is_drum", "pedal_time", "pedal_value")

    def __init__(self, start, end, pitch, velocity, is_drum, pedal_time, pedal_value):
        self.start, self.end, self.pitch, self.velocity = start, end, pitch, velocity
        self.is_drum, self.pedal_time, self.pedal_value = is_drum, pedal_time, pedal_value


def score_tracks(score: symusic.Score) -> list[_TrackArrays]:
    """Every track's notes and CC64 events in seconds (float64 for tick scores).

    All times of the score are converted in one vectorized call (this is most of the encoder's
    cost on short pieces).
    """
    unit = str(score.ttype)
    if "Quarter" in unit:
        score = score.to("tick")
        unit = "Tick"
    is_tick = "Tick" in unit
    raw = []  # (track, notes dict, pedal times, pedal values)
    times = []
    for track in score.tracks:
        if len(track.notes) == 0:
            continue
        notes = track.notes.numpy()
        time = np.asarray(notes["time"], dtype=np.int64 if is_tick else np.float64)
        pedal_time, pedal_value = np.zeros(0, dtype=time.dtype), np.zeros(0, dtype=np.int64)
        if len(track.controls):
            controls = track.controls.numpy()
            is_pedal = controls["number"] == SUSTAIN_CONTROL
            if is_pedal.any():
                pedal_time = np.asarray(controls["time"][is_pedal], dtype=time.dtype)
                pedal_value = controls["value"][is_pedal].astype(np.int64)
        raw.append((track, notes, pedal_time, pedal_value))
        times += [time, time + notes["duration"], pedal_time]
    if not raw:
        return []
    flat = np.concatenate(times)
    if is_tick:
        tempos = score.tempos.numpy() if len(score.tempos) else {"time": np.zeros(0, np.int64), "mspq": np.zeros(0)}
        order = np.argsort(tempos["time"], kind="stable")
        seconds = tick_seconds(flat, tempos["time"][order], tempos["mspq"][order], score.ticks_per_quarter)
    else:
        seconds = flat.astype(np.float64)
    pieces = np.split(seconds, np.cumsum([t.size for t in times])[:-1])
    tracks = []
    for k, (track, notes, _, pedal_value) in enumerate(raw):
        start, end, pedal_time = pieces[3 * k: 3 * k + 3]
        tracks.append(_TrackArrays(start, end, notes["pitch"].astype(np.int64), notes["velocity"].astype(np.int64),
                                   bool(track.is_drum), pedal_time, pedal_value))
    return tracks


# -- sustain -------------------------------------------------------------------------------
def apply_sustain(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, pedal_time: np.ndarray,
                  pedal_value: np.ndarray, final_time: float) -> tuple[np.ndarray, np.ndarray]:
    """note_seq's ``sequences_lib.apply_sustain_control_changes`` for one instrument, vectorized.

    note_seq sorts its events by (time, kind) with pedal-down < pedal-up < note-on < note-off at
    equal times, so the pedal state at time t is the state after every pedal event at or before
    t, and a release beats a press at the same time. In closed form, a note ends at the earliest
    of: its own end if the pedal is up then; else the first release strictly after its end, or
    ``final_time`` (the last note or CC64 time of the piece) if none; and the start of a later
    note of the same pitch (by start, then order) that begins while the pedal is down. A note that
    such a note cuts to zero length is deleted. Returns (new ends, mask of notes kept).
    """
    keep = np.ones(start.shape, dtype=bool)
    if pedal_time.size == 0 or not (pedal_value >= 64).any() or start.size == 0:
        return end, keep
    order = np.argsort(pedal_time, kind="stable")
    pedal_time = pedal_time[order]
    pedal_down = pedal_value[order] >= 64
    instants, first = np.unique(pedal_time, return_index=True)
    released_at = np.logical_or.reduceat(~pedal_down, first)  # a release at an instant wins over a press

    def down_at(t):  # pedal state after every pedal event at or before t
        last = np.searchsorted(instants, t, side="right") - 1
        return np.where(last >= 0, ~released_at[np.maximum(last, 0)], False)

    releases = np.append(pedal_time[~pedal_down], final_time)  # no release left: the piece's last event
    release_time = releases[np.minimum(np.searchsorted(releases[:-1], end, side="right"), releases.size - 1)]
    new_end = np.where(down_at(end), release_time, end)

    # the next note of the same pitch (in processing order: start, then note order) begun under the pedal
    n = start.size
    by_pitch = np.lexsort((np.arange(n), start, pitch))
    cutter = down_at(start[by_pitch])
    position = np.arange(n)
    candidate = np.where(cutter, position, n)
    following = np.minimum.accumulate(candidate[::-1])[::-1]  # first cutter at or after each position
    following = np.concatenate([following[1:], [n]])  # strictly after
    valid = following < n
    same_pitch = valid & (pitch[by_pitch][np.minimum(following, n - 1)] == pitch[by_pitch])
    cut_time = np.full(n, np.inf)
    cut_time[by_pitch[same_pitch]] = start[by_pitch][following[same_pitch]]
    new_end = np.minimum(new_end, cut_time)
    keep = ~((cut_time == start) & (cut_time <= new_end))
    return new_end, keep


# -- decoding: which note a NOTE_OFF ends ------------------------------------------------------
def fifo_pairing(is_on: np.ndarray, pitch: np.ndarray, step: np.ndarray, last_step: int) -> tuple[np.ndarray, bool]:
    """Magenta's pairing, vectorized: the k-th NOTE_OFF of a pitch that finds a note open ends the
    k-th NOTE_ON of that pitch (a NOTE_OFF with none open is ignored). Returns the end step of
    every note (NOTE_ON order; ``last_step`` if never ended) and whether each step's NOTE_OFFs
    end notes in NOTE_ON order (when not, ``pair_note_offs`` searches for a pairing that does)."""
    n = is_on.size
    order = np.argsort(pitch, kind="stable")  # by pitch, stream order within a pitch
    on, key = is_on[order], pitch[order]
    group_start = np.concatenate([[True], key[1:] != key[:-1]])
    group = np.cumsum(group_start) - 1
    first = np.flatnonzero(group_start)
    # open notes of a pitch: a walk (+1 on, -1 off) clamped at zero, so an unmatched off is ignored
    walk = np.where(on, 1, -1)
    total = np.cumsum(walk)
    within = total - (total - walk)[first][group]
    separation = 2 * (n + 1)
    running_min = np.minimum.accumulate(within - group * separation) + group * separation
    open_after = within - np.minimum(running_min, 0)
    open_before = np.where(group_start, 0, np.concatenate([[0], open_after[:-1]]))
    closes = ~on & (open_before > 0)
    ons_so_far = np.cumsum(on)
    closes_so_far = np.cumsum(closes)
    group_ons_before = (ons_so_far - on)[first][group]
    group_closes_before = (closes_so_far - closes)[first][group]
    note_number = np.cumsum(is_on) - 1  # every NOTE_ON's number in stream order
    on_numbers = note_number[order][on]  # NOTE_ON numbers grouped by pitch
    # the j-th closing NOTE_OFF of a group ends the group's j-th NOTE_ON
    ended = on_numbers[group_ons_before[closes] + (closes_so_far[closes] - 1 - group_closes_before[closes])]
    end_step = np.full(int(is_on.sum()), last_step, dtype=np.int64)
    closing_at = order[closes]  # stream positions of the closing NOTE_OFFs
    end_step[ended] = step[closing_at]
    by_stream = np.argsort(closing_at)
    ended, at = ended[by_stream], step[closing_at][by_stream]
    same_step = at[1:] == at[:-1]
    return end_step, bool(np.all(ended[1:][same_step] > ended[:-1][same_step]))


def pair_note_offs(is_on: list[bool], pitch: list[int], step: list[int], num_notes: int, last_step: int) -> list[int]:
    """End step of every note (numbered in NOTE_ON order) of a stream of NOTE_ON/NOTE_OFF events.

    The encoder writes the NOTE_OFFs of one step in the order their notes began, so a pairing of
    NOTE_OFFs with open notes re-encodes to the same ids exactly when, within every step, the
    notes the NOTE_OFFs end are in NOTE_ON order. Ids alone do not say which of two overlapping
    notes of one pitch ends first, and Magenta's first in, first out can break that order
    (nested notes of one pitch). So the pairing is the first one, in a depth-first search that
    tries for each NOTE_OFF the oldest open note, then the newest, then the others, that keeps
    every step in order (Magenta's own wherever that does). The search never tries a choice
    after which the rest of its step, or the next steps that end notes of the pitches it used,
    could not be kept in order even with every note still unended. Where it finds nothing within
    its budget (ids no encoder wrote), each NOTE_OFF ends the oldest open note begun after the
    step's previous one, else the oldest. Which NOTE_OFFs end anything is Magenta's (one with
    no open note of its pitch is ignored); notes left open end at ``last_step``.
    """
    events, counted, ons_before = [], {}, []
    number = 0
    for on, key, at in zip(is_on, pitch, step):  # Magenta's counts decide which NOTE_OFFs end a note
        ons_before.append(number)
        if on:
            counted[key] = counted.get(key, 0) + 1
            number += 1
            events.append((True, key, at))
        elif counted.get(key, 0):
            counted[key] -= 1
            events.append((False, key, at))
        else:
            events.append(None)
    notes_of: dict[int, list[int]] = collections.defaultdict(list)
    for i, event in enumerate(events):
        if event is not None and event[0]:
            notes_of[event[1]].append(ons_before[i])
    group_of, groups = [], []  # events of one step form a group: [first, after]
    for i, at in enumerate(step):
        if not groups or step[groups[-1][0]] != at:
            groups.append([i, i])
        groups[-1][1] = i + 1
        group_of.append(len(groups) - 1)
    groups_with: dict[int, list[int]] = collections.defaultdict(list)  # pitch -> groups that end one
    for g, (first, after) in enumerate(groups):
        for key in {e[1] for e in events[first:after] if e is not None and not e[0]}:
            groups_with[key].append(g)

    def fits(first: int, after: int, open_notes, number_now: int, bar: int) -> bool:
        """Whether events[first:after] (one step) can end notes in order, every note of a pitch
        begun before its NOTE_OFF and not ended by now counting as available (greedy is exact)."""
        for j in range(first, after):  # a note this step already ended lies at or below the bar
            event = events[j]
            if event is None or event[0]:
                continue
            mine = open_notes.get(event[1], ())
            k = bisect.bisect_right(mine, bar)
            if k < len(mine):
                bar = mine[k]
                continue
            later = notes_of[event[1]]  # begun since: numbers from number_now up to the NOTE_OFF
            k = bisect.bisect_right(later, max(bar, number_now - 1))
            if k == len(later) or later[k] >= ons_before[j]:
                return False
            bar = later[k]
        return True

    def ahead_fits(g: int, keys, open_notes, number_now: int) -> bool:
        for key in keys:
            upcoming = groups_with[key]
            for h in upcoming[bisect.bisect_right(upcoming, g):][:2]:
                if not fits(groups[h][0], groups[h][1], open_notes, number_now, -1):
                    return False
        return True

    def search(strict: bool, budget: int) -> list[int] | None:
        end = [last_step] * num_notes
        open_notes: dict[int, list[int]] = {}
        ended: list[int] = []
        choices: list[tuple] = []  # (event index, open notes, next number, bar, len(ended), other candidates)
        i = number = visits = 0
        bar, forced, ambiguous = -1, None, False
        while i < len(events):
            event = events[i]
            dead_end = False
            if i == groups[group_of[i]][0] and forced is None:
                bar, ambiguous = -1, False
            if event is not None and event[0]:
                open_notes.setdefault(event[1], []).append(number)
                number += 1
            elif event is not None:
                key, at = event[1], event[2]
                pending = open_notes[key]
                if forced is not None:
                    candidates, forced = forced, None
                else:
                    above = pending[bisect.bisect_right(pending, bar):]
                    candidates = above[:1] + above[-1:] + above[1:-1] if len(above) > 1 else above
                if strict and (len(candidates) > 1 or ambiguous):
                    ambiguous = True  # the first candidate that leaves the rest of the step an ordered pairing
                    after = groups[group_of[i]][1]
                    k = 0
                    while k < len(candidates) and not fits(i + 1, after, open_notes, number, candidates[k]):
                        k += 1
                    candidates = candidates[k:]
                visits += 1
                if not candidates:
                    if not strict:
                        candidates = pending[:1]
                    else:
                        dead_end = True
                if not dead_end:
                    choice = candidates[0]
                    if strict and len(candidates) > 1:
                        choices.append((i, {k: list(v) for k, v in open_notes.items()}, number, bar, len(ended),
                                        candidates[1:]))
                    pending.remove(choice)
                    end[choice] = at
                    ended.append(choice)
                    bar = choice
            if strict and not dead_end and ambiguous and i + 1 == groups[group_of[i]][1]:
                ambiguous = False
                first = groups[group_of[i]][0]
                keys = {e[1] for e in events[first:i + 1] if e is not None and not e[0]}
                dead_end = bool(keys) and not ahead_fits(group_of[i], keys, open_notes, number)
            if dead_end:
                if not choices or visits >= budget:
                    return None
                i, open_notes, number, bar, size, forced = choices.pop()
                ambiguous = True
                for note in ended[size:]:
                    end[note] = last_step
                del ended[size:]
                continue
            i += 1
        return end

    return search(True, min(64 * len(events) + 4096, 50_000)) or search(False, 0)


# -- the tokenizer ---------------------------------------------------------------------------
class EventTokenizer(Tokenizer):
    """Performance events (NOTE_ON, NOTE_OFF, TIME_SHIFT, VELOCITY), identical to Magenta's ids.

    Config: ``pitch_range`` (inclusive, default (0, 127); (21, 108) is Magenta's piano range),
    ``steps_per_second`` (100), ``max_shift_steps`` (100), ``num_velocity_bins`` (32; 0 drops
    VELOCITY events), ``sustain`` (True: apply the sustain pedal), ``out_of_range`` ("error":
    a pitch outside ``pitch_range`` raises TokenizerError; "drop": such notes are left out),
    ``program`` (the GM program of the decoded track, default 0).
    """

    name = "event"

    TIMING_KINDS = ("TIME_SHIFT",)

    def __init__(self, pitch_range=(0, 127), steps_per_second: int = 100, max_shift_steps: int = 100,
                 num_velocity_bins: int = 32, sustain: bool = True, out_of_range: str = "error",
                 program: int = 0, **extra: Any):
        if extra:
            raise TokenizerError(f"unknown event tokenizer option(s): {', '.join(sorted(extra))}")
        low, high = (int(v) for v in pitch_range)
        if not 0 <= low <= high < MIDI_PITCHES:
            raise TokenizerError(f"pitch_range must satisfy 0 <= low <= high <= 127, got {pitch_range}")
        if int(steps_per_second) < 1 or int(max_shift_steps) < 1:
            raise TokenizerError("steps_per_second and max_shift_steps must be positive")
        if not 0 <= int(num_velocity_bins) <= 127:
            raise TokenizerError("num_velocity_bins must be between 0 and 127")
        if out_of_range not in ("error", "drop"):
            raise TokenizerError(f"out_of_range must be 'error' or 'drop', got {out_of_range!r}")
        if not 0 <= int(program) < 128:
            raise TokenizerError(f"program must be 0..127, got {program}")
        super().__init__(pitch_range=[low, high], steps_per_second=int(steps_per_second),
                         max_shift_steps=int(max_shift_steps), num_velocity_bins=int(num_velocity_bins),
                         sustain=bool(sustain), out_of_range=out_of_range, program=int(program))
        self.low_pitch, self.high_pitch = low, high
        self.num_pitches = high - low + 1
        self.steps_per_second = int(steps_per_second)
        self.max_shift_steps = int(max_shift_steps)
        self.num_velocity_bins = int(num_velocity_bins)
        self.velocity_bin_size = -(-127 // self.num_velocity_bins) if self.num_velocity_bins else 0
        self.note_on_offset = 0
        self.note_off_offset = self.num_pitches
        self.time_shift_offset = 2 * self.num_pitches
        self.velocity_offset = self.time_shift_offset + self.max_shift_steps

    # -- vocabulary ------------------------------------------------------------------------
    @property
    def base_vocab_size(self) -> int:
        return self.velocity_offset + self.num_velocity_bins

    def ranges(self) -> list[tuple[str, int, int]]:
        out = [
            (f"NOTE_ON pitch {self.low_pitch}-{self.high_pitch}", self.note_on_offset, self.note_off_offset),
            (f"NOTE_OFF pitch {self.low_pitch}-{self.high_pitch}", self.note_off_offset, self.time_shift_offset),
            (f"TIME_SHIFT 1-{self.max_shift_steps} steps of {1000 / self.steps_per_second:g} ms",
             self.time_shift_offset, self.velocity_offset),
        ]
        if self.num_velocity_bins:
            out.append((f"VELOCITY bin 1-{self.num_velocity_bins} (velocity 1 + (bin-1)*{self.velocity_bin_size})",
                        self.velocity_offset, self.base_vocab_size))
        return out

    def _base_token_to_str(self, token_id: int) -> str:
        if token_id < self.note_off_offset:
            return f"NOTE_ON_{token_id + self.low_pitch}"
        if token_id < self.time_shift_offset:
            return f"NOTE_OFF_{token_id - self.note_off_offset + self.low_pitch}"
        if token_id < self.velocity_offset:
            return f"TIME_SHIFT_{token_id - self.time_shift_offset + 1}"
        return f"VELOCITY_{token_id - self.velocity_offset + 1}"

    def describe_notes(self) -> str:
        return "\n".join([
            "  encode: a MIDI file is read by note_seq's rules (tempo from track 0, pretty_midi's note pairing and",
            "          instruments); drum tracks are dropped and all other tracks merged into one stream;",
            f"          sustain pedal (CC64 >= 64) {'extends notes as Magenta does' if self.config['sustain'] else 'ignored'};",
            f"          pitches outside {self.low_pitch}-{self.high_pitch}: "
            + ("TokenizerError" if self.config["out_of_range"] == "error" else "notes dropped") + ";",
            f"          step = floor(seconds * {self.steps_per_second} + 0.5); zero-step notes last one step",
            "  decode: NOTE_OFF ends the oldest open note of its pitch that keeps its step's NOTE_OFFs in onset order;",
            "          NOTE_OFF without NOTE_ON is ignored; onsets within a step keep their order (sub-step ticks);",
            "          open notes are closed at the last step; zero-length notes are dropped;",
            f"          one track (program {self.config['program']}), tpq {self.decode_tpq} at 120 qpm (1 step = {TICKS_PER_STEP} ticks)",
        ])

    @property
    def decode_tpq(self) -> int:
        """Ticks per quarter of decoded Scores: at 120 qpm one step is exactly 100 ticks."""
        return TICKS_PER_STEP * self.steps_per_second // 2

    def velocity_to_bin(self, velocity: np.ndarray) -> np.ndarray:
        velocity = np.clip(np.asarray(velocity, dtype=np.int64), 1, 127)
        return (velocity - 1) // self.velocity_bin_size + 1

    def bin_to_velocity(self, velocity_bin: np.ndarray) -> np.ndarray:
        return 1 + (np.asarray(velocity_bin, dtype=np.int64) - 1) * self.velocity_bin_size

    # -- encode ------------------------------------------------------------------------------
    def note_arrays(self, score: symusic.Score | str | os.PathLike) -> tuple[np.ndarray, ...]:
        """The notes the scheme sees: (start seconds, end seconds, pitch, velocity) after the sustain
        pedal, drum removal and the pitch-range policy, in note_seq's note order.

        A MIDI file is read by note_seq's rules (``event_midi``: pretty_midi's instruments and
        notes); a Score's tracks are its instruments, its notes in track order.
        """
        if is_midi_path(score):
            from .event_midi import midi_instruments

            tracks = midi_instruments(score)
        else:
            tracks = score_tracks(self.as_score(score))
        if self.config["sustain"]:  # notes held at the end last to the last non-drum note or CC64 event
            final_time = 0.0
            for tr in tracks:
                if not tr.is_drum and tr.end.size:
                    final_time = max(final_time, float(tr.end.max()))
                if tr.pedal_time.size:
                    final_time = max(final_time, float(tr.pedal_time.max()))
        kept = [tr for tr in tracks if not tr.is_drum]
        if not kept:
            raise TokenizerError("no notes to encode (the score is empty or has only drums)")
        starts, ends, pitches, velocities = [], [], [], []
        for tr in kept:
            end, keep = tr.end, None
            if self.config["sustain"]:
                end, keep = apply_sustain(tr.start, tr.end, tr.pitch, tr.pedal_time, tr.pedal_value, final_time)
            if keep is not None and not keep.all():
                starts.append(tr.start[keep]); ends.append(end[keep])
                pitches.append(tr.pitch[keep]); velocities.append(tr.velocity[keep])
            else:
                starts.append(tr.start); ends.append(end); pitches.append(tr.pitch); velocities.append(tr.velocity)
        start, end = np.concatenate(starts), np.concatenate(ends)
        pitch, velocity = np.concatenate(pitches), np.concatenate(velocities)
        outside = (pitch < self.low_pitch) | (pitch > self.high_pitch)
        if outside.any():
            if self.config["out_of_range"] == "error":
                bad = np.unique(pitch[outside])
                raise TokenizerError(
                    f"{int(outside.sum())} notes have pitches outside {self.low_pitch}-{self.high_pitch} "
                    f"({', '.join(map(str, bad[:8]))}{', ...' if bad.size > 8 else ''}); "
                    "use out_of_range='drop' to leave them out")
            inside = ~outside
            start, end, pitch, velocity = start[inside], end[inside], pitch[inside], velocity[inside]
        if start.size == 0:
            raise TokenizerError("no notes to encode")
        return start, end, pitch, velocity

    def quantize(self, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Magenta's absolute quantization: floor(seconds * steps_per_second + 0.5), at least one step."""
        start_step = np.floor(start * self.steps_per_second + 0.5).astype(np.int64)
        end_step = np.floor(end * self.steps_per_second + 0.5).astype(np.int64)
        end_step = np.where(end_step == start_step, end_step + 1, end_step)
        if start_step.size and (start_step.min() < 0 or end_step.min() < 0):
            raise TokenizerError("notes at negative times cannot be encoded")
        return start_step, end_step

    def encode(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        start, end, pitch, velocity = self.note_arrays(score)
        start_step, end_step = self.quantize(start, end)
        return self.encode_steps(start, start_step, end_step, pitch, velocity)

    def encode_steps(self, start: np.ndarray, start_step: np.ndarray, end_step: np.ndarray, pitch: np.ndarray,
                     velocity: np.ndarray) -> np.ndarray:
        """Ids of quantized notes; ``start`` (seconds) breaks ties between notes of the same step
        as Magenta does (it sorts by unquantized start time, then pitch)."""
        order = np.lexsort((pitch, start))
        start_step, end_step, pitch = start_step[order], end_step[order], pitch[order]
        n = order.size
        index = np.arange(n, dtype=np.int64)
        keys = np.concatenate([start_step * (2 * n) + 2 * index, end_step * (2 * n) + 2 * index + 1])
        events = np.argsort(keys)
        is_off = events >= n
        note = np.where(is_off, events - n, events)
        event_step = np.concatenate([start_step, end_step])[events]

        delta = np.diff(event_step, prepend=0)
        full_shifts = np.where(delta > 0, (delta - 1) // self.max_shift_steps, 0)
        has_rest = delta > 0
        rest = delta - full_shifts * self.max_shift_steps

        if self.num_velocity_bins:
            velocity_bin = self.velocity_to_bin(velocity[order])[note]
            onset_bins = velocity_bin[~is_off]
            previous = np.concatenate([[0], onset_bins[:-1]])
            has_velocity = np.zeros(2 * n, dtype=bool)
            has_velocity[~is_off] = onset_bins != previous
        else:
            velocity_bin = np.zeros(2 * n, dtype=np.int64)
            has_velocity = np.zeros(2 * n, dtype=bool)

        count = full_shifts + has_rest + has_velocity + 1
        block_end = np.cumsum(count)
        block_start = block_end - count
        ids = np.full(int(block_end[-1]), self.velocity_offset - 1, dtype=np.int64)  # TIME_SHIFT(max)
        rest_at = block_start + full_shifts
        ids[rest_at[has_rest]] = self.time_shift_offset + rest[has_rest] - 1
        velocity_at = rest_at + has_rest
        ids[velocity_at[has_velocity]] = self.velocity_offset + velocity_bin[has_velocity] - 1
        ids[block_end - 1] = np.where(is_off, self.note_off_offset, self.note_on_offset) + pitch[note] - self.low_pitch
        return ids

    # -- decode ------------------------------------------------------------------------------
    def decode_notes(self, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(start step, end step, pitch, velocity) of the notes that ``ids`` describe, in the order
        of their NOTE_ONs.

        Which open note of its pitch a NOTE_OFF ends is ``pair_note_offs``' choice: Magenta's
        first in, first out, except where that would put a step's NOTE_OFFs out of the order in
        which their notes began (the order the encoder writes them). A NOTE_OFF with no open note
        is ignored, notes still open at the end close at the last step, zero-length notes are
        dropped.
        """
        ids = self.check_ids(ids)
        empty = np.zeros(0, dtype=np.int64)
        is_shift = (ids >= self.time_shift_offset) & (ids < self.velocity_offset)
        step = np.cumsum(np.where(is_shift, ids - self.time_shift_offset + 1, 0))
        note_at = np.flatnonzero(ids < self.time_shift_offset)
        if note_at.size == 0:
            return empty, empty, empty, empty
        last_step = int(step[-1])

        is_velocity = ids >= self.velocity_offset
        latest = np.maximum.accumulate(np.where(is_velocity, np.arange(ids.size), -1))
        velocity = np.where(latest >= 0, self.bin_to_velocity(ids[np.maximum(latest, 0)] - self.velocity_offset + 1),
                            DEFAULT_DECODE_VELOCITY)

        is_on = ids[note_at] < self.note_off_offset
        pitch = np.where(is_on, ids[note_at], ids[note_at] - self.note_off_offset) + self.low_pitch
        on_at = note_at[is_on]
        end_step, in_order = fifo_pairing(is_on, pitch, step[note_at], last_step)
        if not in_order:
            end_step = np.array(pair_note_offs(is_on.tolist(), pitch.tolist(), step[note_at].tolist(), int(on_at.size),
                                               last_step), dtype=np.int64)
        start_step = step[on_at]
        sounding = end_step > start_step
        return (start_step[sounding], end_step[sounding], pitch[is_on][sounding], velocity[on_at][sounding])

    def decode(self, ids) -> symusic.Score:
        """One track at 120 qpm, ``decode_tpq`` ticks per quarter (one step is 100 ticks).

        Notes that begin in one step sit at its start, except that each NOTE_ON of a lower pitch
        than the NOTE_ON before it in that step begins one tick (0.1 ms) later than that one (at
        most 49 ticks in all), so that encoding the Score again, which orders a step's notes by
        (start time, pitch), keeps the order the ids give them."""
        start_step, end_step, pitch, velocity = self.decode_notes(ids)
        ticks_per_step = TICKS_PER_STEP
        score = symusic.Score(self.decode_tpq)
        score.tempos.append(symusic.Tempo(0, qpm=DECODE_QPM))
        track = symusic.Track(name="performance", program=int(self.config["program"]), is_drum=False)
        if start_step.size:
            same_step = np.concatenate([[False], start_step[1:] == start_step[:-1]])
            descents = np.cumsum(same_step & (pitch < np.concatenate([[0], pitch[:-1]])))
            step_begins = np.maximum.accumulate(np.where(same_step, 0, np.arange(start_step.size)))
            offset = np.minimum(descents - descents[step_begins], ticks_per_step // 2 - 1)
            start = start_step * ticks_per_step + offset
            order = np.lexsort((np.arange(start.size), pitch, start))
            track.notes = symusic.Note.from_numpy(
                start[order].astype(np.int32), (end_step * ticks_per_step - start)[order].astype(np.int32),
                pitch[order].astype(np.int8), velocity[order].astype(np.int8), "tick")
        score.tracks.append(track)
        return score

    # -- what sampling and training need -------------------------------------------------------
    def grammar(self, constraints: SamplingConstraints | None = None) -> EventGrammar:
        return EventGrammar(self, constraints)

    def augment_ids(self, ids: np.ndarray, semitones: int = 0, stretch: float = 1.0) -> np.ndarray:
        """Transpose and time-stretch Event ids exactly, without a round trip through a Score.

        Transposition moves every NOTE_ON / NOTE_OFF by ``semitones`` (events leaving the pitch
        range are dropped). Time stretch moves every group of simultaneous events from step ``s``
        to ``floor(s * stretch + 0.5)``, kept strictly after the previous group so no two instants
        merge and no note shrinks to nothing, and re-emits the TIME_SHIFTs as the encoder does
        (full shifts, then the rest). VELOCITY events are then normalized as the encoder emits
        them: one before a NOTE_ON whose bin differs from the last one emitted.
        """
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[ids < self.base_vocab_size]
        if semitones:
            on = ids < self.note_off_offset
            off = (ids >= self.note_off_offset) & (ids < self.time_shift_offset)
            index = np.where(on, ids, ids - self.note_off_offset) + semitones
            leaving = (on | off) & ((index < 0) | (index >= self.num_pitches))
            ids = np.where(on | off, ids + semitones, ids)[~leaving]
        if stretch != 1.0:
            ids = _stretch_shifts(ids, stretch, self.time_shift_offset, self.velocity_offset, self.max_shift_steps)
        return _normalize_velocities(ids, self.note_off_offset, self.velocity_offset)


def _stretch_shifts(ids: np.ndarray, stretch: float, shift_lo: int, shift_hi: int, max_shift: int) -> np.ndarray:
    is_shift = (ids >= shift_lo) & (ids < shift_hi)
    steps = np.cumsum(np.where(is_shift, ids - shift_lo + 1, 0))
    events, event_steps = ids[~is_shift], steps[~is_shift]
    total = int(steps[-1]) if len(steps) else 0
    groups, first = np.unique(event_steps, return_index=True)
    if len(groups) == 0 or groups[-1] < total:  # trailing silence is stretched too
        groups = np.append(groups, total)
        first = np.append(first, len(events))
    new = np.floor(groups * stretch + 0.5).astype(np.int64)
    rank = np.arange(len(new))
    new = np.maximum.accumulate(new - rank) + rank  # strictly increasing, as few moves as possible
    new[0] = max(new[0], 0)
    out: list[int] = []
    previous = 0
    bounds = np.append(first, len(events))
    for g in range(len(groups)):
        gap = int(new[g] - previous)
        out.extend([shift_lo + max_shift - 1] * (gap // max_shift))
        if gap % max_shift:
            out.append(shift_lo + gap % max_shift - 1)
        out.extend(events[bounds[g]:bounds[g + 1]].tolist())
        previous = int(new[g])
    return np.asarray(out, dtype=np.int64)


def _normalize_velocities(ids: np.ndarray, note_off_offset: int, velocity_offset: int) -> np.ndarray:
    is_velocity = ids >= velocity_offset
    if not is_velocity.any():
        return ids
    out: list[int] = []
    pending = current = None
    for token in ids.tolist():
        if token >= velocity_offset:
            pending = token
            continue
        if token < note_off_offset and pending is not None and pending != current:
            out.append(pending)
            current = pending
        out.append(token)
    return np.asarray(out, dtype=np.int64)


# -- the sampling grammar ------------------------------------------------------------------------
class EventGrammar(Grammar):
    """Performance events: no NOTE_OFF for a silent pitch, VELOCITY then NOTE_ON; seconds from
    TIME_SHIFT steps. Constraints: ``max_note_seconds`` (no TIME_SHIFT takes a sounding note past
    it; at it, only the NOTE_OFFs of the overdue notes may follow), ``max_polyphony`` (no
    NOTE_ON, nor VELOCITY, while that many notes sound), no NOTE_OFF at the instant of its note's
    NOTE_ON, and ``metric_grid`` (see ``set_prompt``); softly, ``parallel_penalty`` (``_penalize``)."""

    def __init__(self, tokenizer: EventTokenizer, constraints: SamplingConstraints | None = None):
        super().__init__(tokenizer, constraints)
        self.note_on = (tokenizer.note_on_offset, tokenizer.note_off_offset)
        self.note_off = (tokenizer.note_off_offset, tokenizer.time_shift_offset)
        self.time_shift = (tokenizer.time_shift_offset, tokenizer.velocity_offset)
        self.velocity = (tokenizer.velocity_offset, tokenizer.base_vocab_size)
        self.steps_per_second = float(tokenizer.steps_per_second)
        limit = self.constraints.max_note_seconds
        self.max_note_steps = None if limit is None else max(1, int(round(limit * self.steps_per_second)))
        self.grid: tuple[float, float] | None = None   # (origin, period) in steps; see set_prompt
        self.beat: tuple[float, float] | None = None   # (origin, quarter) in steps, for phrase_bonus

    def set_prompt(self, score) -> None:
        """With ``metric_grid``, the prompt's grid (``metric_grid``) in TIME_SHIFT steps; the
        beat ``phrase_bonus`` counts in is its quarter, from the same origin."""
        from cadenza.data.context import beat_grid, metric_grid

        grid, beat = metric_grid(score), beat_grid(score)
        self.beat = None if beat is None else (beat[0] * self.steps_per_second, beat[1] * self.steps_per_second)
        if not self.constraints.metric_grid:
            grid = None
        self.grid = None if grid is None else (grid[0] * self.steps_per_second, grid[1] * self.steps_per_second)

    def on_grid(self, steps: np.ndarray) -> np.ndarray:
        """Which times (in steps) lie on the grid: within half a step of a grid point, so a grid
        point between two steps (12.5 at 120 qpm) has both (everything without a grid)."""
        steps = np.asarray(steps, np.float64)
        if self.grid is None:
            return np.ones(steps.shape, bool)
        origin, period = self.grid
        phase = (steps - origin) / period
        return (np.abs(phase - np.round(phase)) * period <= 0.5 + 1e-9) | (steps < origin)

    def _reset_state(self) -> None:
        self.sounding = np.zeros((self.batch, self.note_on[1] - self.note_on[0]), np.int64)
        self.steps = np.zeros(self.batch, np.int64)
        self.after_velocity = np.zeros(self.batch, bool)
        # onset steps of each row's open notes, per pitch, oldest first. A NOTE_OFF drops the newest:
        # whichever open note of its pitch the decoder ends, the oldest onsets kept bound the ages
        # of the notes still open, so the length limit holds under any pairing
        self.open_onsets: list[dict[int, list[int]]] = [{} for _ in range(self.batch)]
        # the current instant of each row: the pitches that ended there and those struck there
        self.ended: list[list[int]] = [[] for _ in range(self.batch)]
        self.struck: list[list[int]] = [[] for _ in range(self.batch)]
        # phrase_bonus: the step of the latest NOTE_ON, and where the phrase began (after the
        # last wait of two beats or more between onsets)
        self.last_onset = np.full(self.batch, -1, np.int64)
        self.phrase_start = np.zeros(self.batch, np.int64)
        self.voices_before = np.zeros(self.batch, np.int64)   # notes sounding when time last moved

    def _consume(self, row: int, token: int) -> None:
        self.after_velocity[row] = False
        if self.note_on[0] <= token < self.note_on[1]:
            now = int(self.steps[row])
            if self.beat is not None and self.last_onset[row] >= 0 and \
                    now - self.last_onset[row] >= 2 * self.beat[1] - 1:
                self.phrase_start[row] = now
            self.last_onset[row] = now
            self.sounding[row, token - self.note_on[0]] += 1
            self.open_onsets[row].setdefault(token - self.note_on[0], []).append(int(self.steps[row]))
            self.struck[row].append(token - self.note_on[0])
        elif self.note_off[0] <= token < self.note_off[1]:
            pitch = token - self.note_off[0]
            if self.sounding[row, pitch] > 0:
                self.ended[row].append(pitch)
            self.sounding[row, pitch] = max(0, self.sounding[row, pitch] - 1)
            onsets = self.open_onsets[row].get(pitch)
            if onsets:
                onsets.pop()
                if not onsets:
                    del self.open_onsets[row][pitch]
        elif self.time_shift[0] <= token < self.time_shift[1]:
            self.steps[row] += token - self.time_shift[0] + 1
            self.voices_before[row] = int(self.sounding[row].sum())
            self.ended[row], self.struck[row] = [], []
        elif self.velocity[0] <= token < self.velocity[1]:
            self.after_velocity[row] = True

    def _penalize(self, row: int) -> dict[int, float] | None:
        """``parallel_penalty`` on the NOTE_ONs that would move in parallel perfect intervals
        with a voice already struck at this instant (see :func:`parallel_pitches`), and
        ``phrase_bonus`` on the TIME_SHIFTs that hold a cadence (``_phrase_ending``)."""
        penalty = self.constraints.parallel_penalty
        out = self._phrase_ending(row)
        if penalty is None or not self.ended[row] or not self.struck[row]:
            return out or None
        pitches = parallel_pitches(self.ended[row], self.struck[row], self.note_on[1] - self.note_on[0])
        out.update({self.note_on[0] + p: penalty for p in pitches})
        return out or None

    def _phrase_ending(self, row: int) -> dict[int, float]:
        """``phrase_bonus`` (as a negative penalty) on the TIME_SHIFTs that hold the chord
        sounding now for two beats, when it may end the phrase (see ``SamplingConstraints``).

        The encoder writes a wait as full TIME_SHIFTs and then the rest, so a held chord is
        decided at its instant (or after a full shift, when two beats are longer than one): the
        bonus goes to the shifts that reach two beats from there. A chord with fewer notes than
        were sounding before it may still be gathering its voices and gets none."""
        bonus = self.constraints.phrase_bonus
        onset = int(self.last_onset[row])
        if bonus is None or self.beat is None or onset < 0 or self.after_velocity[row]:
            return {}
        origin, quarter = self.beat
        lo, hi = self.time_shift
        longest = hi - lo
        held = int(self.steps[row]) - onset
        if held >= 2 * quarter - 1 or held % longest or \
                onset - self.phrase_start[row] < self.constraints.phrase_beats * quarter - 1:
            return {}
        phase = (onset - origin) / quarter
        if abs(phase - round(phase)) * quarter > 1.0:
            return {}
        chord = np.flatnonzero(self.sounding[row] > 0)
        if len(chord) < max(3, int(self.voices_before[row])) or not root_position_triad(chord):
            return {}
        shortest = min(longest, max(1, int(np.ceil(2 * quarter - held - 1 - 1e-9))))
        return {lo + k - 1: -bonus for k in range(shortest, longest + 1)}

    def _allow(self, row: int, mask: np.ndarray) -> None:
        mask[self.note_on[0]:self.note_on[1]] = True
        if self.after_velocity[row]:
            return
        mask[self.note_off[0]:self.note_off[1]] = self.sounding[row] > 0
        mask[self.time_shift[0]:self.time_shift[1]] = True
        mask[self.velocity[0]:self.velocity[1]] = True

    def _constrain(self, row: int, mask: np.ndarray) -> None:
        open_onsets = self.open_onsets[row]
        if self.max_note_steps is not None and open_onsets:
            ages = {pitch: int(self.steps[row]) - onsets[0] for pitch, onsets in open_onsets.items()}
            room = self.max_note_steps - max(ages.values())
            if room <= 0:   # overdue: end those notes before anything else
                overdue = [pitch for pitch, age in ages.items() if age >= self.max_note_steps]
                mask[:] = False
                mask[self.note_off[0] + np.asarray(overdue, np.int64)] = True
                return
            mask[self.time_shift[0] + room:self.time_shift[1]] = False   # TIME_SHIFT(k) is id offset + k - 1
        polyphony = self.constraints.max_polyphony
        if polyphony is not None and int(self.sounding[row].sum()) >= polyphony:
            mask[self.note_on[0]:self.note_on[1]] = False
            mask[self.velocity[0]:self.velocity[1]] = False
        # no note ends at the instant it began: a zero-length note is silence, and a model that
        # strikes and releases a pitch without moving time can do so for ever
        fresh = [pitch for pitch, onsets in open_onsets.items() if onsets[0] >= int(self.steps[row])]
        if fresh:
            mask[self.note_off[0] + np.asarray(fresh, np.int64)] = False
        if self.grid is not None:
            self._keep_on_grid(row, mask)

    def _keep_on_grid(self, row: int, mask: np.ndarray) -> None:
        """Off the grid only time may move; a TIME_SHIFT lands on the grid or is the longest one.
        Where that leaves nothing (another constraint's corner), the grid gives way."""
        now = int(self.steps[row])
        kept = mask.copy()
        lo, hi = self.time_shift
        landing = self.on_grid(now + np.arange(1, hi - lo + 1))
        landing[-1] = True
        kept[lo:hi] &= landing
        if not self.on_grid(np.array([now]))[0] and not self.after_velocity[row]:
            kept[self.note_on[0]:self.note_off[1]] = False
            kept[self.velocity[0]:self.velocity[1]] = False
        if kept.any():
            mask[:] = kept

    def _at_boundary(self, row: int) -> bool:
        return not self.after_velocity[row]

    def seconds(self, row: int) -> float:
        return self.steps[row] / self.steps_per_second
