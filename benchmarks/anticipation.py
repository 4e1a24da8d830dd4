"""Infilling and accompaniment quality of an anticipatory model on test-split chorales.

For each of ``--pieces`` test-split Bach chorales (in the corpus's order):

- infill: the notes starting in [``--start``, ``--end``) seconds are removed and regenerated
  from the music around them;
- accompany: the first track (the soprano) is kept as anticipated controls and the other
  parts are generated from 0 s to ``--accompany-seconds``.

Both sample with top-p 0.95, seed = piece index. The figures are the density ratio (generated
notes over the notes the chorale has in the same place: 1.0 is the chorale's own density), the
share of pieces where the model wrote at least half as many notes as the chorale, and the
MusPy statistics (pitch-class entropy, scale consistency, polyphony) of the regenerated span
against the same span of the original, plus generation time; for accompaniment also the
generated notes above the soprano and those a 2nd, tritone or 7th from it
(``cadenza.data.theory.against_melody``), beside the chorale's own lower parts.

    python benchmarks/anticipation.py [--model bach-anticipatory] [--pieces 12]
        [--constraints-off under_melody]

``--constraints-off`` switches named ``SamplingConstraints`` fields off (a before/after of one
constraint on the same seeds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _span(score, start: float, end: float, drop_track: int | None = None):
    """The notes of ``score`` starting in [start, end) seconds (without one track), in ticks,
    where the statistics count beats."""
    span = score.to("second").clip(start, end, clip_end=False)
    if drop_track is not None:
        del span.tracks[drop_track]
    return span.to("tick")


def _constraints_without(names):
    """The default ``SamplingConstraints`` with the named fields switched off."""
    import dataclasses

    from cadenza.tokenizers.grammar import SamplingConstraints

    off, known = SamplingConstraints.off(), {f.name for f in dataclasses.fields(SamplingConstraints)}
    if set(names) - known:
        raise SystemExit(f"unknown constraint(s) {sorted(set(names) - known)}; known: {sorted(known)}")
    return dataclasses.replace(SamplingConstraints(), **{name: getattr(off, name) for name in names})


def _against(generated, score, seconds: float) -> dict:
    """Notes of ``generated`` (all but the soprano, track 0) starting in [0, seconds) against the soprano."""
    from cadenza.data.theory import against_melody

    melody = _span(score, 0.0, seconds)
    del melody.tracks[1:]
    return against_melody(_span(generated, 0.0, seconds), melody)


def main() -> None:
    from cadenza.data.corpora import open_corpus
    from cadenza.data.io import read_score
    from cadenza.data.metrics import music_statistics
    from cadenza.data.theory import span_joins
    from cadenza.symbolic.anticipation_tasks import accompany, infill
    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.registry import DEFAULT_INFILL_MODEL, resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_INFILL_MODEL)
    parser.add_argument("--pieces", type=int, default=12)
    parser.add_argument("--start", type=float, default=4.0)
    parser.add_argument("--end", type=float, default=8.0)
    parser.add_argument("--accompany-seconds", type=float, default=12.0)
    parser.add_argument("--no-join", action="store_true", help="infill without the exit join (ceiling and retries)")
    parser.add_argument("--skip-accompany", action="store_true", help="measure infilling only")
    parser.add_argument("--constraints-off", default="",
                        help="comma-separated SamplingConstraints fields to switch off (e.g. under_melody)")
    args = parser.parse_args()
    constraints = _constraints_without([n for n in args.constraints_off.split(",") if n])

    model, tokenizer, info = load_checkpoint(resolve_model(args.model))
    context = int(info.get("settings", {}).get("seq_len", 1024))
    pieces = open_corpus("bach-chorales").pieces(split="test")[: args.pieces]
    bits = info.get("valid_bits_per_note", info.get("metrics", {}).get("bits_per_note", float("nan")))
    print(f"{args.model}: {info.get('step', '?')} steps, valid {bits:.2f} "
          f"bits/note; {len(pieces)} test chorales; infill {args.start:g}-{args.end:g} s, "
          f"accompany the soprano for {args.accompany_seconds:g} s")
    keys = ("pitch_class_entropy", "scale_consistency", "polyphony")
    rows = {"infill": [], "accompany": []}
    stats = {task: {"generated": [], "original": []} for task in rows}
    seconds = {task: 0.0 for task in rows}
    last = dict(seconds)
    exits = []
    melody = {"generated": [], "original": []}

    def record(task, run, original):
        began = time.perf_counter()
        result = run()
        last[task] = time.perf_counter() - began
        seconds[task] += last[task]
        if task == "infill":
            exits.append(span_joins(result.score, args.start, args.end)["exit"])
        else:
            melody["generated"].append(_against(result.generated, score, args.accompany_seconds))
            melody["original"].append(_against(_span(score, 0.0, args.accompany_seconds, drop_track=0), score,
                                               args.accompany_seconds))
        rows[task].append((result.generated_events, original.note_num()))
        stats[task]["generated"].append(music_statistics(result.generated))
        stats[task]["original"].append(music_statistics(original))

    for i, piece in enumerate(pieces):
        score = read_score(piece.path)
        record("infill", lambda: infill(model, tokenizer, score, args.start, args.end, seed=i, top_p=0.95,
                                        context=context, join=not args.no_join, progress=False,
                                        constraints=constraints),
               _span(score, args.start, args.end))
        if args.skip_accompany:
            print(f"  {piece.id:12s} infill {rows['infill'][-1][0]:3d}/{rows['infill'][-1][1]:3d} notes   "
                  f"exit leap {exits[-1]:g}", flush=True)
            continue
        record("accompany", lambda: accompany(model, tokenizer, score, melody_track=0, end=args.accompany_seconds,
                                              progress=False, constraints=constraints,
                                              seed=i, top_p=0.95, context=context),
               _span(score, 0.0, args.accompany_seconds, drop_track=0))
        print(f"  {piece.id:12s} infill {rows['infill'][-1][0]:3d}/{rows['infill'][-1][1]:3d} notes   "
              f"accompany {rows['accompany'][-1][0]:3d}/{rows['accompany'][-1][1]:3d} notes   "
              f"infill exit leap {exits[-1]:g}   accompany above {melody['generated'][-1]['above']:.0%} "
              f"dissonant {melody['generated'][-1]['dissonant']:.0%}   {last['accompany']:.1f} s",
              flush=True)

    print(f"{'task':10s} {'density':>8s} {'>= half':>8s} {'pc entropy':>19s} {'scale consistency':>19s} "
          f"{'polyphony':>19s} {'s/piece':>8s}")
    for task, pairs in rows.items():
        if not pairs:
            continue
        ratios = np.array([g / max(o, 1) for g, o in pairs])
        generated = {k: np.nanmean([s[k] for s in stats[task]["generated"]]) for k in keys}
        original = {k: np.nanmean([s[k] for s in stats[task]["original"]]) for k in keys}
        cells = " ".join(f"{generated[k]:8.3f} ({original[k]:7.3f})" for k in keys)
        print(f"{task:10s} {ratios.mean():8.2f} {np.mean(ratios >= 0.5):8.2f} {cells} "
              f"{seconds[task] / len(pairs):8.1f}")
    print("(statistics: generated notes, in brackets the chorale's own notes in the same place)")
    if melody["generated"]:
        def pooled(rows, key):
            notes = sum(r["notes"] for r in rows)
            return sum(r[key] * r["notes"] for r in rows if r["notes"]) / notes if notes else float("nan")

        print("accompaniment against the soprano (generated; chorale's own lower parts): notes above "
              f"{pooled(melody['generated'], 'above'):.1%} ({pooled(melody['original'], 'above'):.1%}), "
              f"2nds/7ths/tritones {pooled(melody['generated'], 'dissonant'):.1%} "
              f"({pooled(melody['original'], 'dissonant'):.1%}), pooled over notes")
    joined = sum(1 for leap in exits if leap <= 7)
    print(f"infill join ({'off' if args.no_join else 'on'}): the top voice leaves the span within a fifth "
          f"in {joined} of {len(exits)} pieces (exit leaps {', '.join(f'{leap:g}' for leap in exits)})")


if __name__ == "__main__":
    main()
