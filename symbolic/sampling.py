"""Sampling from a Music Transformer: KV cache, temperature, top-k, top-p, grammar masks.

``generate`` works on id tensors; ``continue_score`` turns a prompt Score into N continuations
(each the prompt followed by new music) of a length in tokens, seconds or bars.
"""

from __future__ import annotations

import numpy as np
import torch

from cadenza.data.errors import CadenzaError
from cadenza.tokenizers.grammar import Grammar

from .decoding import (Budget, GrammarMask, LanguageModelDecoder, Sampler, StopAt, Temperature, TopK, TopP,
                       decode, sampling_processors)


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
             budget: Budget | None = None, progress=None) -> torch.Tensor:
    """Sample up to ``max_new_tokens`` ids after ``prompt`` (batch, T); returns (batch, T + new).

    ``temperature=0`` is greedy. With a grammar, only ids it allows are sampled and a row stops
    at the grammar's length limit; with ``eos_id`` a row stops after EOS. Stopped rows are
    filled with PAD (the grammar's, else ``eos_id``) and leave the batch, so they cost nothing
    more. ``budget`` bounds each row in ids and wall time (a row that hits it is reported and
    cut). ``use_cache=False`` recomputes the whole prefix at every step (the same samples, much
    slower; kept for checks and benchmarks).
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
    processors += sampling_processors(temperature, top_k, top_p)
    if grammar is None and eos_id is not None:
        processors.append(StopAt(eos_id))
    decoder = LanguageModelDecoder(model, prompt, prompt_length + max_new_tokens, use_cache)
    sampler = Sampler(batch, seed, device, greedy=temperature == 0)
    decoded = decode(decoder, processors, sampler, batch=batch, max_steps=max_new_tokens,
                     fill_id=fill_id if fill_id is not None else 0, stopped=stopped, budget=budget,
                     device=device, progress=progress)
    model.train(was_training)
    return torch.cat([prompt, decoded.ids], 1)


def prompt_ids(tokenizer, score) -> np.ndarray:
    """The ids a model sees for a prompt Score: the scheme's start marks, then the piece."""
    return tokenizer.prompt_ids(score)


def continue_score(model, tokenizer, score, *, tokens: int | None = None, seconds: float | None = None,
                   bars: int | None = None, num_samples: int = 1, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = 0.95, seed: int = 0,
                   max_tokens: int = 8192, use_cache: bool = True) -> list:
    """``num_samples`` continuations of ``score``, each the (tokenized) prompt followed by new
    music: ``tokens`` new ids, ``seconds`` more music, or ``bars`` more bars (REMI), exactly one
    of them. Sampling is grammar-aware, so every continuation decodes. ``max_tokens`` caps the
    new ids of a seconds or bars continuation."""
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
    grammar = tokenizer.grammar()
    grammar.set_limits(tokens=tokens, seconds=seconds, bars=bars)
    ids = prompt_ids(tokenizer, score)
    prompt = torch.as_tensor(ids, dtype=torch.long)[None].repeat(num_samples, 1)
    budget = tokens + 8 if tokens is not None else max_tokens
    out = generate(model, prompt, budget, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                   grammar=grammar, use_cache=use_cache)
    from cadenza.data.context import restore_context  # the prompt's tempo, metre, key and parts

    results = []
    for row in range(num_samples):
        keep = len(ids) + int(grammar.valid_length[row])
        results.append(restore_context(score, tokenizer.decode(out[row, :keep].cpu().numpy())))
    return results
