"""``cadenza compare``: the same model, budget and musical context under several tokenizations and
seeds, one report with intervals and learning curves."""

from __future__ import annotations

import argparse
import shlex
import sys


def _seeds(text: str) -> tuple[int, ...]:
    from cadenza.data.errors import CadenzaError

    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise CadenzaError(f"--seeds must be a comma list of whole numbers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise CadenzaError(f"--seeds must list distinct non-negative seeds, got {text!r}")
    return seeds


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="train one model per tokenization and seed with the same budget and "
                                              "musical context; write a report")
    p.add_argument("--corpus", required=True, help="built-in corpus name (a+b joins) or a directory of MIDI files")
    p.add_argument("--schemes", default="event,remi,anticipatory")
    p.add_argument("--attention", default="relative", help="comma list of relative,absolute")
    p.add_argument("--configs", default=None,
                   help="comma list of scheme/attention pairs to run instead of --schemes × --attention "
                        "(e.g. event/relative,event/absolute,remi/relative)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds, one run each (default 0,1,2)")
    p.add_argument("--budget", default=None, help="per run: steps:N | tokens:N | notes:N | minutes:X (default minutes:5)")
    p.add_argument("--budget-minutes", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--context", default="seconds:12",
                   help="music each model sees at once: seconds:X | notes:N | tokens:N (default seconds:12)")
    p.add_argument("--config", default="cpu", help="model size preset (default cpu)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--samples", type=int, default=4, help="continuations sampled per run (test-split openings)")
    p.add_argument("--sample-seconds", type=float, default=8.0, help="length of each sampled continuation")
    p.add_argument("--curve-points", type=int, default=4, help="learning-curve evaluations during each run")
    p.add_argument("--curve-pieces", type=int, default=8, help="valid pieces the learning curve scores")
    p.add_argument("--limit-pieces", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (one thread each by OMP_NUM_THREADS)")
    p.add_argument("--out", default="study")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args) -> int:
    from cadenza.apps.study import StudySettings, run_study
    from cadenza.data.errors import CadenzaError
    from cadenza.tokenizers.base import SCHEMES

    schemes = tuple(s.strip() for s in args.schemes.split(",") if s.strip())
    attentions = tuple(a.strip() for a in args.attention.split(",") if a.strip())
    configurations = None
    if args.configs is not None:
        pairs = [c.strip() for c in args.configs.split(",") if c.strip()]
        if not pairs or any(c.count("/") != 1 for c in pairs):
            raise CadenzaError(f"--configs must be a comma list of scheme/attention pairs, got {args.configs!r}")
        configurations = tuple(tuple(c.split("/")) for c in pairs)
        schemes = tuple(dict.fromkeys(scheme for scheme, _ in configurations))
        attentions = tuple(dict.fromkeys(attention for _, attention in configurations))
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise CadenzaError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    for attention in attentions:
        if attention not in ("relative", "absolute"):
            raise CadenzaError(f"unknown attention {attention!r}; choose relative and/or absolute")
    if args.budget is not None and args.budget_minutes is not None:
        raise CadenzaError("give --budget or --budget-minutes (its old form), not both")
    budget = args.budget or (f"minutes:{args.budget_minutes:g}" if args.budget_minutes is not None else "minutes:5")
    command = "cadenza " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    settings = StudySettings(corpus=args.corpus, out=args.out, schemes=schemes, attentions=attentions,
                             configurations=configurations,
                             seeds=_seeds(args.seeds), budget=budget, context=args.context, config=args.config,
                             batch_size=args.batch_size, lr=args.lr, samples=args.samples,
                             sample_seconds=args.sample_seconds, curve_points=args.curve_points,
                             curve_pieces=args.curve_pieces, limit_pieces=args.limit_pieces, jobs=args.jobs,
                             device=args.device, command=command)
    run_study(settings)
    print(f"report: {args.out}/report.md and {args.out}/report.html")
    return 0
