"""The Anticipatory Music Transformer's vocabulary and its pure operations over id arrays.

Token-for-token compatible with the reference code (jthickstun/anticipation: ``vocab.py``,
``ops.py``, ``tokenize.py``). A sequence is a flat array of triples: an *event* is
``(TIME_OFFSET + t, DUR_OFFSET + d, NOTE_OFFSET + 128*instrument + pitch)`` with times and
durations in 10 ms ticks, a *control* is the same triple shifted by ``CONTROL_OFFSET``, a rest is
``(t, DUR_OFFSET + 0, REST)`` and a piece boundary is ``(SEPARATOR,)*3``. Training sequences put
one AUTOREGRESS or ANTICIPATE flag in front of 1023 such tokens.

Every operation here works on whole numpy arrays (no per-note Python loop) and reproduces the
reference's result exactly, including its quirks, which are named where they matter.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cadenza.data.errors import TokenizerError

# -- vocabulary (reference config.py / vocab.py) --------------------------------------------
TIME_RESOLUTION = 100          # ticks per second: 10 ms
MAX_TIME = 100 * TIME_RESOLUTION   # times below 100 s
MAX_DUR = 10 * TIME_RESOLUTION     # durations below 10 s
MAX_PITCH = 128
MAX_INSTR = 129                    # 128 General MIDI programs + drums
DRUMS = 128                        # the instrument number of channel 10
MAX_NOTE = MAX_PITCH * MAX_INSTR
DELTA = 5                          # anticipation interval in seconds
CONTEXT_SIZE = 1024
EVENT_SIZE = 3
M = 341                            # events per training sequence: 1024 = 1 + 3*341

TIME_OFFSET = 0
DUR_OFFSET = TIME_OFFSET + MAX_TIME          # 10000
NOTE_OFFSET = DUR_OFFSET + MAX_DUR           # 11000
REST = NOTE_OFFSET + MAX_NOTE                # 27512
CONTROL_OFFSET = NOTE_OFFSET + MAX_NOTE + 1  # 27513
ATIME_OFFSET = CONTROL_OFFSET                # 27513
ADUR_OFFSET = ATIME_OFFSET + MAX_TIME        # 37513
ANOTE_OFFSET = ADUR_OFFSET + MAX_DUR         # 38513
SPECIAL_OFFSET = ANOTE_OFFSET + MAX_NOTE     # 55025
SEPARATOR = SPECIAL_OFFSET
AUTOREGRESS = SPECIAL_OFFSET + 1
ANTICIPATE = SPECIAL_OFFSET + 2
VOCAB_SIZE = ANTICIPATE + 1                  # 55028

ANTICIPATION_RATES = 10        # the reference's random augmentation draws a rate r in 1..9, p = r/10
SPAN_RATE = 0.05               # the reference's span augmentation rate (spans per second)
MIN_TRACK_EVENTS = 100
MIN_TRACK_TIME_IN_SECONDS = 10
MAX_TRACK_TIME_IN_SECONDS = 3600
MAX_TRACK_INSTR = 16


class TimeOverflowError(TokenizerError):
    """A time does not fit the vocabulary (100 s): the reference raises OverflowError here."""


# -- helpers -----------------------------------------------------------------------------------
def as_triples(tokens) -> np.ndarray:
    """View a flat id sequence as an (n, 3) int64 array; its length must be a multiple of 3."""
    flat = np.asarray(tokens, dtype=np.int64).ravel()
    if flat.size % 3:
        raise TokenizerError(f"an anticipatory sequence is made of triples; got {flat.size} ids "
                             f"({flat.size % 3} left over)")
    return flat.reshape(-1, 3)


def _flat(triples: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(triples, dtype=np.int64).reshape(-1)


def _times(triples: np.ndarray) -> np.ndarray:
    """Relative times of triples, events and controls alike (the reference's ``this_time``)."""
    is_control = triples[:, 2] >= CONTROL_OFFSET
    return triples[:, 0] - np.where(is_control, ATIME_OFFSET, TIME_OFFSET)


def _before_separator(triples: np.ndarray) -> np.ndarray:
    """The triples before the first SEPARATOR: the reference's min_time/max_time stop there."""
    separators = np.flatnonzero(triples[:, 2] == SEPARATOR)
    return triples[: separators[0]] if separators.size else triples


def event_triples(times, durations, notes) -> np.ndarray:
    """Flat event ids from arrays of tick times, tick durations and notes (128*instrument + pitch)."""
    triples = np.stack([TIME_OFFSET + np.asarray(times, np.int64),
                        DUR_OFFSET + np.asarray(durations, np.int64),
                        NOTE_OFFSET + np.asarray(notes, np.int64)], axis=1)
    return _flat(triples)


# -- queries -------------------------------------------------------------------------------------
def min_time(tokens, seconds: bool = True, instr: int | None = None) -> float | int:
    """Earliest time before the first SEPARATOR (0 when there is none), optionally of one instrument."""
    triples = _before_separator(as_triples(tokens))
    times = _times(triples)
    if instr is not None:
        times = times[instrument_of(triples[:, 2]) == instr]
    earliest = int(times.min()) if times.size else 0
    return earliest / float(TIME_RESOLUTION) if seconds else earliest


def max_time(tokens, seconds: bool = True, instr: int | None = None) -> float | int:
    """Latest onset before the first SEPARATOR (0 when there is none), optionally of one instrument."""
    triples = _before_separator(as_triples(tokens))
    times = _times(triples)
    if instr is not None:
        times = times[instrument_of(triples[:, 2]) == instr]
    latest = max(int(times.max()), 0) if times.size else 0
    return latest / float(TIME_RESOLUTION) if seconds else latest


def instrument_of(note_ids: np.ndarray) -> np.ndarray:
    """Instrument of note ids, events or controls (REST reads as 129, as in the reference)."""
    note_ids = np.asarray(note_ids, np.int64)
    return (note_ids - np.where(note_ids >= CONTROL_OFFSET, ANOTE_OFFSET, NOTE_OFFSET)) // MAX_PITCH


def get_instruments(tokens) -> dict[int, int]:
    """Note counts per instrument, in order of first appearance (special triples skipped)."""
    notes = as_triples(tokens)[:, 2]
    notes = notes[notes < SPECIAL_OFFSET]
    instruments = instrument_of(notes)
    values, first, counts = np.unique(instruments, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return {int(values[i]): int(counts[i]) for i in order}


# -- the reference's ops.py ----------------------------------------------------------------------
def split(tokens) -> tuple[np.ndarray, np.ndarray]:
    """Split an interleaved sequence into (events, controls), each in its original order."""
    triples = as_triples(tokens)
    is_control = triples[:, 2] >= CONTROL_OFFSET
    return _flat(triples[~is_control]), _flat(triples[is_control])


def unpad(tokens) -> np.ndarray:
    """Remove REST triples."""
    triples = as_triples(tokens)
    return _flat(triples[triples[:, 2] != REST])


def sort(tokens) -> np.ndarray:
    """Stable sort of a sequence of events or of controls (not both) by their time token."""
    triples = as_triples(tokens)
    return _flat(triples[np.argsort(triples[:, 0], kind="stable")])


def pad(tokens, end_time: int | None = None, density: int = TIME_RESOLUTION) -> np.ndarray:
    """Insert a REST every ``density`` ticks of silence, up to ``end_time`` (ticks).

    As the reference: a gap of more than ``density`` ticks after the previous time (0 at the
    start) gets RESTs at previous+density, previous+2*density, ...; ``end_time`` of None or 0 means
    the sequence's own max_time. Only events may be padded (pad before anticipating).
    """
    triples = as_triples(tokens)
    if np.any(triples[:, 2] >= CONTROL_OFFSET):
        raise TokenizerError("pad() takes events only; pad before adding controls or separators")
    times = triples[:, 0] - TIME_OFFSET
    end = end_time if end_time else max_time(triples, seconds=False)
    previous = np.concatenate([[0], times])            # the time before each event, then the last
    targets = np.concatenate([times, [end]])            # each event's time, then the end time
    counts = np.maximum((targets - previous - 1) // density, 0)
    total = int(counts.sum())
    if total == 0:
        return _flat(triples)
    # rest j of gap g sits at previous[g] + (j+1)*density
    gap_of_rest = np.repeat(np.arange(counts.size), counts)
    first_rest = np.cumsum(counts) - counts
    step = np.arange(total) - first_rest[gap_of_rest] + 1
    rests = np.empty((total, 3), np.int64)
    rests[:, 0] = TIME_OFFSET + previous[gap_of_rest] + step * density
    rests[:, 1] = DUR_OFFSET + 0
    rests[:, 2] = REST
    # each gap's rests come right before the event that closes it (the last gap: at the end)
    out = np.empty((len(triples) + total, 3), np.int64)
    event_slots = np.arange(len(triples)) + np.cumsum(counts[:-1])
    rest_slots = np.arange(total) + np.repeat(np.arange(counts.size), counts)
    out[event_slots] = triples
    out[rest_slots] = rests
    return _flat(out)


def anticipate(events, controls, delta: int = DELTA * TIME_RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """Interleave time-sorted events with controls, each control ``delta`` ticks ahead of its time.

    As the reference: before each event, every pending control whose time is at most ``delta``
    after the *previous* event's time (0 before the first event) is emitted, in order. Returns
    (tokens, unconsumed controls): controls later than the next-to-last event + delta are left over.
    """
    event_triples_ = as_triples(events)
    control_triples = as_triples(controls)
    if control_triples.size == 0:
        return _flat(event_triples_), _flat(control_triples)
    if np.any(event_triples_[:, 2] >= CONTROL_OFFSET):
        raise TokenizerError("anticipate() takes events and controls separately; events hold a control")
    event_times = event_triples_[:, 0] - TIME_OFFSET
    if np.any(np.diff(event_times) < 0):
        raise TokenizerError("anticipate() needs events sorted by time")
    previous_times = np.concatenate([[0], event_times[:-1]]) if event_times.size else event_times
    control_times = control_triples[:, 0] - ATIME_OFFSET
    # the first event index whose previous time reaches the control's time - delta; the while
    # loop consumes controls in order, so a control never goes before an earlier control
    slot = np.searchsorted(previous_times, control_times - delta, side="left")
    slot = np.maximum.accumulate(slot)
    consumed = slot < len(event_triples_)
    used = control_triples[consumed]
    used_slot = slot[consumed]
    keys = np.concatenate([2 * used_slot, 2 * np.arange(len(event_triples_)) + 1])
    merged = np.concatenate([used, event_triples_])[np.argsort(keys, kind="stable")]
    return _flat(merged), _flat(control_triples[~consumed])


def clip(tokens, start, end, clip_duration: bool = True, seconds: bool = True) -> np.ndarray:
    """Keep triples whose time lies in [start, end]; cut durations that run past ``end``."""
    if seconds:
        start = int(TIME_RESOLUTION * start)
        end = int(TIME_RESOLUTION * end)
    triples = as_triples(tokens).copy()
    is_control = triples[:, 2] >= CONTROL_OFFSET
    times = triples[:, 0] - np.where(is_control, ATIME_OFFSET, TIME_OFFSET)
    durations = triples[:, 1] - np.where(is_control, ADUR_OFFSET, DUR_OFFSET)
    keep = (times >= start) & (times <= end)
    if clip_duration:
        overrun = times + durations - end
        triples[:, 1] -= np.where(keep & (overrun > 0), overrun, 0)
    return _flat(triples[keep])


def translate(tokens, dt, seconds: bool = False) -> np.ndarray:
    """Shift times by ``dt`` up to the first SEPARATOR (later pieces keep their own clock).

    Raises TimeOverflowError when a shifted time falls outside [0, 100 s).
    """
    if seconds:
        dt = int(TIME_RESOLUTION * dt)
    triples = as_triples(tokens).copy()
    notes = triples[:, 2]
    is_separator = notes == SEPARATOR
    after_first_separator = np.cumsum(is_separator) > 0
    shift = np.where(after_first_separator, 0, dt)
    times = _times(triples)[~is_separator] + shift[~is_separator]
    if times.size and (times.min() < 0 or times.max() >= MAX_TIME):
        bad = int(times.min() if times.min() < 0 else times.max())
        raise TimeOverflowError(f"time {bad} ticks is outside the vocabulary's 0..{MAX_TIME - 1}")
    triples[~is_separator, 0] += shift[~is_separator]
    return _flat(triples)


# -- control builders (the reference's tokenize.py) ---------------------------------------------
def _as_controls(triples: np.ndarray) -> np.ndarray:
    return _flat(triples + CONTROL_OFFSET)


def _check_events(triples: np.ndarray) -> None:
    if np.any(triples[:, 2] >= REST):
        raise TokenizerError("control builders take plain events (no RESTs, controls or separators)")


def extract_instruments(all_events, instruments: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Notes of the chosen instruments become controls; the rest stay events."""
    triples = as_triples(all_events)
    _check_events(triples)
    chosen = np.isin(instrument_of(triples[:, 2]), np.asarray(list(instruments), np.int64))
    return _flat(triples[~chosen]), _as_controls(triples[chosen])


def extract_random(all_events, probability: float, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Each note becomes a control with ``probability`` (one uniform draw per note, in order).

    The reference's rate r corresponds to probability r/10.
    """
    triples = as_triples(all_events)
    _check_events(triples)
    chosen = rng.random_sample(len(triples)) < probability
    return _flat(triples[~chosen]), _as_controls(triples[chosen])


def extract_spans(all_events, rate: float, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Spans of DELTA seconds become controls; the waits between spans are exponential (mean 1/rate s).

    The reference's state machine: the sequence starts inside a span ending at time 0; when a span
    ends at an event, the next one starts at that event's time + int(100 * Exp(1/rate)).
    """
    triples = as_triples(all_events)
    _check_events(triples)
    times = triples[:, 0] - TIME_OFFSET
    in_span = np.zeros(len(triples), bool)
    position, span_end = 0, 0
    while position < len(triples):
        # inside a span: events until the first one at or after span_end
        stop = position + int(np.searchsorted(times[position:], span_end, side="left"))
        in_span[position:stop] = True
        if stop >= len(triples):
            break
        next_span = int(times[stop]) + int(TIME_RESOLUTION * rng.exponential(1.0 / rate))
        start = stop + int(np.searchsorted(times[stop:], next_span, side="left"))
        if start >= len(triples):
            break
        span_end = int(times[start]) + DELTA * TIME_RESOLUTION
        position = start
    return _flat(triples[~in_span]), _as_controls(triples[in_span])


def parse_controls(spec: str | None) -> tuple[str, object] | None:
    """Parse a controls spec: None, ``"instruments:0,33"``, ``"span:0.05"`` or ``"random:0.3"``.

    Returns (kind, argument): ("instruments", tuple of ints), ("span", rate) or ("random", p).
    """
    if spec is None or spec == "" or spec == "none":
        return None
    kind, _, argument = str(spec).partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "instruments":
            values = tuple(int(v) for v in argument.split(",") if v.strip())
            if not values or any(not 0 <= v < MAX_INSTR for v in values):
                raise ValueError
            return kind, values
        if kind == "span":
            rate = float(argument) if argument.strip() else SPAN_RATE
            if not rate > 0:
                raise ValueError
            return kind, rate
        if kind == "random":
            probability = float(argument)
            if not 0.0 <= probability <= 1.0:
                raise ValueError
            return kind, probability
    except ValueError:
        pass
    raise TokenizerError(f"bad controls {spec!r}: use 'instruments:P,Q' (programs 0-127, drums 128), "
                         "'span:RATE' (RATE > 0 spans per second) or 'random:P' (0 <= P <= 1)")


def extract_controls(all_events, spec: str | None,
                     rng: np.random.RandomState | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split plain events into (events, controls) as a controls spec says; ``rng`` is a
    RandomState or a seed for one (made only for span and random controls: it is not cheap)."""
    parsed = parse_controls(spec)
    if parsed is None:
        return _flat(as_triples(all_events)), np.zeros(0, np.int64)
    kind, argument = parsed
    if kind == "instruments":
        return extract_instruments(all_events, argument)
    if not isinstance(rng, np.random.RandomState):
        rng = np.random.RandomState(rng)
    if kind == "span":
        return extract_spans(all_events, argument, rng)
    return extract_random(all_events, argument, rng)


def interleave(all_events, events, controls) -> np.ndarray:
    """pad(events, max_time(all_events)) then anticipate(events, controls), as the reference builds
    a piece; controls that anticipate() leaves unconsumed (possible only in tiny pieces, where the
    reference's tokenize would fail an assertion) are appended at the end, so nothing is lost."""
    padded = pad(events, max_time(all_events, seconds=False))
    tokens, leftover = anticipate(padded, controls)
    return np.concatenate([tokens, leftover]) if leftover.size else tokens


# -- training sequences (the reference's tokenize.py) ------------------------------------------
def reject_reason(events) -> str | None:
    """Why the reference's preprocessing would skip a piece (too few notes, too short or long,
    more than 16 instruments), or None when it keeps it."""
    triples = as_triples(unpad(events))
    if len(triples) < MIN_TRACK_EVENTS:
        return f"fewer than {MIN_TRACK_EVENTS} notes"
    end = max_time(triples, seconds=False)
    if end < TIME_RESOLUTION * MIN_TRACK_TIME_IN_SECONDS:
        return f"shorter than {MIN_TRACK_TIME_IN_SECONDS} s"
    if end > TIME_RESOLUTION * MAX_TRACK_TIME_IN_SECONDS:
        return f"longer than {MAX_TRACK_TIME_IN_SECONDS} s"
    if len(get_instruments(triples)) > MAX_TRACK_INSTR:
        return f"more than {MAX_TRACK_INSTR} instruments"
    return None


def relativize(chunk) -> np.ndarray:
    """Shift a chunk's times so its earliest time (before any SEPARATOR) is 0.

    Raises TimeOverflowError when the chunk spans more than the vocabulary's 100 s.
    """
    return translate(chunk, -min_time(chunk, seconds=False))


def pack_training_sequences(streams: Iterable[tuple[np.ndarray, int]],
                            context_size: int = CONTEXT_SIZE) -> tuple[np.ndarray, int]:
    """Cut (tokens, flag) streams into training sequences as the reference does.

    Each stream gets three SEPARATOR tokens in front and joins one long token stream, which is cut
    into chunks of ``context_size - 1`` tokens; each chunk is relativized in time and gets a flag
    in front. The flag is that of the stream being read when the previous sequence was written
    (or when the buffer was empty), exactly the reference's bookkeeping. Chunks that span more than
    100 s are dropped. Returns (sequences of shape (n, context_size), number dropped).
    """
    if context_size < 4 or (context_size - 1) % EVENT_SIZE:
        raise TokenizerError(f"context_size must be 1 + 3k (k >= 1); got {context_size}")
    body = context_size - 1
    separators = np.full(3, SEPARATOR, np.int64)
    pending = np.zeros(0, np.int64)
    sequences: list[np.ndarray] = []
    dropped = 0
    flag = AUTOREGRESS
    for tokens, stream_flag in streams:
        if pending.size == 0:
            flag = stream_flag
        pending = np.concatenate([pending, separators, np.asarray(tokens, np.int64).ravel()])
        chunks = pending.size // body
        for c in range(chunks):
            chunk = pending[c * body:(c + 1) * body]
            try:
                chunk = relativize(chunk)
            except TimeOverflowError:
                dropped += 1
                continue
            sequences.append(np.concatenate([[flag], chunk]))
            flag = stream_flag
        pending = pending[chunks * body:]
    if not sequences:
        return np.zeros((0, context_size), np.int64), dropped
    return np.stack(sequences).astype(np.int64), dropped


def augmented_streams(pieces: Iterable, augment_factor: int = 1, seed: int = 0):
    """Yield (tokens, flag) per piece and augmentation k, drawing random numbers as the reference.

    k % 10 == 0: no controls (AUTOREGRESS); 1: spans at rate 0.05; 2-5: random controls with a rate
    r drawn from 1..9; 6-9: a random proper subset of the instruments (no controls when the piece
    has one instrument). Every other k is flagged ANTICIPATE.
    """
    rng = np.random.RandomState(seed)
    for piece in pieces:
        all_events = unpad(piece)
        triples = as_triples(all_events)
        if np.any(triples[:, 2] >= CONTROL_OFFSET):
            raise TokenizerError("training_sequences() takes plain events per piece, not controls or separators")
        instruments = list(get_instruments(all_events))
        for k in range(augment_factor):
            mode = k % 10
            controls = np.zeros(0, np.int64)
            events = all_events
            if mode == 1:
                events, controls = extract_spans(all_events, SPAN_RATE, rng)
            elif 1 < mode < 6:
                rate = rng.randint(1, ANTICIPATION_RATES)
                events, controls = extract_random(all_events, rate / float(ANTICIPATION_RATES), rng)
            elif mode >= 6 and len(instruments) > 1:
                count = 1 + rng.randint(len(instruments) - 1)
                subset = rng.choice(instruments, count, replace=False)
                events, controls = extract_instruments(all_events, subset)
            yield interleave(all_events, events, controls), (AUTOREGRESS if mode == 0 else ANTICIPATE)


def training_sequences(pieces: Iterable, augment_factor: int = 1, seed: int = 0,
                       context_size: int = CONTEXT_SIZE) -> np.ndarray:
    """Training sequences (n, 1024) from per-piece event arrays, as the reference's tokenize().

    ``pieces`` are plain event id arrays (RESTs are removed and re-inserted); with the default
    ``augment_factor=1`` every piece is used once without controls. The caller filters pieces
    (see reject_reason) and orders them.
    """
    sequences, _ = pack_training_sequences(augmented_streams(pieces, augment_factor, seed), context_size)
    return sequences
