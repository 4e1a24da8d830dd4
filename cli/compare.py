"""``cadenza compare``: the same model and budget under several tokenizations, one report."""

from __future__ import annotations

import shlex
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="train one model per tokenization with the same budget; write a report")
    p.add_argument("--corpus", required=True, help="built-in corpus name (a+b joins) or a directory of MIDI files")
    p.add_argument("--schemes", default="event,remi,anticipatory")
    p.add_argument("--attention", default="relative", help="comma list of relative,absolute")
    p.add_argument("--budget-minutes", type=float, default=5.0, help="training time per configuration")
    p.add_argument("--config", default="cpu", help="model preset (default cpu)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples", type=int, default=4, help="continuations sampled per configuration")
    p.add_argument("--sample-seconds", type=float, default=8.0, help="length of each sampled continuation")
    p.add_argument("--limit-pieces", type=int, default=None)
    p.add_argument("--out", default="study")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args) -> int:
    from cadenza.data.errors import CadenzaError
    from cadenza.apps.study import StudySettings, run_study
    from cadenza.tokenizers.base import SCHEMES

    schemes = tuple(s.strip() for s in args.schemes.split(",") if s.strip())
    attentions = tuple(a.strip() for a in args.attention.split(",") if a.strip())
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise CadenzaError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    for attention in attentions:
        if attention not in ("relative", "absolute"):
            raise CadenzaError(f"unknown attention {attention!r}; choose relative and/or absolute")
    command = "cadenza " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    settings = StudySettings(corpus=args.corpus, out=args.out, schemes=schemes, attentions=attentions,
                             budget_minutes=args.budget_minutes, config=args.config, seq_len=args.seq_len,
                             batch_size=args.batch_size, seed=args.seed, samples=args.samples,
                             sample_seconds=args.sample_seconds,
                             limit_pieces=args.limit_pieces, device=args.device, command=command)
    run_study(settings)
    print(f"report: {args.out}/report.md and {args.out}/report.html")
    return 0
