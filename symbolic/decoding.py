"""The one autoregressive loop of cadenza: every model that decodes samples through :func:`decode`.

A *decoder* is a model being read one id at a time (a Music Transformer over a prompt, the
anticipatory window over a piece, the transcriber's decoder over an encoded segment): it gives
the logits of the next id of each live row, takes the ids chosen, and can drop rows. Everything
that shapes the choice is a *logits processor* in the manner of Hugging Face's
``LogitsProcessor``: a callable ``(state, logits) -> logits`` over the live rows (a grammar's
mask, an id range, a time floor, temperature, top-k, top-p). A processor may also ``observe``
the chosen ids and say which rows stop (and whether the id that stopped them is kept). The
sampler draws one id per row: the argmax when greedy, otherwise the draw ``torch.multinomial``
makes (``argmax p / q`` with ``q ~ Exp(1)``), with the noise drawn for the whole batch, so a
row's ids do not depend on which other rows are still running.

Rows stop independently: a finished row leaves the batch and the cache at once, so it costs
nothing more and the batch never waits for it. :class:`Budget` bounds every row in ids and in
wall time; a row that hits it is stopped and reported in one line.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# the key/value cache
# --------------------------------------------------------------------------------------------
class KVCache:
    """Preallocated keys and values of every layer for incremental decoding.

    ``length`` counts the positions already processed; a model writes each layer's new keys and
    values with ``append(layer, k, v)`` at ``length ..`` and then moves ``length`` on (the Music
    Transformer and the transcriber's decoder both use it). ``select(rows)`` keeps only some
    batch rows, as when samples finish early.

    ``window`` (None: unbounded) is how many positions a new query may attend to, itself
    included: a model trained on crops of ``window`` ids then sees, however long it samples,
    no more history than it was trained with (relative attention depends only on distances, so a
    sliding window is exact for it; see ``SelfAttention``).
    """

    def __init__(self, layers: int, batch: int, heads: int, head_dim: int, capacity: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 window: int | None = None):
        if window is not None and window < 1:
            raise ValueError(f"an attention window holds at least one position, got {window}")
        shape = (batch, heads, capacity, head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.capacity = capacity
        self.window = window
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v of new positions for one layer; return all keys and values so far."""
        start, stop = self.length, self.length + k.shape[2]
        if stop > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; {stop} requested")
        self.keys[layer][:, :, start:stop] = k
        self.values[layer][:, :, start:stop] = v
        return self.keys[layer][:, :, :stop], self.values[layer][:, :, :stop]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (e.g. when some samples finish early)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


# --------------------------------------------------------------------------------------------
# state, processors, sampler
# --------------------------------------------------------------------------------------------
@dataclass
class StepState:
    """Where the loop stands: ``rows`` are the original batch rows still live, ``step`` the ids
    chosen so far (per row: every live row has taken the same number of steps)."""

    batch: int
    rows: torch.Tensor
    step: int = 0


@dataclass
class Verdict:
    """What a processor's ``observe`` says about the ids just chosen (bool per live row)."""

    stop: torch.Tensor
    drop: torch.Tensor | None = None      # the id that stopped the row is not part of it


class LogitsProcessor(Protocol):
    def __call__(self, state: StepState, logits: torch.Tensor) -> torch.Tensor: ...


class AddBias:
    """Add a fixed (vocab,) bias to every row's logits (a soft preference, such as a key)."""

    def __init__(self, bias: torch.Tensor):
        self.bias = bias

    def __call__(self, state: StepState | None, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.bias.to(logits.dtype)


class Temperature:
    """Divide the logits by ``temperature`` (in float32)."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, state: StepState | None, logits: torch.Tensor) -> torch.Tensor:
        return logits.float() / max(self.temperature, 1e-8)


class TopK:
    """Keep the ``k`` most likely ids of each row."""

    def __init__(self, k: int | None):
        self.k = k

    def __call__(self, state: StepState | None, logits: torch.Tensor) -> torch.Tensor:
        if self.k is None or not 0 < self.k < logits.shape[-1]:
            return logits
        kth = torch.topk(logits, self.k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, NEG_INF)


class TopP:
    """Nucleus sampling: keep the most likely ids until they hold ``p`` of the mass (the most
    likely id always survives). ``keep`` (vocab,) bool marks ids the cut never removes (they
    still count towards the mass)."""

    def __init__(self, p: float | None, keep: torch.Tensor | None = None):
        self.p = p
        self.keep = keep

    def __call__(self, state: StepState | None, logits: torch.Tensor) -> torch.Tensor:
        if self.p is None or not 0.0 < self.p < 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop an id when the ids before it already hold p of the mass.
        drop_sorted = (probs.cumsum(-1) - probs) >= self.p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        if self.keep is not None:
            drop &= ~self.keep.to(drop.device)
        return logits.masked_fill(drop, NEG_INF)


def sampling_processors(temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, top_p_keep: torch.Tensor | None = None) -> list:
    """Temperature, top-k and top-p (sparing the ids of ``top_p_keep``), in that order; none
    when greedy (temperature 0)."""
    if temperature == 0:
        return []
    return [Temperature(temperature), TopK(top_k), TopP(top_p, top_p_keep)]


def nucleus_keep(tokenizer, constraints) -> torch.Tensor | None:
    """The ids top-p spares under ``constraints`` (``timing_outside_nucleus``): the scheme's
    timing ids, or None."""
    if constraints is None or not constraints.timing_outside_nucleus:
        return None
    mask = tokenizer.timing_ids()
    return torch.from_numpy(mask) if mask.any() else None


class AllowedIds:
    """Only the ids of a fixed (vocab,) bool mask may be chosen."""

    def __init__(self, allowed: torch.Tensor):
        self.allowed = allowed

    def __call__(self, state: StepState, logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~self.allowed.to(logits.device), NEG_INF)


class GrammarMask:
    """A scheme's grammar as a processor: the ids it allows for each row, and the rows it ends.

    The grammar follows the whole batch; rows that left the loop are marked finished in it, so
    it never reads the fill id."""

    def __init__(self, grammar, fill_id: int):
        self.grammar = grammar
        self.fill_id = fill_id

    def __call__(self, state: StepState, logits: torch.Tensor) -> torch.Tensor:
        rows = state.rows.to(logits.device)
        allowed = torch.as_tensor(self.grammar.allowed(), device=logits.device)
        penalties = self.grammar.penalties()
        if penalties is not None:
            logits = logits - torch.as_tensor(penalties, device=logits.device)[rows].to(logits.dtype)
        return logits.masked_fill(~allowed[rows], NEG_INF)

    def observe(self, state: StepState, ids: torch.Tensor) -> Verdict:
        full = torch.full((state.batch,), self.fill_id, dtype=torch.long)
        full[state.rows.cpu()] = ids.cpu()
        dropped = torch.as_tensor(self.grammar.advance(full.numpy()), dtype=torch.bool)
        finished = torch.as_tensor(self.grammar.finished.copy(), dtype=torch.bool)
        rows = state.rows.cpu()
        return Verdict(finished[rows].to(ids.device), dropped[rows].to(ids.device))

    def release(self, rows: torch.Tensor) -> None:
        """Rows that stopped for another reason (a budget) are finished for the grammar too."""
        self.grammar.finished[rows.cpu().numpy()] = True


class StopAt:
    """Stop a row after it chooses ``eos_id`` (kept, or dropped with ``keep=False``)."""

    def __init__(self, eos_id: int, keep: bool = True):
        self.eos_id, self.keep = eos_id, keep

    def __call__(self, state: StepState, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def observe(self, state: StepState, ids: torch.Tensor) -> Verdict:
        hit = ids == self.eos_id
        return Verdict(hit, None if self.keep else hit)


class Sampler:
    """One id per live row: greedy, or ``torch.multinomial``'s own draw on the whole batch.

    ``torch.multinomial(probs, 1)`` picks ``argmax(probs / q)`` with ``q ~ Exp(1)`` drawn in the
    shape of ``probs``; drawing ``q`` for every row of the original batch and using the live
    rows' keeps each row's ids what they were when every row was sampled to the end."""

    def __init__(self, batch: int, seed: int | None, device, greedy: bool = False):
        self.batch, self.greedy = batch, greedy
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))

    def __call__(self, state: StepState, logits: torch.Tensor) -> torch.Tensor:
        if self.greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits, -1)
        noise = torch.empty((self.batch, probs.shape[-1]), dtype=probs.dtype, device=probs.device)
        noise.exponential_(1, generator=self.generator)
        return (probs / noise[state.rows.to(probs.device)]).argmax(-1)


# --------------------------------------------------------------------------------------------
# budgets
# --------------------------------------------------------------------------------------------
@dataclass
class Budget:
    """The most ids and wall-clock seconds one sample may take (None: no bound). The clock starts
    at the first step and runs on across calls that share the budget (the windows of one long
    accompaniment). A row that reaches either bound stops and is reported in one line
    (``report``: a callable taking the line; None writes it to stderr)."""

    tokens: int | None = None
    seconds: float | None = None
    report: Callable[[str], None] | None = None
    began: float | None = None
    hit: list = field(default_factory=list)   # (row, "tokens" | "seconds") of each row that hit it

    def start(self) -> None:
        if self.began is None:
            self.began = time.perf_counter()

    def out_of_time(self) -> bool:
        return self.seconds is not None and self.began is not None and \
            time.perf_counter() - self.began >= self.seconds

    def say(self, line: str) -> None:
        (self.report or (lambda text: print(text, file=sys.stderr)))(line)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
class Decoder(Protocol):
    """A model being read one id at a time, for the live rows of a batch."""

    def logits(self, state: StepState) -> torch.Tensor: ...          # (live, vocab), next id
    def feed(self, state: StepState, ids: torch.Tensor) -> None: ...  # the ids chosen
    def select(self, keep: torch.Tensor) -> None: ...                 # keep these live rows


@dataclass
class Decoded:
    """Ids chosen per original row ((batch, steps), ``fill_id`` after a row stopped), how many
    of them each row kept, and which rows hit the budget."""

    ids: torch.Tensor
    lengths: torch.Tensor
    budget_hit: torch.Tensor


def decode(decoder: Decoder, processors: list, sampler: Sampler, *, batch: int, max_steps: int,
           fill_id: int = 0, stopped: torch.Tensor | None = None, budget: Budget | None = None,
           device=None, progress=None, what: str = "sample") -> Decoded:
    """Run the loop: at each step the decoder's logits pass through ``processors``, ``sampler``
    picks an id per live row, processors that observe may stop rows; stopped rows leave the
    batch (``decoder.select``). Ends after ``max_steps`` (or ``budget.tokens``) or when no row
    is left. ``stopped`` marks rows that are done before the first step; ``progress`` is a
    tqdm-like bar (updated by one per step); ``what`` names a row in budget reports."""
    device = device or torch.device("cpu")
    if budget is not None and budget.tokens is not None:
        max_steps = min(max_steps, budget.tokens)
    ids = torch.full((batch, max_steps), fill_id, dtype=torch.long, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    budget_hit = torch.zeros(batch, dtype=torch.bool, device=device)
    state = StepState(batch, torch.arange(batch, device=device))
    observers = [p for p in processors if hasattr(p, "observe")]
    if stopped is not None and bool(stopped.any()):
        _leave(decoder, state, processors, ~stopped.to(device))
    if budget is not None:
        budget.start()
    for step in range(max_steps):
        if len(state.rows) == 0:
            break
        logits = decoder.logits(state)
        for processor in processors:
            logits = processor(state, logits)
        chosen = sampler(state, logits)
        stop = torch.zeros(len(chosen), dtype=torch.bool, device=chosen.device)
        drop = torch.zeros_like(stop)
        for processor in observers:
            verdict = processor.observe(state, chosen)
            stop |= verdict.stop
            if verdict.drop is not None:
                drop |= verdict.drop
        ids[state.rows, step] = torch.where(drop, torch.full_like(chosen, fill_id), chosen)
        lengths[state.rows] += (~drop).long()
        state.step = step + 1
        if progress is not None:
            progress.update(1)
        if budget is not None:
            stop |= _over_budget(budget, state, stop, budget_hit, max_steps, what)
        if bool(stop.all()) or state.step == max_steps:
            break
        if bool(stop.any()):
            keep = ~stop
            _leave(decoder, state, processors, keep)
            chosen = chosen[keep]
        decoder.feed(state, chosen)
    return Decoded(ids[:, :state.step], lengths, budget_hit)


def _leave(decoder, state: StepState, processors, keep: torch.Tensor) -> None:
    """Drop the live rows where ``keep`` is False from the decoder, the processors and the state."""
    gone = state.rows[~keep]
    for processor in processors:
        if hasattr(processor, "release"):
            processor.release(gone)
    decoder.select(keep.nonzero().squeeze(1))
    state.rows = state.rows[keep]


def _over_budget(budget: Budget, state: StepState, stop, budget_hit, max_steps: int, what: str) -> torch.Tensor:
    """Rows still running when the budget is spent: reported, and stopped."""
    if budget.tokens is not None and state.step >= max_steps:
        kind, limit = "tokens", f"{max_steps} ids"
    elif budget.out_of_time():
        kind, limit = "seconds", f"{budget.seconds:g} s"
    else:
        return torch.zeros_like(stop)
    over = ~stop
    for row in state.rows[over].tolist():
        budget_hit[row] = True
        budget.hit.append((row, kind))
        budget.say(f"{what} {row + 1} hit its budget of {limit} after {state.step} ids and was cut there")
    return over


# --------------------------------------------------------------------------------------------
# decoders
# --------------------------------------------------------------------------------------------
class LanguageModelDecoder:
    """A decoder-only model over a batch of prompts (batch, T): the Music Transformer's face,
    ``model(ids, cache=, last_only=)`` and ``model.new_cache(batch, capacity)``.

    The prompt is read in chunks (memory O(chunk * T)); ``use_cache=False`` recomputes the whole
    prefix at every step instead (the same ids, much slower; kept for checks and benchmarks).
    A model with output groups (``model.next_group``) computes only the logits of the group the
    next id belongs to; the others come back -inf (the same distribution as the full softmax
    masked to that group)."""

    def __init__(self, model, prompt: torch.Tensor, capacity: int, use_cache: bool = True,
                 window: int | None = None):
        self.model = model
        self.sequence = prompt
        self.cache = model.new_cache(prompt.shape[0], capacity, window=window) if use_cache else None
        self.next_logits = None
        if self.cache is not None:
            chunk = getattr(model.config, "chunk_size", 512)
            for start in range(0, prompt.shape[1], chunk):
                self.next_logits = model(prompt[:, start:start + chunk], cache=self.cache, last_only=True,
                                         **self._restricted(prompt[:, :start + chunk]))[0][:, -1]

    def _restricted(self, sequence: torch.Tensor) -> dict:
        """``next_group=`` for the id after ``sequence`` (batch, 1); nothing for a model without groups."""
        next_group = getattr(self.model, "next_group", None)
        groups = next_group(sequence) if next_group is not None else None
        return {"next_group": groups[:, -1:]} if groups is not None else {}

    def logits(self, state: StepState) -> torch.Tensor:
        if self.cache is None:
            return self.model(self.sequence, last_only=True, **self._restricted(self.sequence))[0][:, -1]
        return self.next_logits

    def feed(self, state: StepState, ids: torch.Tensor) -> None:
        self.sequence = torch.cat([self.sequence, ids[:, None]], 1)
        if self.cache is not None:
            self.next_logits = self.model(ids[:, None], cache=self.cache, last_only=True,
                                          **self._restricted(self.sequence))[0][:, -1]

    def select(self, keep: torch.Tensor) -> None:
        self.sequence = self.sequence[keep]
        if self.cache is not None:
            self.cache.select(keep)
            self.next_logits = self.next_logits[keep]
