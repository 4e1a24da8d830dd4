"""Music-theory quality of every shipped Music Transformer on test-split chorale openings.

Each test-split Bach chorale gives an opening of 2, 3 or 4 bars (cycling over the pieces) and
the window after it, ``--seconds`` long (16 s: 8 bars of 4/4 at the chorales' 120 qpm; infill and
accompaniment windows are ``--task-seconds``, 8 s, long). Every
shipped continuation model continues each opening (``continue_score``, ``--samples`` samples
in one batch, seed = piece index); the anticipatory model instead

- infills the window, given the opening and the rest of the piece (``infill``), and
- accompanies the soprano through the window, given the opening's other parts (``accompany``),

one run per sample. The new music of the window is scored with ``cadenza.data.theory``, and
the chorales' own windows (Bach: the real next ``--seconds``) are scored the same way:

- broken passage: a note held > 8 beats, > 8 notes sounding at once, or < 80 % of onsets on the
  sixteenth grid (share of samples);
- key kept: music21's key estimate of the window equals the opening's (share of samples);
- parallels: parallel fifths/octaves among four-voice chord changes (pooled over samples);
- cadences: held chords (>= 3 notes held >= 2 beats with no new onset) per 8 bars, and the share
  of them that are root-position major or minor triads (a held dissonance is no cadence);
- density: notes per beat against the opening's;
- for infill: the top voice's leap where the window meets the music after it (within a fifth?);
  for accompaniment: generated notes above the soprano, and 2nds/7ths/tritones against it.

Figures in brackets are 95 % intervals from a bootstrap over the pieces (their samples resampled
together, since they share a prompt): with 16 pieces, a share of samples moves by ten or more
points between draws, so two columns whose intervals overlap widely are not told apart.

Seconds per run is the wall time of one ``continue_score`` call (all samples) or one
infill/accompany call. Outputs go through the library's public functions only, so the
figures follow whatever sampling defaults the library ships.

    OMP_NUM_THREADS=1 python benchmarks/generation_quality.py [--quick] [--models a,b] [--json out.json]
        [--tasks accompany] [--constraints-off under_melody]

``--tasks`` runs only some of continue, infill and accompany (the Bach column is always
scored); ``--constraints-off`` switches named ``SamplingConstraints`` fields off for every run
(a before/after of one constraint on the same seeds). ``--split valid`` scores the valid-split
chorales instead, the place to choose a setting before the test split is run once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np

FIFTH = 7


FAILURES: list[str] = []


def _quiet(function, *args, **kwargs):
    """Call a library function with ``progress=False`` where it takes that option (the sampling
    code grows options; the benchmark passes only what the function accepts). A run that ends
    in a CadenzaError is reported, counted and skipped (None)."""
    import inspect

    from cadenza.data.errors import CadenzaError

    parameters = inspect.signature(function).parameters
    if "progress" in parameters:
        kwargs["progress"] = False
    try:
        return function(*args, **kwargs)
    except CadenzaError as exc:
        FAILURES.append(f"{function.__name__}: {exc}")
        print(f"failed run ({function.__name__}): {exc}", flush=True)
        return None


def _opening_and_window(score, bars: int, seconds: float):
    """(opening, window start in beats, window end in beats) of a chorale."""
    from cadenza.data.theory import bar_beats, clip_beats

    start = bars * bar_beats(score)
    qpm = score.tempos[0].qpm if len(score.tempos) else 120.0
    return clip_beats(score, 0, start), start, start + seconds * qpm / 60


def _seconds(score, beats: float) -> float:
    """Seconds at ``beats`` quarters into ``score``."""
    from cadenza.data.context import ticks_to_seconds

    return float(ticks_to_seconds(score, [beats * score.ticks_per_quarter])[0])


def _window_stats(opening, music, start: float, end: float) -> dict:
    """Statistics of the notes of ``music`` starting in [start, end) beats."""
    from cadenza.data.theory import continuation_statistics

    return continuation_statistics(opening, music, start, end, key_method="music21")


INTERVAL_KEYS = ("broken", "key_kept", "parallels", "cadences")
RESAMPLES = 1000


def _summary(rows: list[dict]) -> dict:
    """The figures of ``rows`` and, for ``INTERVAL_KEYS``, 95 % percentile intervals from a
    bootstrap over pieces (a piece's samples share its prompt, so they are resampled together)."""
    out = _point(rows)
    pieces = sorted({r["piece"] for r in rows if "piece" in r})
    if len(pieces) > 1:
        by_piece = {p: [r for r in rows if r.get("piece") == p] for p in pieces}
        rng = np.random.default_rng(0)
        draws = [_point([r for p in rng.choice(pieces, len(pieces)) for r in by_piece[p]])
                 for _ in range(RESAMPLES)]
        for key in INTERVAL_KEYS:
            values = np.array([d[key] for d in draws], float)
            values = values[~np.isnan(values)]
            if len(values):
                out[key + "_interval"] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return out


def _point(rows: list[dict]) -> dict:
    def mean(key):
        values = np.array([r[key] for r in rows if key in r], float)
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else math.nan

    changes = sum(r.get("changes", 0) for r in rows)
    out = {"samples": len(rows), "broken": mean("broken"), "key_kept": mean("key_kept"),
           "parallels": sum(r.get("with_parallels", 0) for r in rows) / changes if changes else math.nan,
           "cadences": mean("cadences_per_8_bars"), "held_triads": mean("held_triads"), "density": mean("density_ratio"),
           "voices": mean("voice_count"), "crossing": mean("voice_crossing"), "seconds": mean("seconds")}
    if any("exit" in r for r in rows):
        exits = [r["exit"] for r in rows if "exit" in r and not math.isnan(r["exit"])]
        out["exit_within_fifth"] = sum(e <= FIFTH for e in exits) / len(exits) if exits else math.nan
    if any("above" in r for r in rows):
        out["above"], out["dissonant"] = mean("above"), mean("dissonant")
    return out


def _without_track(score, index: int):
    out = score.copy()
    del out.tracks[index]
    return out


def _only_track(score, index: int):
    out = score.copy()
    keep = out.tracks[index]
    out.tracks.clear()
    out.tracks.append(keep)
    return out


def bach_rows(chorales, seconds: float, task_seconds: float) -> dict[str, list[dict]]:
    """The chorales' own windows, scored as continuations (``seconds`` long) and as infills and
    accompaniments (``task_seconds`` long)."""
    from cadenza.data import theory
    from cadenza.data.tunes import soprano_track

    rows = {"continue": [], "infill": [], "accompany": []}
    for index, (score, bars) in enumerate(chorales):
        opening, start, end = _opening_and_window(score, bars, seconds)
        rows["continue"].append({**_window_stats(opening, score, start, end), "piece": index})
        opening, start, end = _opening_and_window(score, bars, task_seconds)
        stats = _window_stats(opening, score, start, end)
        joins = theory.span_joins(score, _seconds(score, start), _seconds(score, end))
        rows["infill"].append({**stats, "exit": joins["exit"], "piece": index})
        soprano = soprano_track(score)
        window = theory.clip_beats(score, start, end)
        rows["accompany"].append({**stats, **theory.against_melody(_without_track(window, soprano),
                                                                   _only_track(window, soprano)), "piece": index})
    return rows


def continuation_rows(model, tokenizer, chorales, seconds: float, samples: int, max_tokens: int,
                      constraints=None, **sampling) -> list[dict]:
    from cadenza.symbolic.sampling import continue_score

    rows = []
    for index, (score, bars) in enumerate(chorales):
        opening, start, end = _opening_and_window(score, bars, seconds)
        began = time.perf_counter()
        outputs = _quiet(continue_score, model, tokenizer, opening, seconds=seconds, num_samples=samples,
                         seed=index, max_tokens=max_tokens, constraints=constraints, **sampling)
        elapsed = time.perf_counter() - began
        for output in outputs or []:
            rows.append({**_window_stats(opening, output, start, end), "seconds": elapsed, "piece": index})
    return rows


def constraints_without(names) -> object | None:
    """The default ``SamplingConstraints`` with the named fields switched off (None: no names)."""
    import dataclasses

    from cadenza.tokenizers.grammar import SamplingConstraints

    if not names:
        return None
    off = SamplingConstraints.off()
    known = {f.name for f in dataclasses.fields(SamplingConstraints)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SystemExit(f"unknown constraint(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(SamplingConstraints(), **{name: getattr(off, name) for name in names})


def anticipation_rows(model, tokenizer, info, chorales, seconds: float, samples: int,
                      tasks=("infill", "accompany"), constraints=None) -> dict[str, list[dict]]:
    from cadenza.data import theory
    from cadenza.data.theory import clip_beats
    from cadenza.data.tunes import soprano_track
    from cadenza.symbolic.anticipation_tasks import accompany, infill

    context = int(info.get("settings", {}).get("seq_len", 1024))
    rows = {"infill": [], "accompany": []}
    for index, (score, bars) in enumerate(chorales):
        opening, start, end = _opening_and_window(score, bars, seconds)
        start_s, end_s = _seconds(score, start), _seconds(score, end)
        piece = clip_beats(score, 0, end + (end - start) / 2)   # what follows the window, for the infill to meet
        soprano = soprano_track(score)
        for sample in range(samples):
            sampling = {"seed": index * samples + sample, "context": context}
            if constraints is not None:
                sampling["constraints"] = constraints
            if "infill" in tasks:
                began = time.perf_counter()
                result = _quiet(infill, model, tokenizer, piece, start_s, end_s, **sampling)
                elapsed = time.perf_counter() - began
            if "infill" in tasks and result is not None:
                joins = theory.span_joins(result.score, start_s, end_s)
                rows["infill"].append({**_window_stats(opening, result.score, start, end), "exit": joins["exit"],
                                       "seconds": elapsed, "piece": index})
            if "accompany" not in tasks:
                continue
            began = time.perf_counter()
            result = _quiet(accompany, model, tokenizer, clip_beats(score, 0, end), melody_track=soprano,
                            prompt_seconds=start_s, end=end_s, **sampling)
            elapsed = time.perf_counter() - began
            if result is None:
                continue
            melody = _only_track(clip_beats(score, start, end), soprano)
            rows["accompany"].append({**_window_stats(opening, result.score, start, end),
                                      **theory.against_melody(clip_beats(result.generated, start, end), melody),
                                      "seconds": elapsed, "piece": index})
    return rows


ROWS = [
    ("samples", "samples", "{:.0f}"),
    ("broken", "samples with a broken passage", "{:.0%}"),
    ("key_kept", "window in the opening's key (music21)", "{:.0%}"),
    ("parallels", "parallel fifths/octaves among four-voice chord changes", "{:.1%}"),
    ("cadences", "held (cadential) chords per 8 bars", "{:.2f}"),
    ("held_triads", "held chords that are root-position triads", "{:.0%}"),
    ("density", "notes per beat against the opening's", "{:.2f}"),
    ("voices", "notes sounding at once (median of each sample, mean)", "{:.2f}"),
    ("crossing", "instants with crossed voices", "{:.1%}"),
    ("exit_within_fifth", "infill: top voice joins the music after within a fifth", "{:.0%}"),
    ("above", "accompaniment: notes above the melody", "{:.0%}"),
    ("dissonant", "accompaniment: 2nds/7ths/tritones against the melody", "{:.0%}"),
    ("seconds", "seconds per run (mean)", "{:.1f}"),
]


def table(columns: dict[str, dict]) -> str:
    names = list(columns)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label, fmt in ROWS:
        if not any(key in columns[n] for n in names):
            continue
        cells = []
        for name in names:
            value = columns[name].get(key)
            cell = "" if value is None else "n/a" if isinstance(value, float) and math.isnan(value) \
                else fmt.format(value)
            interval = columns[name].get(key + "_interval")
            if interval is not None and cell not in ("", "n/a") and interval[0] != interval[1]:
                cell += f" ({fmt.format(interval[0]).rstrip('%')}-{fmt.format(interval[1])})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    import symusic

    from cadenza.data.corpora import open_corpus
    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.registry import list_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 chorales: a minute or two")
    parser.add_argument("--split", default="test", choices=("test", "valid"),
                        help="chorales to score (default test; tune settings on valid, report on test)")
    parser.add_argument("--models", default=None,
                        help="comma-separated shipped model names or checkpoint directories (default: every shipped model)")
    parser.add_argument("--pieces", type=int, default=None, help="test chorales to use (default: all; 4 with --quick)")
    parser.add_argument("--samples", type=int, default=4, help="samples (or runs) per opening (default 4)")
    parser.add_argument("--seconds", type=float, default=16.0, help="continuation window (default 16 s)")
    parser.add_argument("--task-seconds", type=float, default=8.0,
                        help="infill and accompaniment window (default 8 s: the anticipatory model is the slowest)")
    parser.add_argument("--max-tokens", type=int, default=2048, help="cap on new ids per continuation")
    parser.add_argument("--json", default=None, help="also write the figures as JSON")
    parser.add_argument("--tasks", default="continue,infill,accompany",
                        help="comma-separated tasks to run: continue, infill, accompany (default: all)")
    parser.add_argument("--constraints-off", default="",
                        help="comma-separated SamplingConstraints fields to switch off for every run "
                             "(e.g. under_melody)")
    parser.add_argument("--constraint", action="append", default=[], metavar="NAME=VALUE",
                        help="set a numeric SamplingConstraints field for every run (e.g. parallel_penalty=1.5); repeatable")
    parser.add_argument("--temperature", type=float, default=None,
                        help="continuations: sampling temperature (default: continue's, 1.0)")
    parser.add_argument("--top-p", type=float, default=None, help="continuations: nucleus (default: continue's, 0.95)")
    args = parser.parse_args()
    sampling = {k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p)) if v is not None}
    tasks = [t for t in args.tasks.split(",") if t]
    if not set(tasks) <= {"continue", "infill", "accompany"} or not tasks:
        parser.error(f"--tasks takes continue, infill, accompany; got {args.tasks!r}")
    constraints = constraints_without([n for n in args.constraints_off.split(",") if n])
    if args.constraint:
        from cadenza.tokenizers.grammar import SamplingConstraints

        values = {}
        for item in args.constraint:
            name, _, value = item.partition("=")
            if name not in {f.name for f in dataclasses.fields(SamplingConstraints)}:
                parser.error(f"--constraint: unknown field {name!r}")
            values[name] = float(value)
        constraints = dataclasses.replace(constraints or SamplingConstraints(), **values)
    if args.samples < 2:
        parser.error("--samples must be at least 2")

    entries = [e for e in list_models() if e.kind == "music-transformer"]
    wanted_schemes = lambda e: "infill" in tasks or "accompany" in tasks if e.scheme == "anticipatory" \
        else "continue" in tasks  # noqa: E731
    entries = [e for e in entries if wanted_schemes(e)]
    if args.models:
        from pathlib import Path

        from cadenza.symbolic.registry import _entry

        wanted = args.models.split(",")
        runs = [dataclasses.replace(_entry(Path(w)), name=w) for w in wanted if (Path(w) / "config.json").exists()]
        entries = [e for e in entries if e.name in wanted] + [e for e in runs if wanted_schemes(e)]
    pieces = open_corpus("bach-chorales").pieces(split=args.split)
    pieces = pieces[: args.pieces or (4 if args.quick else len(pieces))]
    chorales = [(symusic.Score(str(p.path)), 2 + i % 3) for i, p in enumerate(pieces)]
    print(f"{len(chorales)} {args.split}-split chorales ({', '.join(p.id for p in pieces)}), openings of 2-4 bars, "
          f"{args.seconds:g} s after them ({args.task_seconds:g} s for infill and accompaniment), "
          f"{args.samples} samples each")
    began = time.perf_counter()
    bach = bach_rows(chorales, args.seconds, args.task_seconds)
    results = {"continue": {"Bach": _summary(bach["continue"])}, "infill": {"Bach": _summary(bach["infill"])},
               "accompany": {"Bach": _summary(bach["accompany"])}}
    for entry in entries:
        model, tokenizer, info = load_checkpoint(entry.path)
        started = time.perf_counter()
        if entry.scheme == "anticipatory":
            rows = anticipation_rows(model, tokenizer, info, chorales, args.task_seconds, args.samples, tasks,
                                     constraints)
            for task in ("infill", "accompany"):
                if task in tasks:
                    results[task][entry.name] = _summary(rows[task])
        else:
            rows = continuation_rows(model, tokenizer, chorales, args.seconds, args.samples, args.max_tokens,
                                     constraints, **sampling)
            results["continue"][entry.name] = _summary(rows)
        print(f"{entry.name}: {time.perf_counter() - started:.0f} s", flush=True)
        if args.json:  # written after every model, so a long run leaves what it measured
            with open(args.json, "w") as handle:
                json.dump({**results, "failed_runs": FAILURES}, handle, indent=2)
    for task, columns in results.items():
        if len(columns) > 1:
            print(f"\n{task}\n\n{table(columns)}")
    if FAILURES:
        print(f"\n{len(FAILURES)} failed run(s): " + "; ".join(FAILURES[:5]))
    cont = results["continue"]
    if len(cont) == 1:
        print(f"\ntotal {time.perf_counter() - began:.0f} s")
        return
    worst = max((c["broken"] for n, c in cont.items() if n != "Bach"), default=math.nan)
    print(f"\nbroken-passage rate of the worst continuation model: {worst:.0%} (Bach {cont['Bach']['broken']:.0%}); "
          f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
