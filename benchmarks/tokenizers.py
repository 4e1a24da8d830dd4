"""Tokenizer encode speed: cadenza's Event, REMI and Anticipatory against miditok's REMI and MIDILike.

Two races on the same pieces (the bach-chorales corpus's MIDI files), in one process:

- from a Score: every tokenizer encodes the same in-memory ``symusic.Score`` objects;
- from a file: every tokenizer encodes the MIDI files themselves, parsing included. Event and
  Anticipatory read the messages by their references' rules (``event_midi``,
  ``anticipatory_midi``); miditok parses with symusic (C++) and then encodes.

Each figure is the best of ``--repeat`` passes over the corpus. Prints notes per second and the
ratio to miditok's REMI in the same race; the last line is the headline figure.

    python benchmarks/tokenizers.py [--limit N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import symusic


def best_seconds(fn, items, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - began)
    return best


def race(title: str, encoders: dict, items: list, notes: int, repeat: int) -> dict[str, float]:
    """Notes per second of each encoder over ``items``; prints a table against miditok REMI."""
    rates, tokens = {}, {}
    for name, encode in encoders.items():
        tokens[name] = sum(len(encode(item)) for item in items)
        rates[name] = notes / best_seconds(encode, items, repeat)
    base = rates["miditok REMI"]
    print(f"\n{title}")
    print(f"{'tokenizer':24s} {'notes/s':>12s} {'tokens':>10s} {'vs miditok REMI':>16s}")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:12,.0f} {tokens[name]:10d} {rate / base:15.1f}x")
    return {name: rate / base for name, rate in rates.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="bach-chorales")
    parser.add_argument("--limit", type=int, help="only the first N source files of the corpus")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from cadenza.data.corpora import open_corpus
    from cadenza.tokenizers import get_tokenizer
    from cadenza.tokenizers.remi import MergedTracksWarning, import_miditok

    warnings.simplefilter("ignore", MergedTracksWarning)  # the chorales' voices share program 0, as expected
    miditok = import_miditok()
    pieces = open_corpus(args.corpus).pieces(limit=args.limit)
    paths = [str(p.path) for p in pieces]
    scores = [symusic.Score(path) for path in paths]
    notes = sum(s.note_num() for s in scores)
    print(f"{args.corpus}: {len(scores)} pieces, {notes} notes; best of {args.repeat} passes")

    event = get_tokenizer("event")
    anticipatory = get_tokenizer("anticipatory", overlong="clip")  # chorales run past 100 s
    remi = get_tokenizer("remi")
    peer_config = dict(beat_res={(0, 4): 8, (4, 12): 4}, num_velocities=32, use_tempos=True,
                       use_time_signatures=True, use_programs=True, one_token_stream_for_programs=True)
    peer_remi = miditok.REMI(miditok.TokenizerConfig(**peer_config))
    peer_midilike = miditok.MIDILike(miditok.TokenizerConfig(**peer_config))

    from_score = race("from a Score", {
        "cadenza event": event.encode, "cadenza remi": remi.encode, "cadenza anticipatory": anticipatory.encode,
        "miditok REMI": lambda s: peer_remi.encode(s).ids, "miditok MIDILike": lambda s: peer_midilike.encode(s).ids,
    }, scores, notes, args.repeat)
    from_file = race("from a MIDI file (parsing included)", {
        "cadenza event": event.encode, "cadenza anticipatory": anticipatory.encode,
        "miditok REMI": lambda p: peer_remi.encode(symusic.Score(p)).ids,
        "miditok MIDILike": lambda p: peer_midilike.encode(symusic.Score(p)).ids,
    }, paths, notes, args.repeat)

    id_lists = [event.encode(s) for s in scores]
    decode_rate = notes / best_seconds(event.decode, id_lists, args.repeat)
    print(f"\ncadenza event decode: {decode_rate:,.0f} notes/s")

    print(f"event encode {from_score['cadenza event']:.1f}x miditok REMI from a Score, "
          f"{from_file['cadenza event']:.1f}x from a file; anticipatory {from_score['cadenza anticipatory']:.1f}x "
          f"and {from_file['cadenza anticipatory']:.1f}x")


if __name__ == "__main__":
    main()
