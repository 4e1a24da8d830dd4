"""The Anticipatory Music Transformer's arrival-time tokenization (Thickstun et al., 2023).

Compatible token for token with the reference code (jthickstun/anticipation): the same 55028-id
vocabulary, the same events as its ``midi_to_events`` and the same padding, anticipation and
training sequences (the operations live in ``anticipation_ops``). Each note is a triple
(onset, duration, 128*instrument + pitch) in 10 ms ticks; velocity is dropped.

MIDI is read with symusic rather than mido, but times follow mido's own arithmetic: seconds are
accumulated message gap by message gap as ``gap * (tempo * 1e-6 / ticks_per_beat)``, so that
``round(100 * seconds)`` (round half to even) lands on the same side of every .5 tie.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import symusic

from cadenza.data.errors import TokenizerError

from . import anticipation_ops as ops
from .anticipation_ops import (
    ADUR_OFFSET, ANOTE_OFFSET, ANTICIPATE, ATIME_OFFSET, AUTOREGRESS, CONTROL_OFFSET, DRUMS,
    DUR_OFFSET, MAX_DUR, MAX_PITCH, MAX_TIME, NOTE_OFFSET, REST, SEPARATOR, TIME_OFFSET,
    TIME_RESOLUTION, VOCAB_SIZE,
)
from .base import Tokenizer
from .midi_messages import is_midi_path
from .grammar import Grammar, SamplingConstraints

DEFAULT_TEMPO = 500000          # microseconds per quarter note, MIDI's default
DECODED_VELOCITY = 72           # the reference's velocity for decoded notes
DECODED_TPQ = 50                # 50 ticks per quarter at 120 bpm: one tick is one 10 ms step
# how close to n + 0.5 (in 10 ms ticks) a time may fall before the summation order matters: mido's
# running sum and the closed-form tempo map differ by far less (about 1e-9 even for hour-long files)
_TIE_TOLERANCE = 1e-4
_UNSET = object()


# -- a Score to plain events ----------------------------------------------------------------------
def _tick_positions(score: symusic.Score, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Every tick at which the MIDI file holds a message that symusic keeps (notes, tempi, meter,
    keys, markers, controllers, pitch bends, lyrics): mido's time accumulates over these gaps."""
    parts = [starts, ends, score.tempos.numpy()["time"], score.time_signatures.numpy()["time"],
             score.key_signatures.numpy()["time"], np.array([m.time for m in score.markers], np.int64)]
    for track in score.tracks:
        parts.append(track.controls.numpy()["time"])
        parts.append(track.pitch_bends.numpy()["time"])
        if len(track.lyrics):
            parts.append(np.array([lyric.time for lyric in track.lyrics], np.int64))
    return np.unique(np.concatenate([np.asarray(p, np.int64) for p in parts]))


def _tempo_map(score: symusic.Score) -> tuple[np.ndarray, np.ndarray]:
    """Tempo change ticks (sorted, stable) and their microseconds per quarter."""
    tempos = score.tempos.numpy()
    tempo_times = np.asarray(tempos["time"], np.int64)
    tempo_values = np.asarray(tempos["mspq"], np.int64)
    if tempo_times.size > 1 and np.any(np.diff(tempo_times) < 0):
        order = np.argsort(tempo_times, kind="stable")
        tempo_times, tempo_values = tempo_times[order], tempo_values[order]
    return tempo_times, tempo_values


def _scale_after(tempo_times: np.ndarray, tempo_values: np.ndarray, ticks: np.ndarray, tpq: int) -> np.ndarray:
    """Seconds per tick (mido's ``tempo * 1e-6 / ticks_per_beat``) in force just after each tick."""
    which = np.searchsorted(tempo_times, ticks, side="right") - 1
    tempo = np.where(which >= 0, tempo_values[np.maximum(which, 0)], DEFAULT_TEMPO) if tempo_values.size \
        else np.full(ticks.shape, DEFAULT_TEMPO)
    return tempo * 1e-6 / tpq


