"""``cadenza info FILE``: what is in a music file."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a music file (MIDI, MusicXML, kern, ABC)")
    p.add_argument("file")
    p.add_argument("--index", type=int, default=0, help="tune number in a multi-tune ABC file (0-based)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from cadenza.data.info import format_summary, score_summary
    from cadenza.data.io import read_score

    from .common import print_json

    summary = score_summary(read_score(args.file, index=args.index))
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary, args.file))
    return 0
