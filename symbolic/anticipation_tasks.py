"""Infilling and accompaniment with an anticipatory Music Transformer.

The generation loop follows the Anticipatory Music Transformer's reference sampler: the music
before ``start`` is the prompt (padded with RESTs), music after the span and any chosen
controls (a melody) are anticipated controls, inserted into the sequence ``delta`` ahead of
their time, and the model writes event triples (time, duration, note) from ``start`` until the
first onset at or after ``end``. The KV cache grows with the sequence; when the sequence would
pass the model's context, the window keeps its latest half and is re-read with its times made
relative to the window, as the reference does at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.data.theory import may_become_triad
from cadenza.tokenizers import anticipation_ops as ops
from cadenza.tokenizers.anticipatory import AnticipatoryTokenizer
from cadenza.tokenizers.grammar import SamplingConstraints, parallel_pitches

from .decoding import Budget, Sampler, Verdict, decode, nucleus_keep, sampling_processors


@dataclass
class TaskResult:
    """The full piece (given music plus generated notes) and the generated notes alone."""

    score: symusic.Score
    generated: symusic.Score
    generated_events: int


def _time_of(triples: np.ndarray) -> np.ndarray:
    is_control = triples[:, 2] >= ops.CONTROL_OFFSET
    return triples[:, 0] - np.where(is_control, ops.ATIME_OFFSET, ops.TIME_OFFSET)


class _Window:
    """The model's view: a flag, then the latest triples with times relative to the window."""

    def __init__(self, model, flag: int, context: int):
        self.model = model
        self.flag = flag
        self.max_triples = (context - 2) // 3
        self.device = next(model.parameters()).device
        self.cache = None
        self.fed = 0          # triples of `history` already in the cache
        self.start = 0        # first triple of the window in `history`
        self.offset = 0       # ticks subtracted from the window's times
        self.logits = None
        self.ids = np.zeros(0, np.int64)    # what the cache holds (the next id's output group follows from it)

    def _relative(self, triples: np.ndarray) -> np.ndarray:
        out = triples.copy()
        is_control = out[:, 2] >= ops.CONTROL_OFFSET
        out[:, 0] -= self.offset
        out[:, 0] = np.maximum(out[:, 0], np.where(is_control, ops.ATIME_OFFSET, ops.TIME_OFFSET))
        return out

    def _refill(self, history: np.ndarray) -> None:
        self.start = max(0, len(history) - self.max_triples // 2) if len(history) > self.max_triples else 0
        window = history[self.start:]
        self.offset = int(_time_of(window).min()) if len(window) else 0
        self.cache = self.model.new_cache(1, 1 + 3 * self.max_triples + 3)
        self.ids = np.zeros(0, np.int64)
        ids = np.concatenate([[self.flag], self._relative(window).ravel()]) if len(window) else np.array([self.flag])
        self._feed(ids)
        self.fed = len(history)

    def _feed(self, ids) -> None:
        tensor = torch.as_tensor(np.asarray(ids, np.int64), device=self.device)[None]
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64).ravel()])
        groups = self.model.next_group(torch.from_numpy(self.ids)[None]) if hasattr(self.model, "next_group") else None
        chunk = 512
        for begin in range(0, tensor.shape[1], chunk):
            restricted = {"next_group": groups[:, -1:]} if groups is not None and begin + chunk >= tensor.shape[1] else {}
            self.logits = self.model(tensor[:, begin:begin + chunk], cache=self.cache, last_only=True,
                                     **restricted)[0][0, -1]

    def sync(self, history: np.ndarray) -> None:
        """Make the cache hold every triple of ``history`` (a (n, 3) array)."""
        if self.cache is None or len(history) - self.start > self.max_triples:
            self._refill(history)
            return
        if len(history) > self.fed:
            self._feed(self._relative(history[self.fed:]).ravel())
            self.fed = len(history)

    def step(self, token: int) -> None:
        """Feed one id of a triple being sampled (times already relative)."""
        self._feed([token])


class _Span:
    """The anticipatory sampler as a decoder of the one sampling loop (a batch of one).

    Before each event's time id, the controls due by then (``delta`` ahead of their time) join
    the history and the window catches up with it; the event's three ids are fed one by one, and
    a complete triple joins the history."""

    def __init__(self, window: _Window, history: list, leftover: np.ndarray, current: int, delta: int):
        self.window, self.history, self.leftover = window, history, leftover
        self.current, self.delta = current, delta
        self.next_control = 0
        self.slot = 0            # 0: time, 1: duration, 2: note
        self.triple: list[int] = []

    def logits(self, state) -> torch.Tensor:
        if self.slot == 0:
            leftover = self.leftover
            while self.next_control < len(leftover) and \
                    self.current >= leftover[self.next_control, 0] - ops.ATIME_OFFSET - self.delta:
                self.history.append(leftover[self.next_control])
                self.next_control += 1
            self.window.sync(np.asarray(self.history, np.int64).reshape(-1, 3))
        return self.window.logits[None]

    def onset(self, time_id: int) -> int:
        """The absolute onset (ticks) of a time id sampled in the current window."""
        return time_id - ops.TIME_OFFSET + self.window.offset

    def feed(self, state, ids: torch.Tensor) -> None:
        token = int(ids[0])
        self.window.step(token)
        self.triple.append(self.onset(token) + ops.TIME_OFFSET if self.slot == 0 else token)
        self.slot = (self.slot + 1) % 3
        if self.slot == 0:
            self.history.append(np.array(self.triple, np.int64))
            self.window.fed = len(self.history)
            self.current = self.triple[0] - ops.TIME_OFFSET
            self.triple = []

    def select(self, keep: torch.Tensor) -> None:
        pass  # one row: when it stops, the loop ends


_SLOTS = ((ops.TIME_OFFSET, ops.TIME_OFFSET + ops.MAX_TIME), (ops.DUR_OFFSET, ops.DUR_OFFSET + ops.MAX_DUR),
          (ops.NOTE_OFFSET, ops.REST + 1))


class TripleSlots:
    """Each id of an event triple comes from its own range: a time, a duration, a note."""

    def __init__(self, span: _Span):
        self.span = span

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        low, high = _SLOTS[self.span.slot]
        masked = torch.full_like(logits, float("-inf"))
        masked[:, low:high] = logits[:, low:high]
        return masked


