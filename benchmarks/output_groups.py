"""Restricted outputs: the anticipatory model's training step and sampling speed with output
groups (each position's softmax over the ids its triple slot allows) against the full
55,031-id softmax, and the Event model's step for comparison.

All models use the ``cpu`` preset (4 layers, width 192) with dropout 0, batch ``--batch-size``
(default 4), crops of ``--seq-len`` (default 256) ids from the training split of bach-chorales;
rounds alternate so a noisy machine affects each alike. Sampling: ``accompany`` of the first
test-split chorale's soprano for ``--accompany-seconds`` (the same seed), timed with and without
groups. Prints seconds per step, ids per second and the ratios; the last line is the headline.

    OMP_NUM_THREADS=1 python benchmarks/output_groups.py [--rounds 3] [--steps 4]
"""

from __future__ import annotations

import argparse
import time


def build(scheme: str, args):
    import torch

    from cadenza.data.datasets import collate, open_pieces, training_dataset
    from cadenza.symbolic.train import TrainSettings, model_config_for
    from cadenza.symbolic.transformer import MusicTransformer
    from cadenza.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(scheme)
    settings = TrainSettings(out="-", config="cpu", dropout=0.0).resolved()
    torch.manual_seed(0)
    model = MusicTransformer(model_config_for(settings, tokenizer.vocab_size))
    model.use_output_groups(tokenizer)
    source = open_pieces(split="train", corpus="bach-chorales", tokenizer=tokenizer, limit=40)
    crops = training_dataset(source, args.seq_len, seed=0)
    batches = [collate([crops[args.batch_size * b + i] for i in range(args.batch_size)]) for b in range(args.steps)]
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4), batches


def step_seconds(model, optimizer, batches, grouped: bool) -> float:
    import torch

    start = time.perf_counter()
    for inputs, targets in batches:
        _, loss = model(inputs, targets, next_group=model.next_group(inputs) if grouped else None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / len(batches)


def sampling_ids_per_second(model, tokenizer, seconds: float, grouped: bool) -> tuple[float, int]:
    """Sampled ids per second of one accompaniment, and the notes it wrote."""
    from cadenza.data.corpora import open_corpus
    from cadenza.data.io import read_score
    from cadenza.symbolic.anticipation_tasks import accompany

    score = read_score(open_corpus("bach-chorales").pieces(split="test")[0].path)
    model.use_output_groups(tokenizer if grouped else None)
    start = time.perf_counter()
    result = accompany(model, tokenizer, score, melody_track=0, end=seconds, seed=0, top_p=0.95, progress=False)
    elapsed = time.perf_counter() - start
    model.use_output_groups(tokenizer)
    return 3 * result.generated_events / elapsed, result.generated_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model", default="bach-anticipatory", help="shipped model for the sampling figure")
    parser.add_argument("--accompany-seconds", type=float, default=12.0)
    parser.add_argument("--no-sampling", action="store_true")
    args = parser.parse_args()

    anticipatory, anticipatory_optimizer, anticipatory_batches = build("anticipatory", args)
    event, event_optimizer, event_batches = build("event", args)
    times = {"full": [], "grouped": [], "event": []}
    for _ in range(args.rounds):
        times["full"].append(step_seconds(anticipatory, anticipatory_optimizer, anticipatory_batches, False))
        times["grouped"].append(step_seconds(anticipatory, anticipatory_optimizer, anticipatory_batches, True))
        times["event"].append(step_seconds(event, event_optimizer, event_batches, False))
    best = {name: min(values) for name, values in times.items()}
    print(f"training step, batch {args.batch_size} x {args.seq_len}, cpu preset (best of {args.rounds} rounds):")
    print(f"  anticipatory, full softmax:   {best['full']:.3f} s  ({best['full'] / best['event']:.2f}x Event)")
    print(f"  anticipatory, output groups:  {best['grouped']:.3f} s  ({best['grouped'] / best['event']:.2f}x Event)")
    print(f"  event:                        {best['event']:.3f} s")
    if not args.no_sampling:
        from cadenza.symbolic.checkpoint import load_checkpoint
        from cadenza.symbolic.registry import resolve_model

        model, tokenizer, _ = load_checkpoint(resolve_model(args.model))
        full_rate, full_notes = sampling_ids_per_second(model, tokenizer, args.accompany_seconds, False)
        grouped_rate, grouped_notes = sampling_ids_per_second(model, tokenizer, args.accompany_seconds, True)
        print(f"accompany {args.accompany_seconds:g} s with {args.model}: full softmax {full_rate:.1f} ids/s "
              f"({full_notes} notes), output groups {grouped_rate:.1f} ids/s ({grouped_notes} notes), "
              f"{grouped_rate / full_rate:.2f}x")
    print(f"output groups: anticipatory step {best['full'] / best['grouped']:.2f}x faster "
          f"({best['grouped'] / best['event']:.2f}x an Event step, was {best['full'] / best['event']:.2f}x)")


if __name__ == "__main__":
    main()
