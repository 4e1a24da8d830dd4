"""Sampling from a Music Transformer: KV cache, temperature, top-k, top-p, grammar masks.

``generate`` works on id tensors; ``continue_score`` turns a prompt Score into N continuations
(each the prompt followed by new music) of a length in tokens, seconds or bars.
"""

from __future__ import annotations

import numpy as np
import torch

from cadenza.data.errors import CadenzaError

from .grammar import Grammar, grammar_for


def filter_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Logits (batch, vocab) after temperature, top-k and nucleus (top-p) filtering; filtered
    entries are -inf. The most likely id always survives."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Drop an id when the ids before it already hold top_p of the mass.
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(model, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             grammar: Grammar | None = None, use_cache: bool = True, eos_id: int | None = None) -> torch.Tensor:
    """Sample up to ``max_new_tokens`` ids after ``prompt`` (batch, T); returns (batch, T + new).

    ``temperature=0`` is greedy. With a grammar, only ids it allows are sampled and a row stops
    at the grammar's length limit; with ``eos_id`` a row stops after EOS. Stopped rows are
    filled with PAD (the grammar's, else ``eos_id``). ``use_cache=False`` recomputes the whole
    prefix at every step (the same samples, much slower; kept for checks and benchmarks).
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
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    fill_id = grammar.tokenizer.pad_id if grammar is not None else eos_id
    if grammar is not None:
        grammar.reset(prompt.cpu().numpy())
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    if grammar is not None:
        stopped |= torch.from_numpy(grammar.finished.copy()).to(device)

    sequence = torch.empty(batch, prompt_length + max_new_tokens, dtype=torch.long, device=device)
    sequence[:, :prompt_length] = prompt
    length = prompt_length
    cache = model.new_cache(batch, prompt_length + max_new_tokens) if use_cache else None
    if cache is not None:
        chunk = getattr(model.config, "chunk_size", 512)
        for start in range(0, prompt_length, chunk):       # prefill in chunks: memory O(chunk * T)
            logits = model(prompt[:, start:start + chunk], cache=cache, last_only=True)[0][:, -1]
    for _ in range(max_new_tokens):
        if bool(stopped.all()):
            break
        if cache is None:
            logits = model(sequence[:, :length], last_only=True)[0][:, -1]
        if grammar is not None:
            logits = logits.masked_fill(~grammar.allowed(device), float("-inf"))
        if temperature == 0:
            next_ids = logits.argmax(-1)
        else:
            probs = torch.softmax(filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p), -1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if grammar is not None:
            dropped = torch.from_numpy(grammar.advance(next_ids.cpu().numpy())).to(device)
            next_ids = torch.where(stopped | dropped, torch.full_like(next_ids, fill_id), next_ids)
            stopped |= torch.from_numpy(grammar.finished.copy()).to(device)
        elif fill_id is not None:
            next_ids = torch.where(stopped, torch.full_like(next_ids, fill_id), next_ids)
            if eos_id is not None:
                stopped |= next_ids == eos_id
        sequence[:, length] = next_ids
        length += 1
        if cache is not None and length < sequence.shape[1]:
            logits = model(next_ids[:, None], cache=cache, last_only=True)[0][:, -1]
    model.train(was_training)
    return sequence[:, :length]


def prompt_ids(tokenizer, score) -> np.ndarray:
    """The ids a model sees for a prompt Score: the scheme's start marks, then the piece."""
    from cadenza.data.datasets import piece_frame

    if getattr(tokenizer, "name", "") == "anticipatory":
        ids = tokenizer.encode(score, controls=None)
    else:
        ids = tokenizer.encode(score)
    start, _ = piece_frame(tokenizer)
    return np.concatenate([np.asarray(start, np.int64), np.asarray(ids, np.int64)])


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
    grammar = grammar_for(tokenizer)
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