class SpanTime:
    """The span's time floor and ceiling: no onset before ``start_tick`` or before the latest
    onset (time never goes backwards); the first onset at or after ``end_tick`` (or past the
    ids' time range) ends the span and is not kept."""

    def __init__(self, span: _Span, start_tick: int, end_tick: int):
        self.span, self.start_tick, self.end_tick = span, start_tick, end_tick

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        if self.span.slot == 0:
            low = max(self.start_tick, self.span.current) - self.span.window.offset
            if low > 0:
                logits[:, ops.TIME_OFFSET:ops.TIME_OFFSET + low] = float("-inf")
        return logits

    def observe(self, state, ids: torch.Tensor) -> Verdict:
        stop = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        if self.span.slot == 0:
            onset = self.span.onset(int(ids[0]))
            stop[0] = onset >= self.end_tick or onset >= ops.MAX_TIME
        return Verdict(stop, stop)


class ExitCeiling:
    """The infill's join to what follows: a note that still sounds at ``from_tick`` (near the
    span's end) may not rise above ``pitch`` (the next kept top-voice pitch plus a fifth), so the
    top voice cannot leap down by more than a fifth into the music after the span."""

    def __init__(self, span: _Span, pitch: int, from_tick: int):
        self.span, self.from_tick = span, from_tick
        ids = np.arange(ops.NOTE_OFFSET, ops.NOTE_OFFSET + ops.DRUMS * ops.MAX_PITCH)   # pitched notes
        self.too_high = torch.from_numpy(ids[(ids - ops.NOTE_OFFSET) % ops.MAX_PITCH > pitch])

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        if self.span.slot == 2:
            onset, duration = self.span.triple[0] - ops.TIME_OFFSET, self.span.triple[1] - ops.DUR_OFFSET
            if onset + duration > self.from_tick:
                logits[:, self.too_high.to(logits.device)] = float("-inf")
        return logits


def _note_rows(triples: np.ndarray, control: bool = False) -> np.ndarray:
    """(start tick, end tick, note id) of the note triples among ``triples`` (events, or with
    ``control`` anticipated controls, whose note ids come back in the events' range)."""
    triples = ops.as_triples(triples)
    time, dur, note, stop = (ops.ATIME_OFFSET, ops.ADUR_OFFSET, ops.ANOTE_OFFSET, ops.SEPARATOR) if control \
        else (ops.TIME_OFFSET, ops.DUR_OFFSET, ops.NOTE_OFFSET, ops.REST)
    triples = triples[(triples[:, 2] >= note) & (triples[:, 2] < stop)]
    start = triples[:, 0] - time
    return np.stack([start, start + triples[:, 1] - dur, triples[:, 2] - note + ops.NOTE_OFFSET], 1).reshape(-1, 3)


class _NoteReader:
    """(start, end, note id) rows of the event notes of a span's history (prompt and new notes),
    read on as the history grows."""

    def __init__(self, span: _Span):
        self.span, self.read = span, 0
        self.notes = np.zeros((0, 3), np.int64)

    def rows(self) -> np.ndarray:
        history = self.span.history
        if len(history) > self.read:
            self.notes = np.concatenate([self.notes, _note_rows(np.asarray(history[self.read:], np.int64))])
            self.read = len(history)
        return self.notes


class SpanConstraints:
    """The structural ``SamplingConstraints`` in the span's loop, as the anticipatory grammar
    applies them to a continuation, plus a polyphony cap:

    - ``max_note_seconds``: no duration id above it;
    - ``max_notes_per_position``: once this many new notes start at the latest onset, time must
      move on;
    - ``allow_repeated_pitch=False``: no note id twice at one onset;
    - ``max_polyphony``: no onset at an instant where this many notes already sound, counting
      the given music (prompt, kept controls such as a melody or the music after an infill) and
      the new notes; with ``keep_texture``, the cap is ``texture`` when that is lower (the given
      music's own number of voices, :func:`texture_voices`);
    - ``fill_voices`` (with ``keep_texture`` and a ``texture``): find the first instant from the
      latest onset on where fewer than ``texture`` notes sound for ``FILL_TOLERANCE`` ticks or
      more; the onsets ``FILL_TOLERANCE`` ticks or more after it have ``fill_voices`` taken off:
      a voice that stops is taken up again where it stopped (within 20 ms), and a chord is
      complete before time moves on.

    ``controls`` are the control triples anticipated in the span (all of them, in the span's
    times)."""

    def __init__(self, span: _Span, constraints: SamplingConstraints, controls: np.ndarray,
                 texture: int | None = None):
        self.span, self.constraints = span, constraints
        caps = [c for c in (constraints.max_polyphony, texture if constraints.keep_texture else None) if c]
        self.polyphony = min(caps) if caps else None
        self.texture = texture if constraints.keep_texture and constraints.fill_voices else None
        self.control_notes = _note_rows(controls, control=True)[:, :2]
        self.notes = _NoteReader(span)

    def _at_latest(self) -> list[int]:
        """Note ids of the events starting at the latest onset, when that is the span's current time."""
        rows = self.notes.rows()
        if not len(rows) or rows[:, 0].max() != self.span.current:
            return []
        return rows[rows[:, 0] == self.span.current, 2].tolist()

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        constraints, span = self.constraints, self.span
        before = logits
        if span.slot == 0:
            logits = logits.clone()
            offset = span.window.offset
            cap = constraints.max_notes_per_position
            if cap is not None and len(self._at_latest()) >= cap and span.current >= offset:
                logits[:, ops.TIME_OFFSET + span.current - offset] = float("-inf")
            low = max(span.current, offset)
            if self.polyphony is not None or self.texture is not None:
                sounding = self._sounding(low, offset + ops.MAX_TIME)
            if self.polyphony is not None:
                full = sounding >= self.polyphony
                if full.any():
                    start = ops.TIME_OFFSET + low - offset
                    logits[:, start:start + len(full)] = logits[:, start:start + len(full)].masked_fill(
                        torch.from_numpy(full).to(logits.device), float("-inf"))
            if self.texture is not None:
                gap = _first_gap(sounding < self.texture)
                if gap is not None:
                    logits[:, ops.TIME_OFFSET + low - offset + gap + FILL_TOLERANCE:ops.TIME_OFFSET + ops.MAX_TIME] -= \
                        constraints.fill_voices
        elif span.slot == 1 and constraints.max_note_seconds is not None:
            longest = int(round(constraints.max_note_seconds * ops.TIME_RESOLUTION))
            logits = logits.clone()
            logits[:, ops.DUR_OFFSET + longest + 1:ops.NOTE_OFFSET] = float("-inf")
        elif span.slot == 2 and not constraints.allow_repeated_pitch and \
                span.triple[0] - ops.TIME_OFFSET == span.current:
            taken = self._at_latest()
            if len(taken):
                logits = logits.clone()
                logits[:, torch.tensor(taken, device=logits.device)] = float("-inf")
        return logits if torch.isfinite(logits).any() else before

    def _sounding(self, low: int, high: int) -> np.ndarray:
        """(high - low,) the number of notes (new and given) sounding at each tick from ``low``."""
        notes = np.concatenate([self.notes.rows()[:, :2], self.control_notes])
        notes = notes[(notes[:, 1] > low) & (notes[:, 0] < high)]
        count = np.zeros(high - low + 1, np.int64)
        np.add.at(count, np.clip(notes[:, 0], low, high) - low, 1)
        np.add.at(count, np.clip(notes[:, 1], low, high) - low, -1)
        return np.cumsum(count)[:-1]