def _seconds_exact(score: symusic.Score, positions: np.ndarray, tempo_map) -> np.ndarray:
    """Seconds at sorted tick positions, summed gap by gap in float64 exactly as mido does."""
    gap_starts = np.concatenate([[0], positions[:-1]])
    scale = _scale_after(*tempo_map, gap_starts, score.tpq)
    return np.cumsum((positions - gap_starts) * scale)


def _seconds_direct(score: symusic.Score, ticks: np.ndarray, tempo_map) -> np.ndarray:
    """Seconds at ticks from the piecewise-linear tempo map: equal to mido's sum to ~1e-9 s."""
    tempo_times, tempo_values = tempo_map
    bounds = np.concatenate([[0], tempo_times[tempo_times > 0]])
    scales = _scale_after(tempo_times, tempo_values, bounds, score.tpq)
    bound_seconds = np.concatenate([[0.0], np.cumsum(np.diff(bounds) * scales[:-1])])
    segment = np.searchsorted(bounds, ticks, side="right") - 1
    return bound_seconds[segment] + (ticks - bounds[segment]) * scales[segment]


def _near_tie(values: np.ndarray) -> bool:
    """Whether any value lies so close to n + 0.5 that float summation order could flip its rounding."""
    return bool(np.any(np.abs(values - np.floor(values) - 0.5) < _TIE_TOLERANCE))


def _notes_of(score: symusic.Score) -> tuple[np.ndarray, ...]:
    """Concatenated (start, end, pitch, instrument) of all tracks; instrument 128 for drums."""
    starts, ends, pitches, instruments = [], [], [], []
    for track in score.tracks:
        notes = track.notes.numpy()
        if notes["time"].size == 0:
            continue
        start = np.asarray(notes["time"])
        starts.append(start)
        ends.append(start + np.asarray(notes["duration"]))
        pitches.append(np.asarray(notes["pitch"], np.int64))
        instruments.append(np.full(start.size, DRUMS if track.is_drum else int(track.program), np.int64))
    if not starts:
        raise TokenizerError("the score holds no notes; there is nothing to encode")
    return tuple(np.concatenate(p) for p in (starts, ends, pitches, instruments))


def score_to_events(score: symusic.Score) -> np.ndarray:
    """Plain events of a Score, as the reference's ``midi_to_events``, in canonical order.

    onset = round(100*seconds), duration = round(100*(offset_seconds - onset_seconds)) capped at
    999, note = 128*instrument + pitch (drums: instrument 128). Sorted by (time, note, duration);
    the reference keeps file order. Times are not limited to 100 s here (training sequences are
    relativized later).
    """
    if isinstance(score.ttype, symusic.core.Quarter):
        score = score.to("tick")
    starts, ends, pitches, instruments = _notes_of(score)
    if pitches.min() < 0 or pitches.max() >= MAX_PITCH:
        raise TokenizerError(f"pitch {int(pitches.min() if pitches.min() < 0 else pitches.max())} is outside MIDI's 0..127")
    if np.any(ends < starts) or starts.min() < 0:
        raise TokenizerError("the score holds a note with a negative time or duration")
    if isinstance(score.ttype, symusic.core.Second):
        onset_seconds = starts.astype(np.float64)
        offset_seconds = ends.astype(np.float64)
    else:
        starts = starts.astype(np.int64)
        ends = ends.astype(np.int64)
        tempo_map = _tempo_map(score)
        both = _seconds_direct(score, np.concatenate([starts, ends]), tempo_map)
        onset_seconds, offset_seconds = both[: starts.size], both[starts.size:]
        if _near_tie(np.concatenate([TIME_RESOLUTION * onset_seconds,
                                     TIME_RESOLUTION * (offset_seconds - onset_seconds)])):
            # a .5 tie: only mido's own summation order decides which way it rounds
            positions = _tick_positions(score, starts, ends)
            seconds = _seconds_exact(score, positions, tempo_map)
            onset_seconds = seconds[np.searchsorted(positions, starts)]
            offset_seconds = seconds[np.searchsorted(positions, ends)]
    onsets = np.rint(TIME_RESOLUTION * onset_seconds).astype(np.int64)
    durations = np.minimum(np.rint(TIME_RESOLUTION * (offset_seconds - onset_seconds)).astype(np.int64), MAX_DUR - 1)
    notes = MAX_PITCH * instruments + pitches
    order = np.lexsort((durations, notes, onsets))
    return ops.event_triples(onsets[order], durations[order], notes[order])


