"""``cadenza corpus list|export|stats``: the built-in corpora and user directories."""

from __future__ import annotations

import shutil
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("corpus", help="list, export and describe corpora")
    sub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="built-in corpora: pieces and whether they are cached")
    ls.set_defaults(func=run_list)
    ex = sub.add_parser("export", help="export a corpus as MIDI files into a directory")
    ex.add_argument("name")
    ex.add_argument("dir")
    ex.add_argument("--split", choices=("train", "valid", "test"))
    ex.add_argument("--limit", type=int, help="only the first N source files")
    ex.set_defaults(func=run_export)
    st = sub.add_parser("stats", help="pieces, notes, hours, programs, pitch range, time signatures")
    st.add_argument("name", help="built-in corpus name or a directory of MIDI files")
    st.add_argument("--split", choices=("train", "valid", "test"))
    st.add_argument("--limit", type=int)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=run_stats)


def run_list(args) -> int:
    from cadenza.data.corpora import BUILTIN, DESCRIPTIONS, BuiltinCorpus, cache_root

    print(f"cache: {cache_root()}")
    for name in BUILTIN:
        corpus = BuiltinCorpus(name)
        sources = corpus.sources()
        if corpus.is_cached():
            count = f"{len(corpus.pieces()):6d} pieces   cached"
        else:
            count = f"{len(sources):6d} files    not cached (exported on first use)"
        print(f"  {name:14s} {count}   {DESCRIPTIONS[name]}")
    return 0


def _report(report) -> None:
    if report.failed:
        print(f"skipped {len(report.failed)} pieces that failed to convert:")
        for piece_id, reason in report.failed[:20]:
            print(f"  {piece_id}: {reason}")
        if len(report.failed) > 20:
            print(f"  ... and {len(report.failed) - 20} more")


def run_export(args) -> int:
    from tqdm import tqdm

    from cadenza.data.atomic import atomic_path, remove_temporaries
    from cadenza.data.corpora import open_corpus

    corpus = open_corpus(args.name)
    report = corpus.ensure(limit=args.limit)
    _report(report)
    pieces = corpus.pieces(split=args.split, limit=args.limit)
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / (piece.id.replace("#", "-") + ".mid") for piece in pieces]
    folders: dict[Path, set[str]] = {}
    for target in targets:
        folders.setdefault(target.parent, set()).add(target.name)
    for folder, names in folders.items():  # what a killed copy left beside these files
        remove_temporaries(folder, names)
    for piece, target in zip(tqdm(pieces, desc="copying", unit="piece"), targets):
        with atomic_path(target, stale=False) as tmp:  # cleared above
            shutil.copyfile(piece.path, tmp)
    print(f"exported {len(pieces)} pieces of {args.name} to {out}")
    return 0


def run_stats(args) -> int:
    from cadenza.data.corpora import open_corpus
    from cadenza.data.info import gm_program_name, pieces_stats, pitch_name

    from .common import print_json

    corpus = open_corpus(args.name)
    stats = pieces_stats(corpus.pieces(split=args.split, limit=args.limit))
    broken = stats["broken"]
    if args.json:
        print_json(stats)
        return 0
    print(f"{args.name}{' (' + args.split + ')' if args.split else ''}")
    print(f"  pieces           {stats['pieces']}")
    print(f"  notes            {stats['notes']}")
    print(f"  hours            {stats['hours']:.2f}")
    if stats["pitch_range"]:
        lo, hi = stats["pitch_range"]
        print(f"  pitch range      {pitch_name(lo)}-{pitch_name(hi)} ({lo}-{hi})")
    progs = ", ".join(f"{'drums' if p == 'drums' else gm_program_name(p)} ({n})" for p, n in list(stats["programs"].items())[:8])
    print(f"  programs         {progs}")
    print(f"  time signatures  {', '.join(f'{k} ({v})' for k, v in stats['time_signatures'].items())}")
    if broken:
        print(f"  unreadable       {len(broken)} files skipped:")
        for piece_id, reason in broken[:10]:
            print(f"    {reason}")
        if len(broken) > 10:
            print(f"    ... and {len(broken) - 10} more")
    return 0
