"""``cadenza tokenize`` (a file, a corpus or a directory) and ``cadenza detokenize`` (ids back to music)."""

from __future__ import annotations

import json
from pathlib import Path

from cadenza.tokenizers import SCHEMES


def _add_tokenizer_args(p) -> None:
    p.add_argument("--scheme", choices=tuple(SCHEMES), default="event", help="tokenization scheme (default: event)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="tokenizer option, value as JSON when it parses (e.g. pitch_range=[21,108]); repeatable")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize", help="tokenize a music file (print ids) or a corpus/directory (write token shards)",
        description="FILE: print its ids (readable token names, or a JSON list with --json). "
                    "CORPUS or DIR: write DIR/meta.json and per-split {split}.bin memmaps with an index.")
    p.add_argument("input", help="a music file, a built-in corpus name, or a directory of MIDI files")
    _add_tokenizer_args(p)
    p.add_argument("--out", "-o", help="shard directory (corpus input), or a JSON file for the ids (file input)")
    p.add_argument("--controls", help="anticipatory only: instruments:0,33 | span:0.05 | random:0.3")
    p.add_argument("--seed", type=int, default=None, help="anticipatory only: seed for span/random controls (default 0)")
    p.add_argument("--json", action="store_true", help="file input: print the ids as a JSON list")
    p.add_argument("--workers", type=int, help="corpus input: worker processes (default: all cores)")
    p.add_argument("--limit", type=int, help="corpus input: only the first N source files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_tokenize)

    d = subparsers.add_parser("detokenize", help="turn a JSON list of ids back into a MIDI or MusicXML file")
    d.add_argument("ids", help="JSON file: a list of ids (or an object with an \"ids\" list)")
    _add_tokenizer_args(d)
    d.add_argument("--out", "-o", required=True, help="output .mid or .musicxml")
    d.set_defaults(func=run_detokenize)


def _parse_config(items: list[str]) -> dict:
    from cadenza.data.errors import TokenizerError

    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TokenizerError(f"--config expects KEY=VALUE, got {item!r}")
        try:
            config[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            config[key.strip()] = value
    return config


def _encode_kwargs(args) -> dict:
    from cadenza.data.errors import TokenizerError
    from cadenza.tokenizers import scheme_class

    kwargs = {}
    if args.controls is not None or args.seed is not None:
        if not scheme_class(args.scheme).takes_controls:
            with_controls = ", ".join(name for name in SCHEMES if scheme_class(name).takes_controls)
            raise TokenizerError(f"--controls and --seed apply only to schemes with controls ({with_controls})")
        kwargs = {"controls": args.controls, "seed": 0 if args.seed is None else args.seed}
    return kwargs


def run_tokenize(args) -> int:
    from cadenza.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(args.scheme, **_parse_config(args.config))
    kwargs = _encode_kwargs(args)
    source = Path(args.input)
    if source.is_file():
        return _tokenize_file(args, tokenizer, kwargs)
    from cadenza.data.errors import CorpusError
    from cadenza.data.shards import write_shards

    if not args.out:
        raise CorpusError("tokenizing a corpus or directory needs --out DIR")
    meta = write_shards(args.input, tokenizer, args.out, workers=args.workers, limit=args.limit,
                        progress=not args.no_progress, encode_kwargs=kwargs)
    splits = meta["splits"]
    pieces = sum(s["pieces"] for s in splits.values())
    tokens = sum(s["tokens"] for s in splits.values())
    parts = ", ".join(f"{name} {s['pieces']} pieces / {s['tokens']} tokens" for name, s in splits.items())
    if meta["failed"]:
        print(f"skipped {len(meta['failed'])} pieces that could not be tokenized:")
        for piece_id, reason in meta["failed"][:10]:
            print(f"  {piece_id}: {reason}")
        if len(meta["failed"]) > 10:
            print(f"  ... and {len(meta['failed']) - 10} more")
    print(f"tokenized {pieces} pieces into {tokens} {meta['scheme']} tokens ({meta['dtype']}) in {args.out}: {parts}; "
          f"{len(meta['failed'])} failed")
    return 0


def _tokenize_file(args, tokenizer, kwargs) -> int:
    from cadenza.data.atomic import write_text_atomic
    from cadenza.data.io import read_score
    from cadenza.rendering.output import check_output

    from .common import naming

    if args.out:
        check_output(args.out, "json")
    read_score(args.input)  # the format, tempo and size checks, naming the file, whatever reader the scheme uses
    with naming(args.input):
        ids = tokenizer.encode(args.input, **kwargs)
    if args.out:
        write_text_atomic(args.out, json.dumps([int(i) for i in ids]))
    if args.json:
        print(json.dumps([int(i) for i in ids]))
    elif not args.out:
        print(" ".join(tokenizer.tokens_to_str(ids)))
    else:
        print(f"wrote {len(ids)} {tokenizer.name} ids to {args.out}")
    return 0


def run_detokenize(args) -> int:
    from cadenza.data.errors import TokenizerError
    from cadenza.data.io import write_score
    from cadenza.tokenizers import get_tokenizer

    path = Path(args.ids)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TokenizerError(f"{path}: is a directory, not a JSON file of ids") from None
    except RecursionError:
        raise TokenizerError(f"{path}: JSON nested too deeply to be a list of ids") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path}: not a JSON file ({exc})") from None
    ids = data.get("ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TokenizerError(f"{path}: expected a JSON list of integer ids")
    tokenizer = get_tokenizer(args.scheme, **_parse_config(args.config))
    from .common import naming

    with naming(path):
        score = tokenizer.decode(ids)
    if score.note_num() == 0:
        raise TokenizerError(f"{path}: the ids describe no notes")
    write_score(score, args.out)
    print(f"wrote {score.note_num()} notes to {args.out}")
    return 0
