"""Training throughput: relative attention (Music Transformer) vs absolute attention, same size.

Both models are built from the same preset (``--config``), differing only in ``attention``; each
runs the real training step (bf16 autocast on CUDA, forward, backward, clipping, AdamW) on the
same random batches in this process, alternating rounds so a noisy machine affects both alike.
Prints tokens per second of each and, last, the ratio relative / absolute.

    python benchmarks/training.py --config small --seq-len 512 --batch-size 8 --device auto
"""

from __future__ import annotations

import argparse
import time


def build(attention: str, impl: str, args, vocab_size: int, device):
    import torch

    from cadenza.symbolic.train import TrainSettings, model_config_for
    from cadenza.symbolic.transformer import MusicTransformer

    settings = TrainSettings(out="-", config=args.config, attention=attention, dropout=0.0).resolved()
    config = model_config_for(settings, vocab_size)
    if attention == "relative":
        import dataclasses

        config = dataclasses.replace(config, attention_impl=impl)
    torch.manual_seed(0)
    model = MusicTransformer(config).to(device)
    kwargs = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **kwargs)
    return model, optimizer


def train_steps(model, optimizer, batches, device) -> float:
    """Seconds for one optimizer step per batch."""
    import torch

    from cadenza.symbolic.device import autocast_context

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for inputs, targets in batches:
        with autocast_context(device):
            _, loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--impl", default="chunked", help="relative attention implementation (chunked, skew, naive)")
    parser.add_argument("--vocab-size", type=int, default=391, help="default: the event scheme's")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from cadenza.symbolic.device import resolve_device

    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        ids = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), generator=generator)
        batches.append((ids[:, :-1].to(device), ids[:, 1:].to(device)))
    tokens_per_round = args.steps * args.batch_size * args.seq_len

    runs = {"relative": build("relative", args.impl, args, args.vocab_size, device),
            "absolute": build("absolute", args.impl, args, args.vocab_size, device)}
    params = sum(p.numel() for p in runs["relative"][0].parameters())
    print(f"device {device}, config {args.config} ({params / 1e6:.2f} M parameters), batch {args.batch_size} x "
          f"{args.seq_len} tokens, relative impl {args.impl}")
    for model, optimizer in runs.values():  # warm-up: allocator, kernels, optimizer state
        train_steps(model, optimizer, batches[:2], device)
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, (model, optimizer) in runs.items():
            best[name] = min(best[name], train_steps(model, optimizer, batches, device))
    speed = {name: tokens_per_round / seconds for name, seconds in best.items()}
    for name in runs:
        print(f"{name:9s} attention: {speed[name]:10.0f} tokens/s")
    print(f"relative / absolute training throughput: {speed['relative'] / speed['absolute']:.2f}x")


if __name__ == "__main__":
    main()
