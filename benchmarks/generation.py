"""Generation speed: our KV cache vs recomputing the prefix, and vs HuggingFace GPT-2 with its cache.

All three generate ``--new`` tokens (default 1024) after a ``--prompt``-token prompt (default
256) by plain multinomial sampling (temperature 1, no top-k/top-p, no grammar), batch 1, in
this process, on the same device:

1. our Music Transformer (relative attention) with its KV cache;
2. the same model recomputing the whole prefix at every step (``use_cache=False``). On a CPU a
   full run takes an hour, so by default the recompute cost is measured at ``--recompute-samples``
   prefix lengths spread over the run and integrated (trapezoid rule) over every step; a step's
   cost depends only on its prefix length. ``--full-recompute`` times every step instead;
3. HuggingFace transformers' GPT-2 of the same width, depth, heads, feed-forward size and
   vocabulary, generating with its own cache (``transformers`` is a benchmark extra only);
4. (``--runaway-batch N``) a batch of N rows where all but one stop after 16 ids, against that
   one row alone: finished rows leave the batch and the cache, so the ratio is about 1.

Prints tokens per second of each and the ratios; the last line is the headline.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cadenza.tokenizers.remi import repository_off_the_path


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(model, prompt, new_tokens, device, use_cache=True) -> float:
    from cadenza.symbolic.sampling import generate

    _sync(device)
    start = time.perf_counter()
    out = generate(model, prompt, new_tokens, seed=0, use_cache=use_cache)
    _sync(device)
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return time.perf_counter() - start


@torch.no_grad()
def recompute_step_seconds(model, prefix_length: int, device, repeats: int = 1) -> float:
    """Seconds of one recompute step (a full forward over ``prefix_length`` ids, then sampling)."""
    ids = torch.randint(0, model.config.vocab_size, (1, prefix_length), device=device)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        logits = model(ids, last_only=True)[0][:, -1]
        torch.multinomial(torch.softmax(logits, -1), 1)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


class _StopsEarly:
    """A processor that stops every row but row 0 after ``steps`` ids (row 0 runs on)."""

    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, state, logits):
        return logits

    def observe(self, state, ids):
        from cadenza.symbolic.decoding import Verdict

        return Verdict((state.rows != 0) & (state.step + 1 >= self.steps))


@torch.no_grad()
def time_runaway_batch(model, prompt, new_tokens, batch: int, device) -> float:
    """Seconds for a batch in which every row but one stops after 16 ids and one runs
    ``new_tokens``: with finished rows leaving the batch, about what the one row costs alone."""
    from cadenza.symbolic.decoding import LanguageModelDecoder, Sampler, decode

    rows = prompt.repeat(batch, 1)
    _sync(device)
    start = time.perf_counter()
    decoder = LanguageModelDecoder(model, rows, rows.shape[1] + new_tokens)
    decode(decoder, [_StopsEarly(16)], Sampler(batch, 0, device), batch=batch, max_steps=new_tokens,
           device=device)
    _sync(device)
    return time.perf_counter() - start


def time_hf(hf_model, prompt, new_tokens, device) -> float:
    _sync(device)
    start = time.perf_counter()
    out = hf_model.generate(prompt, do_sample=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            top_k=0, top_p=1.0, temperature=1.0, use_cache=True, pad_token_id=0,
                            attention_mask=torch.ones_like(prompt))
    _sync(device)
    assert out.shape[1] == prompt.shape[1] + new_tokens, out.shape
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--new", type=int, default=1024)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d-ff", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=391, help="vocabulary size (default: the event scheme's)")
    parser.add_argument("--max-relative-position", type=int, default=1024)
    parser.add_argument("--recompute-samples", type=int, default=9)
    parser.add_argument("--full-recompute", action="store_true")
    parser.add_argument("--runaway-batch", type=int, default=8,
                        help="also time a batch of this many rows where all but one stop after 16 ids (0: skip)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for all three (default 1: on a shared 2-core machine more threads thrash)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cadenza.symbolic.device import resolve_device
    from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig

    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = MusicTransformerConfig(vocab_size=args.vocab, n_layer=args.layers, n_head=args.heads,
                                    d_model=args.d_model, d_ff=args.d_ff,
                                    max_relative_position=args.max_relative_position, dropout=0.0)
    model = MusicTransformer(config).to(device).eval()
    prompt = torch.randint(0, args.vocab, (1, args.prompt), device=device)
    total = args.prompt + args.new
    print(f"generating {args.new} tokens after a {args.prompt}-token prompt on {device} "
          f"({torch.get_num_threads()} threads); model: {args.layers} layers, d_model {args.d_model}, "
          f"{args.heads} heads, d_ff {args.d_ff}, vocab {args.vocab}, {model.num_parameters() / 1e6:.1f} M parameters")

    time_ours(model, prompt[:, :32], 16, device)  # warm-up
    cached = time_ours(model, prompt, args.new, device)
    cached_rate = args.new / cached
    print(f"ours, KV cache:          {cached_rate:9.1f} tokens/s ({cached:.1f} s)")

    if args.full_recompute:
        recompute = time_ours(model, prompt, args.new, device, use_cache=False)
        how = "every step timed"
    else:
        lengths = np.linspace(args.prompt, total - 1, args.recompute_samples).round().astype(int)
        recompute_step_seconds(model, 64, device)  # warm-up
        seconds = np.array([recompute_step_seconds(model, int(n), device) for n in lengths])
        steps = np.arange(args.prompt, total)
        recompute = float(np.interp(steps, lengths, seconds).sum())
        how = f"estimated from {len(lengths)} timed steps at prefixes {lengths[0]}..{lengths[-1]}"
    recompute_rate = args.new / recompute
    print(f"ours, recompute prefix:  {recompute_rate:9.1f} tokens/s ({recompute:.1f} s; {how})")

    hf_rate = None
    with repository_off_the_path():
        try:
            import transformers
            from transformers import GPT2Config, GPT2LMHeadModel
        except ImportError as exc:
            print(f"HuggingFace transformers could not be imported ({exc}; pip install transformers): "
                  "GPT-2 comparison skipped")
        else:
            transformers.logging.set_verbosity_error()
            hf_config = GPT2Config(vocab_size=args.vocab, n_positions=max(2048, total), n_embd=args.d_model,
                                   n_layer=args.layers, n_head=args.heads, n_inner=args.d_ff, resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=None)
            hf_model = GPT2LMHeadModel(hf_config).to(device).eval()
            hf_model.generation_config.eos_token_id = None
            time_hf(hf_model, prompt[:, :32], 16, device)  # warm-up
            hf_seconds = time_hf(hf_model, prompt, args.new, device)
            hf_rate = args.new / hf_seconds
            print(f"HF GPT-2 {transformers.__version__}, its cache: {hf_rate:9.1f} tokens/s ({hf_seconds:.1f} s)")

    if args.runaway_batch > 1:
        alone = time_runaway_batch(model, prompt, args.new, 1, device)
        batched = time_runaway_batch(model, prompt, args.new, args.runaway_batch, device)
        print(f"a batch of {args.runaway_batch} where {args.runaway_batch - 1} rows stop after 16 ids: "
              f"{batched:.1f} s against {alone:.1f} s for the long row alone ({batched / alone:.2f}x; finished rows "
              "leave the batch)")
    print(f"KV cache vs recompute: {cached_rate / recompute_rate:.1f}x (target >= 10x)")
    if hf_rate is not None:
        print(f"ours (relative attention, KV cache) vs HF GPT-2 (its cache): {cached_rate / hf_rate:.2f}x (target >= 1.0x)")
    headline = f"KV cache {cached_rate / recompute_rate:.1f}x recompute"
    if hf_rate is not None:
        headline += f"; {cached_rate / hf_rate:.2f}x HF GPT-2 ({cached_rate:.0f} vs {hf_rate:.0f} tokens/s)"
    print(headline)


if __name__ == "__main__":
    main()