# -- ids back to a Score --------------------------------------------------------------------------
def _classify(triples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Masks (event, control, rest, separator) of triples; raises on a malformed triple."""
    t, d, n = triples[:, 0], triples[:, 1], triples[:, 2]

    def within(x, lo, hi):
        return (x >= lo) & (x < hi)

    is_event = within(t, TIME_OFFSET, DUR_OFFSET) & within(d, DUR_OFFSET, NOTE_OFFSET) & within(n, NOTE_OFFSET, REST)
    is_rest = within(t, TIME_OFFSET, DUR_OFFSET) & within(d, DUR_OFFSET, NOTE_OFFSET) & (n == REST)
    is_control = (within(t, ATIME_OFFSET, ADUR_OFFSET) & within(d, ADUR_OFFSET, ANOTE_OFFSET)
                  & within(n, ANOTE_OFFSET, SEPARATOR))
    is_separator = (t == SEPARATOR) & (d == SEPARATOR) & (n == SEPARATOR)
    bad = ~(is_event | is_rest | is_control | is_separator)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TokenizerError(f"ids {triples[i].tolist()} at position {3 * i} are not a valid "
                             "(time, duration, note) triple, control triple, rest or separator")
    return is_event, is_control, is_rest, is_separator


def notes_from_ids(ids) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(time, duration, pitch, instrument) in ticks of every note and control in an id sequence.

    As the reference's ``events_to_compound``: RESTs are dropped, controls become notes, and the
    piece after each SEPARATOR starts where the previous piece's last note ended.
    """
    flat = np.asarray(ids, dtype=np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= VOCAB_SIZE + 3):
        bad = int(flat.min() if flat.min() < 0 else flat.max())
        raise TokenizerError(f"id {bad} is outside the anticipatory vocabulary (0..{VOCAB_SIZE + 2})")
    flat = flat[flat < VOCAB_SIZE]
    is_flag = (flat == AUTOREGRESS) | (flat == ANTICIPATE)
    if is_flag.any():
        # a flag may stand only between triples (a training sequence starts with one)
        tokens_before = np.cumsum(~is_flag) - ~is_flag
        misplaced = is_flag & (tokens_before % 3 != 0)
        if misplaced.any():
            raise TokenizerError(f"flag id {int(flat[misplaced][0])} at position {int(np.flatnonzero(misplaced)[0])} "
                                 "splits a (time, duration, note) triple")
        flat = flat[~is_flag]
    triples = ops.as_triples(flat)
    is_event, is_control, _, is_separator = _classify(triples)
    shifted = triples - np.where(is_control, CONTROL_OFFSET, 0)[:, None]
    segment = np.cumsum(is_separator)
    keep = is_event | is_control
    shifted, segment = shifted[keep], segment[keep]
    times = shifted[:, 0] - TIME_OFFSET
    durations = shifted[:, 1] - DUR_OFFSET
    notes = shifted[:, 2] - NOTE_OFFSET
    segments = int(is_separator.sum()) + 1
    ends = np.zeros(segments, np.int64)
    np.maximum.at(ends, segment, times + durations)
    offsets = np.concatenate([[0], np.cumsum(ends)[:-1]])
    return times + offsets[segment], durations, notes % MAX_PITCH, notes // MAX_PITCH


def notes_to_score(times, durations, pitches, instruments) -> symusic.Score:
    """A Score at 120 bpm and 50 ticks per quarter (1 tick = 10 ms), one track per instrument in
    order of first onset, velocity 72; instrument 128 becomes a drum track."""
    score = symusic.Score(DECODED_TPQ)
    score.tempos.append(symusic.Tempo(0, qpm=120.0))
    if len(times) == 0:
        return score
    order = np.lexsort((pitches, times))
    times, durations, pitches, instruments = (np.asarray(a)[order] for a in (times, durations, pitches, instruments))
    values, first = np.unique(instruments, return_index=True)
    for instrument in values[np.argsort(first, kind="stable")]:
        mine = instruments == instrument
        is_drum = int(instrument) == DRUMS
        track = symusic.Track(name="drums" if is_drum else "", program=0 if is_drum else int(instrument), is_drum=is_drum)
        track.notes = symusic.Note.from_numpy(
            time=times[mine].astype(np.int32), duration=durations[mine].astype(np.int32),
            pitch=pitches[mine].astype(np.int8), velocity=np.full(int(mine.sum()), DECODED_VELOCITY, np.int8))
        score.tracks.append(track)
    return score


# -- the tokenizer --------------------------------------------------------------------------------
class AnticipatoryTokenizer(Tokenizer):
    """Arrival-time triples with anticipated controls; 55028 scheme ids, then PAD, BOS, EOS.

    Config: ``controls`` (default spec for encode: None, "instruments:0,33", "span:0.05",
    "random:0.3"), ``seed`` (default 0), ``overlong`` ("error": refuse a piece with a note at or
    after 100 s, which the vocabulary cannot express; "clip": keep the notes before 100 s).
    """

    name = "anticipatory"
    packs_sequences = True
    takes_controls = True
    study_config = {"overlong": "clip"}   # a study keeps the first 100 s of a long piece

    TIMING_KINDS = ("TIME", "DUR", "ATIME", "ADUR")

    def __init__(self, controls: str | None = None, seed: int = 0, overlong: str = "error", **extra: Any):
        if extra:
            raise TokenizerError(f"unknown anticipatory tokenizer options: {', '.join(sorted(extra))}")
        if overlong not in ("error", "clip"):
            raise TokenizerError(f"overlong must be 'error' or 'clip', not {overlong!r}")
        ops.parse_controls(controls)
        super().__init__(controls=controls, seed=int(seed), overlong=overlong)

    @property
    def base_vocab_size(self) -> int:
        return VOCAB_SIZE

    def events(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        """Plain, unpadded events of a Score or music file (times may exceed 100 s).

        A MIDI file is read from its messages by the reference's rules (``anticipatory_midi``);
        a Score (or another music file) by ``score_to_events``."""
        if is_midi_path(score):
            from .anticipatory_midi import midi_events

            return midi_events(score)
        return score_to_events(self.as_score(score))

    def encode(self, score: symusic.Score | str | os.PathLike, controls: Any = _UNSET,
               seed: int | None = None) -> np.ndarray:
        """The reference's arrival-time sequence: pad(events, end) then anticipate(events, controls).

        ``controls`` picks which notes become anticipated controls (None: none, so the result is
        the padded events); ``seed`` seeds the span and random choices.
        """
        spec = self.config["controls"] if controls is _UNSET else controls
        all_events = self._fit_in_vocabulary(self.events(score))
        events, control_ids = ops.extract_controls(all_events, spec, self.config["seed"] if seed is None else seed)
        return ops.interleave(all_events, events, control_ids)

    def _fit_in_vocabulary(self, all_events: np.ndarray) -> np.ndarray:
        triples = ops.as_triples(all_events)
        late = triples[:, 0] - TIME_OFFSET >= MAX_TIME
        if not late.any():
            return all_events
        if self.config["overlong"] == "clip":
            return triples[~late].ravel()
        last = (int(triples[:, 0].max()) - TIME_OFFSET) / TIME_RESOLUTION
        limit = MAX_TIME // TIME_RESOLUTION
        raise TokenizerError(f"a note starts at {last:.2f} s; anticipatory ids hold times below {limit} s: give a "
                             f"shorter piece or its end (continue --prompt-seconds), or leave out what lies past {limit} s "
                             "(tokenize --config overlong=clip)")

    def decode(self, ids) -> symusic.Score:
        """A Score from ids: controls become notes, RESTs and flags vanish, pieces follow one
        another at each SEPARATOR. Raises TokenizerError for ids that are not whole triples."""
        return notes_to_score(*notes_from_ids(ids))

    def training_sequences(self, pieces, augment_factor: int = 1, seed: int = 0,
                           context_size: int = ops.CONTEXT_SIZE) -> np.ndarray:
        """Training sequences from per-piece event arrays; see anticipation_ops.training_sequences."""
        return ops.training_sequences(pieces, augment_factor=augment_factor, seed=seed, context_size=context_size)

    # -- what sampling and training need -------------------------------------------------------
    def frame(self) -> tuple[list[int], list[int]]:
        """The reference's marks: a sequence starts with a flag and pieces are bounded by
        SEPARATOR triples, ``[AUTOREGRESS, SEP, SEP, SEP]`` before and ``[SEP, SEP, SEP]`` after."""
        return [AUTOREGRESS, SEPARATOR, SEPARATOR, SEPARATOR], [SEPARATOR, SEPARATOR, SEPARATOR]

    def prompt_ids(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        """The start marks, then the prompt's plain events (no anticipated controls)."""
        start, _ = self.frame()
        return np.concatenate([np.asarray(start, np.int64), np.asarray(self.encode(score, controls=None), np.int64)])

    def grammar(self, constraints: SamplingConstraints | None = None) -> AnticipatoryGrammar:
        return AnticipatoryGrammar(self, constraints)

    def output_groups(self) -> list[list[tuple[int, int]]]:
        """The kinds of id a triple's position allows (see ``OUTPUT_GROUPS``)."""
        return [list(ranges) for ranges in OUTPUT_GROUPS]

    def next_group(self, ids: np.ndarray) -> np.ndarray:
        """The group of the next id at every position of ids (..., T): a flag or a complete triple is
        followed by an onset (TIME, ATIME or SEPARATOR), a TIME by a DUR, a DUR by a NOTE or REST,
        an ATIME by an ADUR, an ADUR by an ANOTE, a SEPARATOR by a SEPARATOR. Triples are counted
        from the last flag (or the start); -1 after an id that fits no triple (PAD, BOS, EOS)."""
        ids = np.asarray(ids, dtype=np.int64)
        is_flag = (ids == AUTOREGRESS) | (ids == ANTICIPATE)
        count = np.cumsum(~is_flag, axis=-1)
        since_flag = count - np.maximum.accumulate(np.where(is_flag, count, 0), axis=-1)
        slot = since_flag % 3                    # the slot of the next id: 0 onset, 1 duration, 2 note
        group = np.full(ids.shape, -1, np.int64)
        group[slot == 0] = ONSET_GROUP
        is_separator = ids == SEPARATOR
        for after_slot, kinds in ((1, ((TIME_OFFSET, DUR_OFFSET, 1), (ATIME_OFFSET, ADUR_OFFSET, 3))),
                                  (2, ((DUR_OFFSET, NOTE_OFFSET, 2), (ADUR_OFFSET, ANOTE_OFFSET, 4)))):
            here = slot == after_slot
            for start, stop, kind in kinds:
                group[here & (ids >= start) & (ids < stop)] = kind
            group[here & is_separator] = SEPARATOR_GROUP
        group[~is_flag & (ids >= self.base_vocab_size)] = -1
        return group

    def pack_sequences(self, scores, context_size: int, *, seed: int = 0,
                       augment: bool = True) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """The reference's training sequences from whole pieces: their plain events, shuffled
        (seeded), through ``training_sequences`` with ten augmentation rounds (one plain, one
        span, four random, four instrument) or, without ``augment``, one plain round. Pieces the
        reference would reject come back as (index, reason)."""
        events, rejected = [], []
        for index, score in enumerate(scores):
            piece_events = self.events(score)
            reason = ops.reject_reason(piece_events)
            if reason:
                rejected.append((index, reason))
            else:
                events.append(piece_events)
        if not events:
            return np.zeros((0, context_size), np.int64), rejected
        order = np.random.default_rng([seed, 0x5EED]).permutation(len(events))
        sequences = self.training_sequences([events[i] for i in order], augment_factor=10 if augment else 1,
                                            seed=seed, context_size=context_size)
        return np.asarray(sequences), rejected

    def ranges(self) -> list[tuple[str, int, int]]:
        return [
            ("TIME: onset in 10 ms ticks", TIME_OFFSET, DUR_OFFSET),
            ("DUR: duration in 10 ms ticks", DUR_OFFSET, NOTE_OFFSET),
            ("NOTE: 128*instrument + pitch (instrument 128 = drums)", NOTE_OFFSET, REST),
            ("REST", REST, REST + 1),
            ("ATIME: control onset", ATIME_OFFSET, ADUR_OFFSET),
            ("ADUR: control duration", ADUR_OFFSET, ANOTE_OFFSET),
            ("ANOTE: control note", ANOTE_OFFSET, SEPARATOR),
            ("SEPARATOR", SEPARATOR, SEPARATOR + 1),
            ("AUTOREGRESS flag", AUTOREGRESS, AUTOREGRESS + 1),
            ("ANTICIPATE flag", ANTICIPATE, ANTICIPATE + 1),
        ]

    def describe_notes(self) -> str:
        return ("  velocity is dropped (decoded as 72); durations cap at 9.99 s; times within a sequence\n"
                "  stay below 100 s; a REST fills each second of silence; controls are anticipated 5 s;\n"
                "  tempo, meter, pedal and controllers are not kept; decoded scores are 120 bpm at 50 tpq;\n"
                "  a MIDI file is read by the reference's rules (mido's merged messages, programs per channel)")

    def _base_token_to_str(self, token_id: int) -> str:
        if token_id < DUR_OFFSET:
            return f"TIME({token_id - TIME_OFFSET})"
        if token_id < NOTE_OFFSET:
            return f"DUR({token_id - DUR_OFFSET})"
        if token_id < REST:
            return f"NOTE({_note_name(token_id - NOTE_OFFSET)})"
        if token_id == REST:
            return "REST"
        if token_id < ADUR_OFFSET:
            return f"ATIME({token_id - ATIME_OFFSET})"
        if token_id < ANOTE_OFFSET:
            return f"ADUR({token_id - ADUR_OFFSET})"
        if token_id < SEPARATOR:
            return f"ANOTE({_note_name(token_id - ANOTE_OFFSET)})"
        return {SEPARATOR: "SEPARATOR", AUTOREGRESS: "AUTOREGRESS", ANTICIPATE: "ANTICIPATE"}[token_id]


def _note_name(note: int) -> str:
    instrument, pitch = divmod(note, MAX_PITCH)
    return f"drums,p{pitch}" if instrument == DRUMS else f"i{instrument},p{pitch}"


# -- the sampling grammar ------------------------------------------------------------------------
#: Output groups, indexed as ``next_group`` returns them: what may follow at each slot of a triple.
ONSET_GROUP, SEPARATOR_GROUP = 0, 5
OUTPUT_GROUPS = (
    ((TIME_OFFSET, DUR_OFFSET), (ATIME_OFFSET, ADUR_OFFSET), (SEPARATOR, SEPARATOR + 1)),   # 0 onset
    ((DUR_OFFSET, NOTE_OFFSET),),                                                           # 1 event duration
    ((NOTE_OFFSET, REST + 1),),                                                             # 2 event note or REST
    ((ADUR_OFFSET, ANOTE_OFFSET),),                                                         # 3 control duration
    ((ANOTE_OFFSET, SEPARATOR),),                                                           # 4 control note
    ((SEPARATOR, SEPARATOR + 1),),                                                          # 5 rest of a SEPARATOR triple
)


class AnticipatoryGrammar(Grammar):
    """Arrival-time triples (time, duration, note|REST) in order, times non-decreasing, below 100 s;
    no controls, separators or flags are generated; seconds from the triples' onsets. Constraints:
    ``max_note_seconds`` (the longest DUR id), ``max_notes_per_position`` (notes at one onset: then
    time must move on) and ``allow_repeated_pitch=False`` (no note id twice at one onset)."""

    def _reset_state(self) -> None:
        self.slot = np.zeros(self.batch, np.int64)      # 0 time, 1 duration, 2 note
        self.time = np.zeros(self.batch, np.int64)      # ticks of the latest onset
        self.pending_time = np.zeros(self.batch, np.int64)
        self.onset_notes: list[set[int]] = [set() for _ in range(self.batch)]   # note ids at ``time``
        self.onset_count = np.zeros(self.batch, np.int64)                        # notes at ``time``

    def _consume(self, row: int, token: int) -> None:
        if token in (AUTOREGRESS, ANTICIPATE):
            return
        if token == SEPARATOR:                          # a new piece starts its clock at zero
            self.slot[row] = (self.slot[row] + 1) % 3
            self.time[row] = 0
            self.onset_notes[row] = set()
            self.onset_count[row] = 0
            return
        if self.slot[row] == 0 and TIME_OFFSET <= token < DUR_OFFSET:
            self.pending_time[row] = token - TIME_OFFSET
        elif self.slot[row] == 2 and NOTE_OFFSET <= token <= REST:
            if self.pending_time[row] > self.time[row]:
                self.onset_notes[row] = set()
                self.onset_count[row] = 0
            self.time[row] = max(self.time[row], self.pending_time[row])
            if token != REST and self.pending_time[row] == self.time[row]:
                self.onset_notes[row].add(token)
                self.onset_count[row] += 1
        self.slot[row] = (self.slot[row] + 1) % 3

    def _allow(self, row: int, mask: np.ndarray) -> None:
        if self.slot[row] == 0:
            mask[TIME_OFFSET + self.time[row]:TIME_OFFSET + MAX_TIME] = True
        elif self.slot[row] == 1:
            mask[DUR_OFFSET:DUR_OFFSET + MAX_DUR] = True
        else:
            mask[NOTE_OFFSET:REST + 1] = True

    def _constrain(self, row: int, mask: np.ndarray) -> None:
        constraints = self.constraints
        if self.slot[row] == 0:
            cap = constraints.max_notes_per_position
            if cap is not None and self.onset_count[row] >= cap:
                mask[TIME_OFFSET + self.time[row]] = False
        elif self.slot[row] == 1:
            if constraints.max_note_seconds is not None:
                longest = int(round(constraints.max_note_seconds * TIME_RESOLUTION))
                mask[DUR_OFFSET + longest + 1:NOTE_OFFSET] = False
        elif not constraints.allow_repeated_pitch and self.pending_time[row] == self.time[row]:
            mask[np.asarray(sorted(self.onset_notes[row]), np.int64)] = False

    def _at_boundary(self, row: int) -> bool:
        return self.slot[row] == 0

    def _crosses_limit(self, row: int, token: int) -> bool:
        if self.limit_seconds is None or self.slot[row] != 0:
            return False
        onset = (token - TIME_OFFSET) / TIME_RESOLUTION
        return onset - self.start_seconds[row] >= self.limit_seconds

    def seconds(self, row: int) -> float:
        return self.time[row] / TIME_RESOLUTION