FILL_TOLERANCE = 3        # ticks (30 ms): a shorter gap in a voice is quantization, not a rest


def _first_gap(thin: np.ndarray) -> int | None:
    """The first index that begins a run of ``FILL_TOLERANCE`` or more True values (a run cut
    short by the end of ``thin`` counts), or None."""
    edges = np.diff(np.concatenate([[0], thin.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    long_enough = (ends - starts >= FILL_TOLERANCE) | (ends == len(thin))
    return int(starts[long_enough][0]) if long_enough.any() else None


TEXTURE_SHARE = 0.9       # of the given music's onsets: the number of notes sounding at this share of them or fewer


def texture_voices(notes: np.ndarray, before: int) -> int | None:
    """How many voices the given music sounds before tick ``before``: the number of notes
    sounding at ``TEXTURE_SHARE`` of its onsets or fewer (a four-part chorale: 4, whatever its
    passing overlaps). ``notes`` are (start, end, ...) ticks. None with fewer than two voices or
    eight notes: a lone melody sets no texture for its accompaniment."""
    notes = notes[notes[:, 0] < before]
    if len(notes) < 8:
        return None
    onsets = np.unique(notes[:, 0])
    counts = ((notes[None, :, 0] <= onsets[:, None]) & (notes[None, :, 1] > onsets[:, None])).sum(1)
    voices = int(np.quantile(counts, TEXTURE_SHARE, method="lower"))
    return voices if voices >= 2 else None


MELODY_GAP = 25           # ticks (0.25 s): a note starting this close before a melody note sounds against it
MELODY_TOLERANCE = 2      # ticks: a melody note starting within 20 ms after an onset sounds at it


class UnderMelody:
    """Accompaniment under a kept melody: at the note slot of a triple (its onset and duration
    already sampled), pitched notes at or above the melody the note sounds against as it starts
    are masked.

    That melody is the melody note sounding at the onset (one starting up to 20 ms after it
    counts, as ``cadenza.data.theory.against_melody`` counts it) and any melody note starting
    within the note's first ``gap`` ticks (0.25 s, or its duration if shorter): a note struck
    just before the melody moves sounds against the new melody note too. The ceiling is a
    semitone under the lowest of those melody pitches (of a melody with chords, the top note at
    each instant). A unison is masked too: Bach's lower voices share the soprano's pitch on
    0.9 % of their notes (the 16 test chorales), while the shipped model, kept from rising
    above the melody, doubled it far more often (22 % of its notes a unison or octave from the
    melody, Bach 12 %) and moved with it in parallel unisons. In the melody's rests, a note that starts and reaches ``gap`` ticks without meeting a
    melody note is free: there is no melody to stay under, and an accompaniment may answer the
    melody there. Drum notes and RESTs are never masked.

    ``melody`` is an (n, 3) array of (start tick, end tick, pitch) in the span's time frame."""

    def __init__(self, span: _Span, melody: np.ndarray, gap: int = MELODY_GAP):
        self.span, self.gap = span, gap
        melody = np.asarray(melody, np.int64).reshape(-1, 3)
        self.start, self.end, self.pitch = melody[:, 0], melody[:, 1], melody[:, 2]
        ids = np.arange(ops.NOTE_OFFSET, ops.NOTE_OFFSET + ops.DRUMS * ops.MAX_PITCH)   # pitched notes
        self.ids, self.id_pitch = ids, (ids - ops.NOTE_OFFSET) % ops.MAX_PITCH
        self.masks: dict[int, torch.Tensor] = {}

    def ceiling(self, onset: int, duration: int) -> int | None:
        """The highest pitch a note at ``onset`` (ticks) lasting ``duration`` may take (None: any):
        a semitone under the melody it sounds against."""
        first = onset + MELODY_TOLERANCE
        reach = onset + max(MELODY_TOLERANCE, min(self.gap, duration))
        near = (self.start < reach) & (self.end > first)
        if not near.any():
            return None
        start, end, pitch = self.start[near], self.end[near], self.pitch[near]
        instants = np.unique(np.concatenate([[first], start[start > first]]))
        tops = [pitch[(start <= t) & (end > t)].max() for t in instants if ((start <= t) & (end > t)).any()]
        return int(min(tops)) - 1 if tops else None

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        if self.span.slot == 2:
            onset, duration = self.span.triple[0] - ops.TIME_OFFSET, self.span.triple[1] - ops.DUR_OFFSET
            top = self.ceiling(onset, duration)
            if top is not None:
                if top not in self.masks:
                    self.masks[top] = torch.from_numpy(self.ids[self.id_pitch > top])
                logits[:, self.masks[top].to(logits.device)] = float("-inf")
        return logits


HARSH = (1, 2, 6, 10, 11)   # semitones mod 12: 2nds, the tritone, 7ths (as cadenza.data.theory counts them)


class MelodyConsonance:
    """A soft guard against harsh dissonance with a kept melody: at the note slot, a note struck
    together with a melody note (their onsets within 20 ms) has ``penalty`` taken off the logits
    of the pitches forming a 2nd, tritone or 7th (any octave) with it, so it is ``exp(penalty)``
    times less likely than the model had it; passing notes between the melody's onsets, and
    notes against a held melody note, are left alone (Bach's chorales put about a tenth of their
    lower voices' notes a 2nd, tritone or 7th from the soprano, most of them passing notes and
    suspensions). Of a melody chord, its top note counts. ``melody`` as for :class:`UnderMelody`."""

    def __init__(self, span: _Span, melody: np.ndarray, penalty: float):
        self.span, self.penalty = span, penalty
        melody = np.asarray(melody, np.int64).reshape(-1, 3)
        self.start, self.end, self.pitch = melody[:, 0], melody[:, 1], melody[:, 2]
        ids = np.arange(ops.NOTE_OFFSET, ops.NOTE_OFFSET + ops.DRUMS * ops.MAX_PITCH)
        self.ids, self.id_pitch = ids, (ids - ops.NOTE_OFFSET) % ops.MAX_PITCH
        self.masks: dict[int, torch.Tensor] = {}

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        if self.span.slot == 2:
            onset = self.span.triple[0] - ops.TIME_OFFSET
            at = np.abs(self.start - onset) <= MELODY_TOLERANCE
            if at.any():
                top = int(self.pitch[at].max())
                if top not in self.masks:
                    harsh = np.isin(np.abs(self.id_pitch - top) % 12, HARSH)
                    self.masks[top] = torch.from_numpy(self.ids[harsh])
                index = self.masks[top].to(logits.device)
                logits[:, index] = logits[:, index] - self.penalty
        return logits


class MelodyHold:
    """The accompaniment's phrase endings (``SamplingConstraints.melody_hold_bonus``): where the
    melody holds a note two beats or more, struck on a beat (a fermata, a phrase's final half
    note), the lower parts hold a chord with it, as a chorale's do. With
    ``bonus``: at the time slot, onsets inside such a melody note lose it (the parts do not move
    under it), and at its onset, while fewer than ``voices`` notes sound there, staying at the
    onset for one more note gains it; at the duration slot of a note struck with it, the
    durations that end with it gain it; at the note slot of a note so held, the pitches that keep
    the chord (the held notes below, the melody's pitch on top) on its way to a root-position
    triad gain it (``cadenza.data.theory.may_become_triad``; the ids write an instant's notes bass
    first). ``melody`` as for :class:`UnderMelody`, ``beat`` as for :class:`SpanPhrase`; ``voices``
    is the texture's count of notes (4 in a chorale: the melody and three)."""

    def __init__(self, span: _Span, melody: np.ndarray, beat: tuple[float, float], bonus: float,
                 voices: int | None = None):
        self.span, self.bonus, self.voices = span, bonus, voices
        melody = np.asarray(melody, np.int64).reshape(-1, 3)
        origin, period = float(beat[0]), float(beat[1])
        beats = (melody[:, 0] - origin) / period
        on_beat = np.abs(beats - np.round(beats)) * period <= MELODY_TOLERANCE
        long = melody[:, 1] - melody[:, 0] >= 2 * period - MELODY_TOLERANCE
        self.holds = melody[on_beat & long]
        self.notes = _NoteReader(span)

    def _hold_at(self, onset: int) -> np.ndarray | None:
        """The (start, end, pitch) of the held melody note struck at ``onset``, if any."""
        at = np.flatnonzero(np.abs(self.holds[:, 0] - onset) <= MELODY_TOLERANCE)
        return self.holds[at[0]] if len(at) else None

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        span = self.span
        if span.slot == 0:
            offset = span.window.offset
            for start, end, _ in self.holds[self.holds[:, 1] > span.current].tolist():
                low = max(start + MELODY_TOLERANCE + 1, span.current) - offset
                high = min(end - MELODY_TOLERANCE, offset + ops.MAX_TIME) - offset
                if high > max(low, 0):
                    logits[:, ops.TIME_OFFSET + max(low, 0):ops.TIME_OFFSET + high] -= self.bonus
            hold = self._hold_at(span.current)
            if hold is not None and self.voices and 0 <= span.current - offset < ops.MAX_TIME:
                notes = self.notes.rows()
                sounding = ((notes[:, 0] <= span.current) & (notes[:, 1] > span.current)).sum()
                if sounding + 1 < self.voices:
                    logits[:, ops.TIME_OFFSET + span.current - offset] += self.bonus
            return logits
        onset = span.triple[0] - ops.TIME_OFFSET
        hold = self._hold_at(onset)
        if hold is None:
            return logits
        if span.slot == 1:
            low, high = int(hold[1]) - onset - MELODY_TOLERANCE, min(int(hold[1]) - onset + MELODY_GAP, ops.MAX_DUR - 1)
            if high >= low > 0:
                logits[:, ops.DUR_OFFSET + low:ops.DUR_OFFSET + high + 1] += self.bonus
            return logits
        if span.triple[1] - ops.DUR_OFFSET < int(hold[1]) - onset - MELODY_TOLERANCE:
            return logits
        notes = self.notes.rows()
        here = notes[(np.abs(notes[:, 0] - onset) <= MELODY_TOLERANCE) & (notes[:, 1] >= hold[1] - MELODY_TOLERANCE)]
        below = sorted(((here[:, 2] - ops.NOTE_OFFSET) % ops.MAX_PITCH).tolist())
        instrument = 0 if not len(here) else int((here[0, 2] - ops.NOTE_OFFSET) // ops.MAX_PITCH)
        low = below[-1] + 1 if below else 0
        good = [p for p in range(low, int(hold[2])) if may_become_triad(below + [p, int(hold[2])])]
        if good and instrument != ops.DRUMS:
            index = torch.as_tensor([ops.NOTE_OFFSET + instrument * ops.MAX_PITCH + p for p in good],
                                    device=logits.device)
            logits[:, index] += self.bonus
        return logits


class SpanKey:
    """The key prior of a span (``SamplingConstraints.key_prior``): at the note slot, ``penalty``
    comes off the logits of the pitched notes outside the scale of the given music's key
    (``cadenza.data.theory.estimate_key`` of every given note, before and after the span), so they
    are ``exp(penalty)`` times less likely than the model had them; drums are left alone."""

    def __init__(self, span: _Span, outside_pitch_classes: np.ndarray, penalty: float):
        self.span = span
        ids = np.arange(ops.NOTE_OFFSET, ops.NOTE_OFFSET + ops.DRUMS * ops.MAX_PITCH)
        outside = np.isin((ids - ops.NOTE_OFFSET) % ops.MAX_PITCH % 12, outside_pitch_classes)
        self.ids, self.penalty = torch.from_numpy(ids[outside]), penalty

    @classmethod
    def of(cls, span: _Span, triples: np.ndarray, penalty: float) -> "SpanKey | None":
        from cadenza.data.theory import pitch_classes_outside_key

        notes = triples[(triples[:, 2] >= ops.NOTE_OFFSET) & (triples[:, 2] < ops.REST)]
        outside = pitch_classes_outside_key(_score_of(notes)) if len(notes) else None
        return None if outside is None else cls(span, outside, penalty)

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        if self.span.slot == 2:
            index = self.ids.to(logits.device)
            logits[:, index] = logits[:, index] - self.penalty
        return logits


class SpanVoiceLeading:
    """``SamplingConstraints.parallel_penalty`` in a span: at the note slot, ``penalty`` comes off
    the pitched notes that would move in parallel fifths or octaves with a note already struck
    at the same onset (new, given or anticipated), whatever their instrument. The moving voices
    are the notes of the onset before that have stopped by this one: those that end here, and
    after a rest the chord before it, as ``cadenza.data.theory.parallels`` and a listener hear
    them (``cadenza.tokenizers.grammar.parallel_pitches``, bass up as the ids are written)."""

    def __init__(self, span: _Span, controls: np.ndarray, penalty: float):
        self.span, self.penalty = span, penalty
        self.controls = self._pitched(_note_rows(controls, control=True))
        self.events = _NoteReader(span)
        self.pitched = (np.arange(ops.NOTE_OFFSET, ops.REST) - ops.NOTE_OFFSET) // ops.MAX_PITCH != ops.DRUMS

    @staticmethod
    def _pitched(rows: np.ndarray) -> np.ndarray:
        """(start, end, pitch) of the rows that are not drums."""
        instrument = (rows[:, 2] - ops.NOTE_OFFSET) // ops.MAX_PITCH
        rows = rows[instrument != ops.DRUMS]
        return np.stack([rows[:, 0], rows[:, 1], (rows[:, 2] - ops.NOTE_OFFSET) % ops.MAX_PITCH], 1)

    def moving(self, onset: int) -> list[int]:
        """The pitches a note struck at ``onset`` (ticks) would move in parallels with. Given
        notes (a kept melody) that stop and strike here in equal number are voices traced
        already: the new notes continue the other voices, bass up."""
        tolerance = MELODY_TOLERANCE // 2
        notes = np.concatenate([self.controls, self._pitched(self.events.rows())])   # (start, end, pitch)
        given = np.arange(len(notes)) < len(self.controls)                            # the controls come first
        is_struck = np.abs(notes[:, 0] - onset) <= tolerance
        earlier = notes[notes[:, 0] < onset - tolerance, 0]
        if not is_struck.any() or not len(earlier):
            return []
        previous = earlier.max()
        stopped = (notes[:, 0] <= previous + tolerance) & (notes[:, 1] > previous) & (notes[:, 1] <= onset + tolerance)
        given_from, given_to = sorted(notes[stopped & given, 2].tolist()), sorted(notes[is_struck & given, 2].tolist())
        if given_to and len(given_from) == len(given_to):
            fixed, stopped, is_struck = tuple(zip(given_from, given_to)), stopped & ~given, is_struck & ~given
        else:
            fixed = ()
        ended = notes[stopped, 2].tolist()
        return parallel_pitches(ended, notes[is_struck, 2].tolist(), upward=True, fixed=fixed) if ended else []

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        if self.span.slot != 2:
            return logits
        moving = self.moving(self.span.triple[0] - ops.TIME_OFFSET)
        if not moving:
            return logits
        ids = np.flatnonzero(self.pitched & np.isin(np.arange(ops.REST - ops.NOTE_OFFSET) % ops.MAX_PITCH, moving))
        index = torch.from_numpy(ids + ops.NOTE_OFFSET).to(logits.device)
        logits[:, index] = logits[:, index] - self.penalty
        return logits


class SpanPhrase:
    """``SamplingConstraints.phrase_bonus`` in a span: a phrase that has run ``phrase_beats``
    beats since its last held chord (an onset two beats or more after the one before) may end
    on a root-position major or minor triad struck on a beat. At the duration slot of a note on
    such a beat, while the notes struck there so far are all held two beats and can still make
    the triad (``cadenza.data.theory.may_become_triad``; the ids write an instant's notes bass
    first), the durations of two to four beats that end within the span get ``bonus``; at the
    note slot of a note so held above the bass, the pitches that keep the chord on the way to
    the triad do, save those that would move in parallels (``voice_leading``). ``beat`` is
    (origin, ticks per beat) in the span's times."""

    def __init__(self, span: _Span, beat: tuple[float, float], end_tick: int, bonus: float, phrase_beats: float,
                 voice_leading: SpanVoiceLeading | None = None):
        self.span, self.origin, self.period = span, float(beat[0]), float(beat[1])
        self.end_tick, self.bonus, self.phrase_beats = end_tick, bonus, phrase_beats
        self.voice_leading = voice_leading
        self.notes = _NoteReader(span)

    def _so_far(self, onset: int) -> list[int] | None:
        """Note ids struck at ``onset`` so far, bass first, while they may end the phrase there."""
        beats = (onset - self.origin) / self.period
        if abs(beats - round(beats)) * self.period > MELODY_TOLERANCE:
            return None
        notes = self.notes.rows()
        onsets = np.unique(np.append(notes[notes[:, 0] <= onset, 0], onset))
        gaps = np.flatnonzero(np.diff(onsets) >= 2 * self.period - MELODY_TOLERANCE)
        phrase_start = onsets[gaps[-1] + 1] if len(gaps) else onsets[0]
        if onset - phrase_start < self.phrase_beats * self.period - MELODY_TOLERANCE:
            return None
        here = notes[notes[:, 0] == onset]
        if ((here[:, 1] - here[:, 0]) < 2 * self.period - MELODY_TOLERANCE).any():
            return None
        pitches = ((here[:, 2] - ops.NOTE_OFFSET) % ops.MAX_PITCH).tolist()
        instruments = set(((here[:, 2] - ops.NOTE_OFFSET) // ops.MAX_PITCH).tolist())
        if len(instruments) > 1 or ops.DRUMS in instruments or pitches != sorted(pitches) or \
                not may_become_triad(pitches):
            return None
        return here[:, 2].tolist()

    def __call__(self, state, logits: torch.Tensor) -> torch.Tensor:
        span = self.span
        if span.slot not in (1, 2):
            return logits
        onset = span.triple[0] - ops.TIME_OFFSET
        so_far = self._so_far(onset)
        if so_far is None:
            return logits
        if span.slot == 1:
            low = int(np.ceil(2 * self.period - MELODY_TOLERANCE))
            high = min(int(4 * self.period + MELODY_TOLERANCE), self.end_tick - onset, ops.MAX_DUR - 1)
            if high >= low:
                logits[:, ops.DUR_OFFSET + low:ops.DUR_OFFSET + high + 1] += self.bonus
            return logits
        if not so_far or span.triple[1] - ops.DUR_OFFSET < 2 * self.period - MELODY_TOLERANCE:
            return logits
        pitches = [(n - ops.NOTE_OFFSET) % ops.MAX_PITCH for n in so_far]
        instrument = (so_far[0] - ops.NOTE_OFFSET) // ops.MAX_PITCH
        avoid = set(self.voice_leading.moving(onset)) if self.voice_leading is not None else set()
        good = [p for p in range(pitches[-1] + 1, ops.MAX_PITCH) if p not in avoid and may_become_triad(pitches + [p])]
        if good:
            index = torch.as_tensor([ops.NOTE_OFFSET + instrument * ops.MAX_PITCH + p for p in good],
                                    device=logits.device)
            logits[:, index] += self.bonus
        return logits


@torch.no_grad()
def generate_span(model, events: np.ndarray, *, start: float, end: float, controls: np.ndarray | None = None,
                  temperature: float = 1.0, top_p: float | None = 0.95, top_k: int | None = None, seed: int = 0,
                  delta: int = ops.DELTA * ops.TIME_RESOLUTION, max_events: int = 4000,
                  context: int = ops.CONTEXT_SIZE, budget: Budget | None = None, progress=None,
                  exit_ceiling: tuple[int, int] | None = None, melody: np.ndarray | None = None,
                  melody_on_top: bool = True, constraints: SamplingConstraints | None = None,
                  beat: tuple[float, float] | None = None, what: str = "span") -> np.ndarray:
    """Events (flat triples) after generating from ``start`` to ``end`` seconds.

    ``events`` are the given notes: those before ``start`` are the prompt, those at or after
    ``start`` are kept and anticipated as controls (so an infill fits the music after it);
    ``controls`` are extra control triples (e.g. a melody, as ATIME/ADUR/ANOTE ids);
    ``context`` is the sequence length the model was trained on; ``budget`` bounds the ids and
    wall time (``max_events`` triples at most), ``progress`` is a tqdm-like bar; ``exit_ceiling``
    (pitch, tick) keeps notes that sound at or after the tick at or below the pitch (see
    :class:`ExitCeiling`); ``melody`` ((n, 3) start tick, end tick, pitch, in the times of
    ``events``) is a kept melody the new notes accompany; ``constraints`` (None: the defaults)
    are the structural limits of :class:`SpanConstraints` and, given a melody, its
    ``under_melody`` (:class:`UnderMelody`, when ``melody_on_top``) and
    ``melody_dissonance_penalty`` (:class:`MelodyConsonance`) and, given the ``beat``,
    ``melody_hold_bonus`` (:class:`MelodyHold`), ``parallel_penalty``
    (:class:`SpanVoiceLeading`), ``key_prior`` (:class:`SpanKey`) and, given the ``beat``
    ((origin, period) ticks in the times of ``events``), ``phrase_bonus`` (:class:`SpanPhrase`). Returns the given events plus the generated ones, sorted, without RESTs.
    """
    start_tick, end_tick = int(round(start * ops.TIME_RESOLUTION)), int(round(end * ops.TIME_RESOLUTION))
    if not 0 <= start_tick < end_tick:
        raise CadenzaError(f"the span must have 0 <= start < end, got {start} .. {end} s")
    if end_tick > ops.MAX_TIME:
        raise CadenzaError(f"anticipatory ids hold times below {ops.MAX_TIME // ops.TIME_RESOLUTION} s; "
                           f"end {end} s is too late")
    triples = ops.as_triples(events)
    times = triples[:, 0] - ops.TIME_OFFSET
    prompt = ops.pad(triples[times < start_tick].ravel(), start_tick)
    future = triples[times >= start_tick]
    control_list = [future + ops.CONTROL_OFFSET]
    if controls is not None and len(controls):
        control_list.append(ops.as_triples(controls))
    pending = ops.as_triples(ops.sort(np.concatenate(control_list).ravel()))
    flag = ops.ANTICIPATE if len(pending) else ops.AUTOREGRESS
    tokens, leftover = ops.anticipate(prompt, pending.ravel())
    current = int(ops.max_time(prompt, seconds=False)) if len(prompt) else 0
    device = next(model.parameters()).device
    span = _Span(_Window(model, flag, context), list(ops.as_triples(tokens)), ops.as_triples(leftover), current,
                 delta)
    processors = [TripleSlots(span), SpanTime(span, start_tick, end_tick)]
    constraints = SamplingConstraints() if constraints is None else constraints
    given = np.concatenate([_note_rows(triples), _note_rows(controls, control=True)]) \
        if controls is not None and len(controls) else _note_rows(triples)
    texture = texture_voices(given, start_tick)
    if constraints.max_note_seconds is not None or constraints.max_notes_per_position is not None or \
            constraints.max_polyphony is not None or constraints.keep_texture or not constraints.allow_repeated_pitch:
        processors.append(SpanConstraints(span, constraints, pending, texture))
    if exit_ceiling is not None:
        processors.append(ExitCeiling(span, *exit_ceiling))
    if melody is not None and len(melody):
        if constraints.under_melody and melody_on_top:
            processors.append(UnderMelody(span, melody))
        if constraints.melody_dissonance_penalty:
            processors.append(MelodyConsonance(span, melody, constraints.melody_dissonance_penalty))
    voice_leading = SpanVoiceLeading(span, pending, constraints.parallel_penalty) if constraints.parallel_penalty \
        else None
    if voice_leading is not None:
        processors.append(voice_leading)
    if constraints.melody_hold_bonus and beat is not None and melody is not None and len(melody):
        processors.append(MelodyHold(span, melody, beat, constraints.melody_hold_bonus, texture))
    if constraints.phrase_bonus and beat is not None:
        processors.append(SpanPhrase(span, beat, end_tick, constraints.phrase_bonus, constraints.phrase_beats,
                                     voice_leading))
    if constraints.key_prior:
        key = SpanKey.of(span, np.concatenate([triples, ops.as_triples(controls) - ops.CONTROL_OFFSET])
                         if controls is not None and len(controls) else triples, constraints.key_prior)
        if key is not None:
            processors.append(key)
    processors += sampling_processors(temperature, top_k, top_p, nucleus_keep(AnticipatoryTokenizer(), constraints))
    decode(span, processors, Sampler(1, seed, device, greedy=temperature == 0), batch=1,
           max_steps=3 * max_events, device=device, budget=budget, progress=progress, what=what)
    history = np.asarray(span.history, np.int64).reshape(-1, 3)
    new_events, _ = ops.split(history.ravel())
    return ops.sort(np.concatenate([ops.unpad(new_events), future.ravel()]))


MAX_SECONDS = 50.0          # default wall time of one infill or accompaniment
JOIN_INTERVAL = 7           # semitones: an infill's top voice leaves the span within a fifth
JOIN_SECONDS = 1.0          # the ceiling holds for notes sounding this close to the span's end
JOIN_TRIES = 4              # samples drawn at most until one joins
WINDOW_BEFORE = 20 * ops.TIME_RESOLUTION   # music kept before a window's span (ticks)
WINDOW_AFTER = 20 * ops.TIME_RESOLUTION    # music kept after it, for anticipation


def _events_of(tokenizer, score: symusic.Score) -> np.ndarray:
    """The piece's event triples (times in ticks of 10 ms, any length)."""
    return ops.as_triples(tokenizer.events(score))


def _onsets(triples: np.ndarray) -> np.ndarray:
    return triples[:, 0] - ops.TIME_OFFSET


def _shift(triples: np.ndarray, ticks: int, low: int | None = None, high: int | None = None) -> np.ndarray:
    """Event triples moved by ``ticks``, then only those with onsets in [low, high)."""
    out = triples.copy()
    out[:, 0] += ticks
    keep = np.ones(len(out), bool)
    if low is not None:
        keep &= _onsets(out) >= low
    if high is not None:
        keep &= _onsets(out) < high
    return out[keep]


def _score_of(triples: np.ndarray) -> symusic.Score:
    """A Score of event triples of any length (as the tokenizer decodes them: 10 ms ticks)."""
    from cadenza.tokenizers.anticipatory import notes_to_score

    triples = ops.as_triples(ops.sort(triples[triples[:, 2] < ops.REST].ravel()))
    notes = triples[:, 2] - ops.NOTE_OFFSET
    return notes_to_score(_onsets(triples), triples[:, 1] - ops.DUR_OFFSET, notes % ops.MAX_PITCH,
                          notes // ops.MAX_PITCH)


def _new_rows(full: np.ndarray, given: np.ndarray) -> np.ndarray:
    """The triples of ``full`` that are not among ``given``: the generated notes."""
    given_keys = {tuple(row) for row in ops.as_triples(given)}
    return np.array([row for row in ops.as_triples(full) if tuple(row) not in given_keys],
                    np.int64).reshape(-1, 3)


def _result(given: np.ndarray, new: np.ndarray) -> TaskResult:
    full = np.concatenate([given.reshape(-1, 3), new.reshape(-1, 3)])
    return TaskResult(_score_of(full), _score_of(new.reshape(-1, 3)), len(new))


def _budget(max_seconds: float | None, max_events: int) -> Budget:
    return Budget(tokens=3 * max_events, seconds=max_seconds)


def _progress(enabled: bool, what: str):
    from .sampling import progress_bar

    return progress_bar(enabled, None, what)


def _window_offset(start_tick: int, end_tick: int, last_tick: int) -> int:
    """Ticks to take off every time so the span [start, end) and the music around it fit the
    ids' 100 s: 0 when the whole piece fits, else the span ends ``WINDOW_AFTER`` before the
    window's end (or starts at its start)."""
    if max(end_tick, last_tick) < ops.MAX_TIME:
        return 0
    return max(0, min(start_tick, end_tick + WINDOW_AFTER - ops.MAX_TIME + 1))


def _next_top(kept: np.ndarray, end_tick: int) -> int | None:
    """The top-voice pitch of the first instant at or after ``end_tick`` in the kept music."""
    from cadenza.data.theory import top_voice

    times, top = top_voice(_score_of(kept))
    after = np.flatnonzero(times >= end_tick / ops.TIME_RESOLUTION - 1e-9)
    return int(top[after[0]]) if len(after) else None


def _exit_leap(full: np.ndarray, start_tick: int, end_tick: int) -> float:
    from cadenza.data.theory import span_joins

    return span_joins(_score_of(full), start_tick / ops.TIME_RESOLUTION, end_tick / ops.TIME_RESOLUTION)["exit"]


def _beat_ticks(score: symusic.Score, offset: int) -> tuple[float, float] | None:
    """The piece's beat (``cadenza.data.context.beat_grid``) as (origin, period) ticks of a
    window whose times are shifted by ``offset``; None for free timing."""
    from cadenza.data.context import beat_grid

    beat = beat_grid(score)
    return None if beat is None else (beat[0] * ops.TIME_RESOLUTION - offset, beat[1] * ops.TIME_RESOLUTION)


def infill(model, tokenizer, score: symusic.Score, start: float, end: float, *, join: bool = True,
           join_tries: int = JOIN_TRIES, max_seconds: float | None = MAX_SECONDS, max_events: int = 4000,
           progress: bool = True, constraints: SamplingConstraints | None = None, **sampling) -> TaskResult:
    """Regenerate the notes starting in [start, end) seconds, given the music around them; the
    whole piece comes back, however long (the model works in a window of the ids' 100 s around
    the span, times shifted into range).

    With ``join`` (default), the span ends joined to what follows: notes sounding in its last
    ``JOIN_SECONDS`` stay within a fifth above the next kept top-voice note (:class:`ExitCeiling`),
    and up to ``join_tries`` samples (seeds ``seed``, ``seed + 1``, ...) are drawn until the top
    voice leaves the span within a fifth (else the closest is kept). ``max_seconds`` bounds the
    wall time of all tries together (None: unbounded). ``constraints`` (None: the defaults) are
    the structural limits of :class:`SpanConstraints`."""
    start_tick, end_tick = int(round(start * ops.TIME_RESOLUTION)), int(round(end * ops.TIME_RESOLUTION))
    if end_tick - start_tick >= ops.MAX_TIME:
        raise CadenzaError(f"anticipatory ids hold times below {ops.MAX_TIME // ops.TIME_RESOLUTION} s; "
                           f"a span of {end - start:g} s is too long")
    triples = _events_of(tokenizer, score)
    times = _onsets(triples)
    kept = triples[(times < start_tick) | (times >= end_tick)]
    offset = _window_offset(start_tick, end_tick, int(times.max()) if len(times) else 0)
    window = _shift(kept, -offset, 0, ops.MAX_TIME)
    ceiling = None
    if join:
        top = _next_top(kept, end_tick)
        if top is not None:
            ceiling = (top + JOIN_INTERVAL, end_tick - offset - int(JOIN_SECONDS * ops.TIME_RESOLUTION))
    tries = max(1, join_tries) if join and ceiling is not None and sampling.get("temperature", 1.0) != 0 else 1
    seed = int(sampling.pop("seed", 0))
    budget = _budget(max_seconds, max_events)
    best = None
    with _progress(progress, "infill") as bar:
        for attempt in range(tries):
            full = generate_span(model, window.ravel(), start=(start_tick - offset) / ops.TIME_RESOLUTION,
                                 end=(end_tick - offset) / ops.TIME_RESOLUTION, seed=seed + attempt,
                                 budget=budget, progress=bar, exit_ceiling=ceiling, what="infill",
                                 constraints=constraints, beat=_beat_ticks(score, offset),
                                 max_events=max_events, **sampling)
            new = _shift(_new_rows(full, window.ravel()), offset)
            leap = _exit_leap(np.concatenate([kept, new]), start_tick, end_tick) if tries > 1 else 0.0
            if best is None or leap < best[0]:
                best = (leap, new)
            if not leap > JOIN_INTERVAL or budget.out_of_time() or budget.hit:
                break
    return _in_context(score, _result(kept, best[1]), regenerated=(start, end))


def _in_context(score: symusic.Score, result: TaskResult, melody: int | None = None, *,
                regenerated: tuple[float, float]) -> TaskResult:
    """The result in the given piece's tempo, metre, key and parts (see restore_context); the
    last track of ``result.score`` is the melody, given back to track ``melody``; the notes of
    ``score`` starting in ``regenerated`` (seconds) are the ones the result replaced."""
    from cadenza.data.context import restore_context

    fixed = {len(result.score.tracks) - 1: melody} if melody is not None else None
    result.score = restore_context(score, result.score, fixed=fixed, regenerated=regenerated)
    result.generated = restore_context(score, result.generated, avoid=(melody,) if melody is not None else (),
                                       regenerated=regenerated)
    return result


def _without_tracks(score: symusic.Score, keep) -> symusic.Score:
    out = score.copy()
    tracks = [t for i, t in enumerate(out.tracks) if keep(i, t)]
    out.tracks.clear()
    for track in tracks:
        out.tracks.append(track)
    return out


def melody_on_top(score: symusic.Score, is_melody) -> bool:
    """Whether the melody (the tracks where ``is_melody(index, track)``) is the piece's top part:
    its mean pitch is at least every other pitched track's (a melody alone is on top)."""
    def mean(tracks):
        pitches = [n.pitch for t in tracks for n in t.notes]
        return float(np.mean(pitches)) if pitches else None

    melody = mean([t for i, t in enumerate(score.tracks) if is_melody(i, t)])
    others = [mean([t]) for i, t in enumerate(score.tracks) if not is_melody(i, t) and not t.is_drum]
    return melody is not None and all(m is None or melody >= m for m in others)


def _melody_notes(melody: np.ndarray) -> np.ndarray:
    """(start tick, end tick, pitch) of melody event triples (drums left out)."""
    notes = melody[:, 2] - ops.NOTE_OFFSET
    pitched = notes < ops.DRUMS * ops.MAX_PITCH
    onsets = _onsets(melody)
    return np.stack([onsets, onsets + melody[:, 1] - ops.DUR_OFFSET, notes % ops.MAX_PITCH], 1)[pitched]


def accompany(model, tokenizer, score: symusic.Score, melody_program: int | None = None, *,
              melody_track: int | None = None, prompt_seconds: float = 0.0, end: float | None = None,
              max_seconds: float | None = MAX_SECONDS, max_events: int = 4000, progress: bool = True,
              constraints: SamplingConstraints | None = None, **sampling) -> TaskResult:
    """Keep a melody (the tracks of ``melody_program``, or track ``melody_track``) as anticipated
    controls and generate the other parts around it.

    The first ``prompt_seconds`` of the other parts are kept as a prompt; generation runs to the
    melody's last note end (or ``end``). The result has the piece's tempo, metre, key and tracks:
    the melody in its own track, the new notes in the others (in tracks of their own when the
    piece has no others). A piece longer than the ids' 100 s is accompanied window by window
    (each window's times shifted into range), so all of it comes back. ``max_seconds`` bounds
    the wall time (None: unbounded); a cut is reported in one line.

    ``constraints`` (None: the defaults) are the structural limits of :class:`SpanConstraints`;
    with ``under_melody`` the new notes stay under the melody (:class:`UnderMelody`) when it is
    the piece's top part (:func:`melody_on_top`: a bass line given as the melody leaves the
    parts above it free), and ``melody_dissonance_penalty`` makes a note struck with a melody
    note less likely to form a 2nd, tritone or 7th with it (:class:`MelodyConsonance`)."""
    if (melody_program is None) == (melody_track is None):
        raise CadenzaError("give the melody as a program or as a track index, one of them")
    if melody_track is not None:
        if not 0 <= melody_track < len(score.tracks):
            raise CadenzaError(f"track {melody_track} does not exist (the piece has {len(score.tracks)} tracks)")
        is_melody = lambda i, t: i == melody_track  # noqa: E731
    else:
        is_melody = lambda i, t: t.program == melody_program and not t.is_drum  # noqa: E731
    melody_score = _without_tracks(score, is_melody)
    if melody_score.note_num() == 0:
        programs = sorted({t.program for t in score.tracks if t.notes})
        raise CadenzaError(f"no notes of program {melody_program} to accompany (programs here: {programs})")
    others_score = _without_tracks(score, lambda i, t: not is_melody(i, t))
    melody = _events_of(tokenizer, melody_score)
    others = _events_of(tokenizer, others_score) if others_score.note_num() else np.zeros((0, 3), np.int64)
    prompt_tick = int(round(prompt_seconds * ops.TIME_RESOLUTION))
    prompt = others[_onsets(others) < prompt_tick]
    last = int((_onsets(melody) + melody[:, 1] - ops.DUR_OFFSET).max())
    stop_tick = int(round(end * ops.TIME_RESOLUTION)) if end is not None else last
    stop_tick = min(stop_tick, ops.MAX_TIME - 1) if max(stop_tick, last) < ops.MAX_TIME else stop_tick
    on_top = melody_on_top(score, is_melody)
    melody_notes = _melody_notes(melody)
    seed = int(sampling.pop("seed", 0))
    budget = _budget(max_seconds, max_events)
    new = np.zeros((0, 3), np.int64)
    window_start, window = prompt_tick, 0
    with _progress(progress, "accompany") as bar:
        while window_start < stop_tick and not budget.out_of_time() and not budget.hit:
            # one window of the ids' time range: the last WINDOW_BEFORE of music as the prompt,
            # the melody up to WINDOW_AFTER past the window's span as controls
            offset = 0 if stop_tick < ops.MAX_TIME else max(0, window_start - WINDOW_BEFORE)
            window_end = min(stop_tick, offset + ops.MAX_TIME - WINDOW_AFTER) if offset or stop_tick >= ops.MAX_TIME \
                else stop_tick
            given = _shift(np.concatenate([prompt, new]), -offset, 0, window_start - offset)
            controls = _shift(melody, -offset, 0, ops.MAX_TIME) + ops.CONTROL_OFFSET
            full = generate_span(model, given.ravel(), start=(window_start - offset) / ops.TIME_RESOLUTION,
                                 end=(window_end - offset) / ops.TIME_RESOLUTION, controls=controls.ravel(),
                                 seed=seed + window, budget=budget, progress=bar, what="accompaniment",
                                 melody=melody_notes - [offset, offset, 0], melody_on_top=on_top,
                                 constraints=constraints, beat=_beat_ticks(score, offset),
                                 max_events=max_events, **sampling)
            added = _shift(_new_rows(full, given.ravel()), offset)
            new = np.concatenate([new, added])
            window_start, window = window_end, window + 1
            if budget.tokens is not None:     # the ids budget holds for all windows together
                budget.tokens = max(1, budget.tokens - 3 * len(added))
    result = _result(prompt, new)
    for track in _score_of(melody).tracks:  # same time base as the generated parts
        track.name = "melody"
        result.score.tracks.append(track)
    melody_part = melody_track if melody_track is not None else \
        next(i for i, t in enumerate(score.tracks) if t.notes and is_melody(i, t))
    return _in_context(score, result, melody_part, regenerated=(prompt_seconds, math.inf))
