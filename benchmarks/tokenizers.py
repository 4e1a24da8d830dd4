"""Tokenizer encode speed: cadenza's Event, REMI and Anticipatory against miditok's REMI and MIDILike.

All tokenizers encode the same in-memory ``symusic.Score`` objects (the bach-chorales corpus) in
one process; each figure is the best of ``--repeat`` passes over the corpus. Prints notes per
second and the ratio to miditok's REMI; the last line is the headline figure.

    python benchmarks/tokenizers.py [--limit N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import symusic


def best_seconds(fn, scores, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for score in scores:
            fn(score)
        best = min(best, time.perf_counter() - began)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="bach-chorales")
    parser.add_argument("--limit", type=int, help="only the first N source files of the corpus")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from cadenza.data.corpora import open_corpus
    from cadenza.tokenizers import get_tokenizer
    from cadenza.tokenizers.remi import import_miditok

    miditok = import_miditok()
    pieces = open_corpus(args.corpus).pieces(limit=args.limit)
    scores = [symusic.Score(str(p.path)) for p in pieces]
    notes = sum(s.note_num() for s in scores)
    print(f"{args.corpus}: {len(scores)} pieces, {notes} notes; best of {args.repeat} passes")

    ours = {"cadenza event": get_tokenizer("event"), "cadenza remi": get_tokenizer("remi")}
    try:
        ours["cadenza anticipatory"] = get_tokenizer("anticipatory", overlong="clip")  # chorales run past 100 s
    except Exception as exc:  # the benchmark still runs without it
        print(f"(anticipatory tokenizer unavailable: {type(exc).__name__}: {exc})")
    peer_config = dict(beat_res={(0, 4): 8, (4, 12): 4}, num_velocities=32, use_tempos=True,
                       use_time_signatures=True, use_programs=True, one_token_stream_for_programs=True)
    peers = {"miditok REMI": miditok.REMI(miditok.TokenizerConfig(**peer_config)),
             "miditok MIDILike": miditok.MIDILike(miditok.TokenizerConfig(**peer_config))}

    rates: dict[str, float] = {}
    tokens: dict[str, int] = {}
    for name, tok in {**ours, **peers}.items():
        encode = tok.encode
        tokens[name] = sum(len(encode(s) if name.startswith("cadenza") else encode(s).ids) for s in scores)
        rates[name] = notes / best_seconds(encode, scores, args.repeat)

    base = rates["miditok REMI"]
    print(f"{'tokenizer':24s} {'notes/s':>12s} {'tokens':>10s} {'vs miditok REMI':>16s}")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:12,.0f} {tokens[name]:10d} {rate / base:15.1f}x")

    event = get_tokenizer("event")
    id_lists = [event.encode(s) for s in scores]
    decode_rate = notes / best_seconds(event.decode, id_lists, args.repeat)
    print(f"cadenza event decode: {decode_rate:,.0f} notes/s")

    headline = f"event encode {rates['cadenza event'] / base:.1f}x miditok REMI ({rates['cadenza event']:,.0f} notes/s)"
    if "cadenza anticipatory" in rates:
        headline += f", anticipatory {rates['cadenza anticipatory'] / base:.1f}x"
    print(headline)


if __name__ == "__main__":
    main()
