"""``cadenza demo``: the main job end to end on a test-split Bach chorale."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the main job end to end on a Bach chorale")
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from cadenza.data.corpora import open_corpus
    from cadenza.data.info import format_summary, score_summary
    from cadenza.data.io import read_score, write_midi, write_musicxml

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pieces = open_corpus("bach-chorales").pieces(split="test", limit=60)
    piece = pieces[0]
    score = read_score(piece.path)
    midi = write_midi(score, out / f"{piece.id}.mid")
    xml = write_musicxml(score, out / f"{piece.id}.musicxml")
    print(format_summary(score_summary(score), f"{piece.id} (bach-chorales, test split)"))
    print(f"wrote {midi}")
    print(f"wrote {xml}")
    return 0
