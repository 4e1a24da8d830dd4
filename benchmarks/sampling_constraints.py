"""Structural sampling constraints against none, on shipped models' continuations of chorales.

Each of the first ``--pieces`` test-split Bach chorales gives an opening of 2, 3 or 4 bars
(cycling), which each model continues (``continue_score``, ``--samples`` samples in one batch,
seed = piece index) by 16 s (Event) or 8 bars (REMI), once with ``SamplingConstraints.off()``
and once with the defaults. A sample is broken when its new music (the notes starting after the
opening's last note ends) holds a note longer than 8 beats or sounds more than 8 notes at once
(``cadenza.data.theory.broken_passage`` without its grid criterion, which no constraint
touches). The last line is the headline: broken share without and with constraints, all models.

    OMP_NUM_THREADS=1 python benchmarks/sampling_constraints.py [--models classical-event,bach-remi]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="classical-event,bach-remi")
    parser.add_argument("--pieces", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2)
    args = parser.parse_args()

    import torch

    from cadenza.data.corpora import open_corpus
    from cadenza.data.io import read_score
    from cadenza.data.theory import bar_beats, broken_passage, clip_beats, notes_of
    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.registry import resolve_model
    from cadenza.symbolic.sampling import continue_score
    from cadenza.tokenizers.grammar import SamplingConstraints

    scores = [read_score(p.path) for p in open_corpus("bach-chorales").pieces(split="test")[:args.pieces]]
    openings = [clip_beats(s, 0, (2 + i % 3) * bar_beats(s)) for i, s in enumerate(scores)]
    totals = {"off": [0, 0], "on": [0, 0]}
    print(f"{'model':18s} {'constraints':11s} {'broken':>8s} {'held':>5s} {'stacked':>7s} "
          f"{'longest beats':>13s} {'most sounding':>13s} {'s/run':>6s}")
    for name in args.models.split(","):
        model, tokenizer, _ = load_checkpoint(resolve_model(name))
        length = {"bars": 8} if tokenizer.grammar().has_bars else {"seconds": 16.0}
        for label, constraints in (("off", SamplingConstraints.off()), ("on", SamplingConstraints())):
            rows, seconds = [], 0.0
            for i, opening in enumerate(openings):
                start = float(notes_of(opening).end.max())
                began = time.perf_counter()
                with torch.inference_mode():
                    outs = continue_score(model, tokenizer, opening, num_samples=args.samples, seed=i,
                                          constraints=constraints, **length)
                seconds += time.perf_counter() - began
                rows += [broken_passage(clip_beats(out, start), min_on_grid=0.0) for out in outs]
            broken = sum(r["held"] or r["stacked"] for r in rows)
            totals[label][0] += broken
            totals[label][1] += len(rows)
            print(f"{name:18s} {label:11s} {broken:3d}/{len(rows):<4d} {sum(r['held'] for r in rows):5d} "
                  f"{sum(r['stacked'] for r in rows):7d} {max(r['longest_beats'] for r in rows):13.1f} "
                  f"{max(r['most_sounding'] for r in rows):13d} {seconds / len(openings):6.1f}")
    (off_broken, n), (on_broken, _) = totals["off"], totals["on"]
    print(f"broken (held > 8 beats or > 8 sounding): {off_broken}/{n} = {off_broken / n:.0%} without constraints, "
          f"{on_broken}/{n} = {on_broken / n:.0%} with the defaults")


if __name__ == "__main__":
    main()
