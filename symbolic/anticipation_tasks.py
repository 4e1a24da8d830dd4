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

from dataclasses import dataclass

import numpy as np
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.tokenizers import anticipation_ops as ops

from .decoding import Sampler, Verdict, decode, sampling_processors


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
        ids = np.concatenate([[self.flag], self._relative(window).ravel()]) if len(window) else np.array([self.flag])
        self._feed(ids)
        self.fed = len(history)

    def _feed(self, ids) -> None:
        tensor = torch.as_tensor(np.asarray(ids, np.int64), device=self.device)[None]
        chunk = 512
        for begin in range(0, tensor.shape[1], chunk):
            self.logits = self.model(tensor[:, begin:begin + chunk], cache=self.cache, last_only=True)[0][0, -1]

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


@torch.no_grad()
def generate_span(model, events: np.ndarray, *, start: float, end: float, controls: np.ndarray | None = None,
                  temperature: float = 1.0, top_p: float | None = 0.95, top_k: int | None = None, seed: int = 0,
                  delta: int = ops.DELTA * ops.TIME_RESOLUTION, max_events: int = 4000,
                  context: int = ops.CONTEXT_SIZE) -> np.ndarray:
    """Events (flat triples) after generating from ``start`` to ``end`` seconds.

    ``events`` are the given notes: those before ``start`` are the prompt, those at or after
    ``start`` are kept and anticipated as controls (so an infill fits the music after it);
    ``controls`` are extra control triples (e.g. a melody, as ATIME/ADUR/ANOTE ids);
    ``context`` is the sequence length the model was trained on.
    Returns the given events plus the generated ones, sorted, without RESTs.
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
    processors = [TripleSlots(span), SpanTime(span, start_tick, end_tick),
                  *sampling_processors(temperature, top_k, top_p)]
    decode(span, processors, Sampler(1, seed, device, greedy=temperature == 0), batch=1,
           max_steps=3 * max_events, device=device)
    history = np.asarray(span.history, np.int64).reshape(-1, 3)
    new_events, _ = ops.split(history.ravel())
    return ops.sort(np.concatenate([ops.unpad(new_events), future.ravel()]))


def _events_of(tokenizer, score: symusic.Score) -> np.ndarray:
    events = tokenizer.events(score)
    triples = ops.as_triples(events)
    return triples[triples[:, 0] - ops.TIME_OFFSET < ops.MAX_TIME].ravel()


def _result(tokenizer, full: np.ndarray, given: np.ndarray) -> TaskResult:
    full_t, given_t = ops.as_triples(full), ops.as_triples(given)
    given_keys = {tuple(row) for row in given_t}
    new = np.array([row for row in full_t if tuple(row) not in given_keys], np.int64).reshape(-1, 3)
    return TaskResult(tokenizer.decode(ops.sort(full)), tokenizer.decode(ops.sort(new.ravel())), len(new))


def infill(model, tokenizer, score: symusic.Score, start: float, end: float, **sampling) -> TaskResult:
    """Regenerate the notes starting in [start, end) seconds, given the music around them."""
    events = _events_of(tokenizer, score)
    triples = ops.as_triples(events)
    times = (triples[:, 0] - ops.TIME_OFFSET) / ops.TIME_RESOLUTION
    kept = triples[(times < start) | (times >= end)].ravel()
    full = generate_span(model, kept, start=start, end=end, **sampling)
    return _in_context(score, _result(tokenizer, full, kept))


def _in_context(score: symusic.Score, result: TaskResult, melody: int | None = None) -> TaskResult:
    """The result in the given piece's tempo, metre, key and parts (see restore_context); the
    last track of ``result.score`` is the melody, given back to track ``melody``."""
    from cadenza.data.context import restore_context

    fixed = {len(result.score.tracks) - 1: melody} if melody is not None else None
    result.score = restore_context(score, result.score, fixed=fixed)
    result.generated = restore_context(score, result.generated, avoid=(melody,) if melody is not None else ())
    return result


def _without_tracks(score: symusic.Score, keep) -> symusic.Score:
    out = score.copy()
    tracks = [t for i, t in enumerate(out.tracks) if keep(i, t)]
    out.tracks.clear()
    for track in tracks:
        out.tracks.append(track)
    return out


def accompany(model, tokenizer, score: symusic.Score, melody_program: int | None = None, *,
              melody_track: int | None = None, prompt_seconds: float = 0.0, end: float | None = None,
              **sampling) -> TaskResult:
    """Keep a melody (the tracks of ``melody_program``, or track ``melody_track``) as anticipated
    controls and generate the other parts around it.

    The first ``prompt_seconds`` of the other parts are kept as a prompt; generation runs to the
    melody's last note end (or ``end``). The result has the piece's tempo, metre, key and tracks:
    the melody in its own track, the new notes in the others (in tracks of their own when the
    piece has no others)."""
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
    melody = ops.as_triples(_events_of(tokenizer, melody_score))
    others = ops.as_triples(_events_of(tokenizer, others_score)) if others_score.note_num() else \
        np.zeros((0, 3), np.int64)
    prompt = others[(others[:, 0] - ops.TIME_OFFSET) < int(round(prompt_seconds * ops.TIME_RESOLUTION))]
    last = int((melody[:, 0] - ops.TIME_OFFSET + melody[:, 1] - ops.DUR_OFFSET).max()) / ops.TIME_RESOLUTION
    stop = min(end if end is not None else last, (ops.MAX_TIME - 1) / ops.TIME_RESOLUTION)
    full = generate_span(model, prompt.ravel(), start=prompt_seconds, end=stop,
                         controls=(melody + ops.CONTROL_OFFSET).ravel(), **sampling)
    result = _result(tokenizer, full, prompt.ravel())
    for track in tokenizer.decode(ops.sort(melody.ravel())).tracks:  # same time base as the decoded parts
        track.name = "melody"
        result.score.tracks.append(track)
    melody_part = melody_track if melody_track is not None else \
        next(i for i, t in enumerate(score.tracks) if t.notes and is_melody(i, t))
    return _in_context(score, result, melody_part)
