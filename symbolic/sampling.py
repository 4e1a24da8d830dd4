"""Sampling from a Music Transformer: KV cache, temperature, top-k, top-p, grammar masks.

``generate`` works on id tensors; ``continue_score`` turns a prompt Score into N continuations
(each the prompt followed by new music) of a length in tokens, seconds or bars.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable

import numpy as np
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.tokenizers.grammar import Grammar, SamplingConstraints

from .decoding import (AddBias, nucleus_keep, Budget, GrammarMask, LanguageModelDecoder, Sampler, StopAt, Temperature, TopK,
                       TopP, decode, sampling_processors)

if TYPE_CHECKING:
    from cadenza.tokenizers import Tokenizer

    from .transformer import MusicTransformer

DEFAULT_MAX_SECONDS = 50.0   # wall time one continuation may take (a batch's samples run side by side)


def filter_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Logits (batch, vocab) after temperature, top-k and nucleus (top-p) filtering; filtered
    entries are -inf. The most likely id always survives."""
    for processor in (Temperature(temperature), TopK(top_k), TopP(top_p)):
        logits = processor(None, logits)
    return logits


@torch.no_grad()
def generate(model, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             grammar: Grammar | None = None, use_cache: bool = True, eos_id: int | None = None,
             budget: Budget | None = None, progress=None, window: int | None = None,
             logit_bias: torch.Tensor | None = None, top_p_keep: torch.Tensor | None = None) -> torch.Tensor:
    """Sample up to ``max_new_tokens`` ids after ``prompt`` (batch, T); returns (batch, T + new).

    ``temperature=0`` is greedy. With a grammar, only ids it allows are sampled and a row stops
    at the grammar's length limit; with ``eos_id`` a row stops after EOS. Stopped rows are
    filled with PAD (the grammar's, else ``eos_id``) and leave the batch, so they cost nothing
    more. ``budget`` bounds each row in ids and wall time (a row that hits it is reported and
    cut). ``use_cache=False`` recomputes the whole prefix at every step (the same samples, much
    slower; kept for checks and benchmarks). ``window`` bounds how many positions each sampled
    id attends to (itself included; see ``KVCache``), with the cache only. ``logit_bias``
    (vocab,) is added to the model's logits at every step, before temperature and filtering;
    ``top_p_keep`` (vocab,) bool marks ids the nucleus never cuts (see ``TopP``).
    """
    if prompt.dim() == 1:
        prompt = prompt[None]
    if prompt.shape[1] == 0:
        raise CadenzaError("generation needs a prompt of at least one id (e.g. BOS)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompt = prompt.to(device)
    batch, prompt_length = prompt.shape
    fill_id = grammar.tokenizer.pad_id if grammar is not None else eos_id
    processors, stopped = [], None
    if grammar is not None:
        grammar.reset(prompt.cpu().numpy())
        processors.append(GrammarMask(grammar, fill_id))
        stopped = torch.as_tensor(grammar.finished.copy(), dtype=torch.bool, device=device)
    if logit_bias is not None:
        processors.append(AddBias(logit_bias.to(device)))
    processors += sampling_processors(temperature, top_k, top_p, top_p_keep)
    if grammar is None and eos_id is not None:
        processors.append(StopAt(eos_id))
    decoder = LanguageModelDecoder(model, prompt, prompt_length + max_new_tokens, use_cache, window=window)
    sampler = Sampler(batch, seed, device, greedy=temperature == 0)
    decoded = decode(decoder, processors, sampler, batch=batch, max_steps=max_new_tokens,
                     fill_id=fill_id if fill_id is not None else 0, stopped=stopped, budget=budget,
                     device=device, progress=progress)
    model.train(was_training)
    return torch.cat([prompt, decoded.ids], 1)


def prompt_ids(tokenizer, score) -> np.ndarray:
    """The ids a model sees for a prompt Score: the scheme's start marks, then the piece."""
    return tokenizer.prompt_ids(score)


def continue_score(model: MusicTransformer, tokenizer: Tokenizer, score: symusic.Score, *,
                   tokens: int | None = None, seconds: float | None = None,
                   bars: int | None = None, num_samples: int = 1, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = 0.95, seed: int = 0,
                   max_tokens: int = 8192, use_cache: bool = True, prompt_bars: int | None = None,
                   prompt_seconds: float | None = None, context: int | None = None,
                   max_seconds: float | None = DEFAULT_MAX_SECONDS, progress: bool = True,
                   report: Callable[[str], None] | None = None,
                   constraints: SamplingConstraints | None = None,
                   sliding_window: bool = False) -> list[symusic.Score]:
    """``num_samples`` continuations of ``score``, each the (tokenized) prompt followed by new
    music: ``tokens`` new ids, ``seconds`` more music, or ``bars`` more bars (REMI), exactly one
    of them. Sampling is grammar-aware, so every continuation decodes, and follows the scheme's
    structural ``constraints`` (None: the defaults; ``SamplingConstraints.off()``: none).

    The prompt is the end of ``score`` that fits the model: its last ``prompt_bars`` bars or
    ``prompt_seconds`` seconds when given, and never more than three quarters of ``context``
    ids (default: the model's relative-attention span), cut at a bar line (or, when one bar is
    too long, a note onset); a cut is said in one line. Each sample stops independently; it may
    take ``max_tokens`` new ids and ``max_seconds`` of wall time (None: unbounded), and a sample
    cut by either is reported in one line (``report``, default stderr). ``progress`` shows a
    progress bar on runs longer than a few seconds.

    With ``sliding_window`` (a relative-attention model), each new id attends to the last
    ``context`` ids only, as in the crops the model was trained on; without it (the default), to
    everything sampled so far. On the shipped models' 16 s chorale continuations the window made
    no difference a listener or the benchmark could rely on (docs/generation-quality.md), so it
    is an option, not the default.

    The constraints' ``key_prior`` takes that much off the logits of notes outside the scale of
    the prompt's key (``key_bias``), a soft preference for staying in it."""
    given = [name for name, value in (("tokens", tokens), ("seconds", seconds), ("bars", bars)) if value is not None]
    if len(given) != 1:
        raise CadenzaError("give exactly one continuation length: tokens, seconds or bars")
    if (tokens is not None and tokens < 1) or (seconds is not None and seconds <= 0) or (bars is not None and bars < 1):
        raise CadenzaError("the continuation length must be positive")
    if num_samples < 1:
        raise CadenzaError("num_samples must be at least 1")
    if model.config.vocab_size != tokenizer.vocab_size:
        raise CadenzaError(f"the model has {model.config.vocab_size} ids but the {tokenizer.name} tokenizer "
                           f"{tokenizer.vocab_size}; they do not belong together")
    whole = score
    score, ids, cut_tick = fit_prompt(tokenizer, score, max_ids=prompt_limit(model, context), bars=prompt_bars,
                                      seconds=prompt_seconds, report=report)
    grammar = tokenizer.grammar(constraints)
    grammar.set_limits(tokens=tokens, seconds=seconds, bars=bars)
    grammar.set_prompt(score)
    prompt = torch.as_tensor(ids, dtype=torch.long)[None].repeat(num_samples, 1)
    steps = tokens + 8 if tokens is not None else max_tokens
    budget = Budget(tokens=steps, seconds=max_seconds, report=report)
    with progress_bar(progress, steps if tokens is not None else None, "continue") as bar:
        out = generate(model, prompt, steps, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                       grammar=grammar, use_cache=use_cache, budget=budget, progress=bar,
                       window=trained_context(model, context) if sliding_window else None,
                       logit_bias=key_bias(tokenizer, score, grammar.constraints.key_prior)
                       if grammar.constraints.key_prior else None,
                       top_p_keep=nucleus_keep(tokenizer, grammar.constraints))
    from cadenza.data.context import restore_context  # the prompt's tempo, metre, key and parts

    results = []
    for row in range(num_samples):
        keep = len(ids) + int(grammar.valid_length[row])
        continuation = restore_context(score, tokenizer.decode(out[row, :keep].cpu().numpy()))
        results.append(_after_the_head(whole, score, cut_tick, continuation) if cut_tick else continuation)
    return results


def _after_the_head(whole: symusic.Score, tail: symusic.Score, cut_tick: int,
                    continuation: symusic.Score) -> symusic.Score:
    """The whole prompt followed by a continuation of its ``tail`` (the notes from ``cut_tick``
    on, moved to 0): the notes before the cut, then the continuation moved back to the cut.
    ``continuation`` has one track per ``tail`` track that holds notes, in order (as
    ``restore_context`` makes it), then any tracks of its own."""
    out = whole.clip(0, cut_tick, clip_end=False)
    moved = continuation.shift_time(cut_tick)
    for source, target in ((moved.tempos, out.tempos), (moved.time_signatures, out.time_signatures),
                           (moved.key_signatures, out.key_signatures)):
        for event in source:
            if not any(e.time == event.time for e in target):
                target.append(event)
    parts = [i for i, track in enumerate(tail.tracks) if track.notes]
    for k, track in enumerate(moved.tracks):
        if k < len(parts):
            out.tracks[parts[k]].notes.extend(track.notes)
        else:
            out.tracks.append(track)
    return out


def key_bias(tokenizer, score: symusic.Score, strength: float) -> torch.Tensor | None:
    """(vocab,) logits bias: ``-strength`` on the ids that start a note outside the scale of
    ``score``'s key (``cadenza.data.theory.estimate_key``, Aarden-Essen profile; a minor key's
    scale has its raised sixth and seventh), 0 elsewhere; None for a score without notes."""
    from cadenza.data.theory import pitch_classes_outside_key

    outside_key = pitch_classes_outside_key(score)
    if outside_key is None:
        return None
    pitches = tokenizer.onset_pitches()
    outside = (pitches >= 0) & np.isin(pitches % 12, outside_key)
    return torch.from_numpy(np.where(outside, -float(strength), 0.0).astype(np.float32))


def trained_context(model, context: int | None = None) -> int | None:
    """``context``, else the crop length ``model`` was trained on (``model.trained_context``, set
    when a checkpoint is loaded), else its relative-attention span; None for none of them."""
    context = context or getattr(model, "trained_context", None) or getattr(model.config, "max_relative_position", None)
    return int(context) if context else None


def prompt_limit(model, context: int | None = None) -> int | None:
    """The most prompt ids for ``model``: three quarters of its context (``trained_context``), so
    the continuation has room in it."""
    context = trained_context(model, context)
    return context * 3 // 4 if context else None


def progress_bar(enabled: bool, total: int | None, what: str):
    """A tqdm bar of ids that shows itself only after 3 s (a no-op context when disabled)."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit=" ids", delay=3.0, mininterval=1.0, leave=False, dynamic_ncols=True)


def fit_prompt(tokenizer, score: symusic.Score, *, max_ids: int | None = None, bars: int | None = None,
               seconds: float | None = None, report: Callable[[str], None] | None = None
               ) -> tuple[symusic.Score, np.ndarray, int]:
    """The end of ``score`` a model is prompted with, its ids, and the tick of ``score`` where it
    starts: the last ``bars`` bars or ``seconds`` seconds when given, then as many whole trailing
    bars as fit in ``max_ids`` ids (or, when the last bar alone is too long, the notes from the
    latest onset that fits). Times start again at 0; tempo, metre and key in effect at the cut
    are kept. A cut that ``max_ids`` forces is said in one line (``report``, default stderr)."""
    if bars is not None and bars < 1:
        raise CadenzaError("prompt_bars must be at least 1")
    if seconds is not None and seconds <= 0:
        raise CadenzaError("prompt_seconds must be positive")
    if bars is not None and seconds is not None:
        raise CadenzaError("give the prompt's length in bars or in seconds, not both")
    starts, offset = _bar_starts(score), 0
    if bars is not None and bars < len(starts):
        offset = int(starts[-bars])
    elif seconds is not None:
        offset = _tick_at(score, float(score.to("second").end()) - seconds)
    score = _tail(score, offset)
    ids = prompt_ids(tokenizer, score)
    if max_ids is None or len(ids) <= max_ids:
        return score, ids, offset
    full_length = len(ids)
    starts = _bar_starts(score)
    fitted, kept = None, 0
    for count in range(1, len(starts)):            # whole bars from the end, while they fit
        candidate = _tail(score, int(starts[-count]))
        if candidate.note_num() == 0:              # a bar line after the last onset: no prompt there
            continue
        candidate_ids = prompt_ids(tokenizer, candidate)
        if len(candidate_ids) > max_ids:
            break
        fitted, ids, kept, cut = candidate, candidate_ids, count, int(starts[-count])
    what = f"its last {kept} bar{'s' if kept != 1 else ''}"
    if fitted is None:                             # one bar is too long: whole notes from an onset
        onsets = np.unique(np.concatenate([t.notes.numpy()["time"] for t in score.tracks if t.notes] or [[0]]))
        low, high = 0, len(onsets) - 1             # the earliest onset whose tail fits
        while low < high:
            middle = (low + high) // 2
            if len(prompt_ids(tokenizer, _tail(score, int(onsets[middle])))) <= max_ids:
                high = middle
            else:
                low = middle + 1
        fitted, cut = _tail(score, int(onsets[low])), int(onsets[low])
        ids = prompt_ids(tokenizer, fitted)
        what = f"its last {fitted.note_num()} notes"
    (report or (lambda text: print(text, file=sys.stderr)))(
        f"the prompt ({full_length} ids) is longer than the model's context allows ({max_ids}); "
        f"kept {what} ({len(ids)} ids, {float(fitted.to('second').end()):.1f} s)")
    return fitted, ids, offset + cut


def _bar_starts(score: symusic.Score) -> np.ndarray:
    from cadenza.rendering.pianoroll import bar_starts

    return bar_starts(score)


def _tail(score: symusic.Score, start_tick: int) -> symusic.Score:
    """The notes of ``score`` starting at or after ``start_tick``, moved to start at 0 (with the
    tempo, time and key signatures in effect there)."""
    if start_tick <= 0:
        return score
    return score.clip(start_tick, max(int(score.end()), start_tick) + 1, clip_end=False).shift_time(-start_tick)


def _tick_at(score: symusic.Score, second: float) -> int:
    """The first note onset (in ticks) at or after ``second`` seconds; 0 when there is none."""
    in_seconds = score.to("second")
    pairs = [(float(a.time), int(b.time)) for ts, tt in zip(in_seconds.tracks, score.tracks)
             for a, b in zip(ts.notes, tt.notes)]
    later = [tick for sec, tick in pairs if sec >= second - 1e-9]
    return min(later) if later else 0
