"""``cadenza info FILE``: what is in a music or audio file."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a music file (MIDI, MusicXML, kern, ABC) or a recording "
                                           "(WAV, FLAC, OGG)")
    p.add_argument("file")
    p.add_argument("--index", type=int, default=0, help="tune number in a multi-tune ABC file (0-based)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from cadenza.data.info import AUDIO_SUFFIXES, audio_summary, format_audio_summary, format_summary, score_summary
    from cadenza.data.io import read_score

    from .common import print_json

    if Path(args.file).suffix.lower() in AUDIO_SUFFIXES:
        summary, text = audio_summary(args.file), format_audio_summary
    else:
        summary, text = score_summary(read_score(args.file, index=args.index)), format_summary
    if args.json:
        print_json(summary)
    else:
        print(text(summary, args.file))
    return 0
