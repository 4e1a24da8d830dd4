"""Tokenizer encode speed: cadenza's Event, REMI and Anticipatory against miditok's REMI and MIDILike.

Two races on the same pieces (the bach-chorales corpus's MIDI files), in one process:

- from a Score: every tokenizer encodes the same in-memory ``symusic.Score`` objects;
- from a file: every tokenizer encodes the MIDI files themselves, parsing included. Event and
  Anticipatory read the messages by their references' rules (``event_midi``,
  ``anticipatory_midi``); miditok parses with symusic (C++) and then encodes;
- from a piano performance file: the same on synthetic performance MIDI (seeded: 8 files of 2,000
  notes with 8,000 sustain-pedal events each, like a pedalled piano recording), the Event
  scheme's own domain, where the pedal events outnumber the notes.

Each figure is the best of ``--repeat`` passes over the corpus. Prints notes per second and the
ratio to miditok's REMI in the same race; the last line is the headline figure.

    python benchmarks/tokenizers.py [--limit N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import warnings
from pathlib import Path

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


def performance_files(directory: Path, count: int = 8, notes: int = 2000, pedals: int = 8000) -> list[str]:
    """Synthetic pedalled piano MIDI files (seeded), for the race where CC64 events dominate."""
    import mido

    rng = random.Random(0)
    paths = []
    for index in range(count):
        events, tick = [], 0
        for _ in range(notes):
            tick += rng.randint(0, 120)
            pitch = rng.randint(21, 108)
            events.append((tick, mido.Message("note_on", note=pitch, velocity=rng.randint(20, 110))))
            events.append((tick + rng.randint(20, 800), mido.Message("note_off", note=pitch)))
        events += [(rng.randint(0, tick), mido.Message("control_change", control=64, value=rng.randint(0, 127)))
                   for _ in range(pedals)]
        file, track, now = mido.MidiFile(ticks_per_beat=480), mido.MidiTrack(), 0
        for at, message in sorted(events, key=lambda e: e[0]):
            track.append(message.copy(time=at - now))
            now = at
        file.tracks.append(track)
        path = directory / f"performance{index}.mid"
        file.save(str(path))
        paths.append(str(path))
    return paths


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
    from_files = {
        "cadenza event": event.encode, "cadenza anticipatory": anticipatory.encode,
        "miditok REMI": lambda p: peer_remi.encode(symusic.Score(p)).ids,
        "miditok MIDILike": lambda p: peer_midilike.encode(symusic.Score(p)).ids,
    }
    from_file = race("from a MIDI file (parsing included)", from_files, paths, notes, args.repeat)
    with tempfile.TemporaryDirectory() as directory:
        performances = performance_files(Path(directory))
        piano_notes = sum(symusic.Score(p).note_num() for p in performances)
        from_piano = race(f"from a pedalled piano performance file ({len(performances)} files, {piano_notes} notes)",
                          from_files, performances, piano_notes, args.repeat)

    id_lists = [event.encode(s) for s in scores]
    decode_rate = notes / best_seconds(event.decode, id_lists, args.repeat)
    print(f"\ncadenza event decode: {decode_rate:,.0f} notes/s")

    print(f"event encode {from_score['cadenza event']:.1f}x miditok REMI from a Score, "
          f"{from_file['cadenza event']:.1f}x from a file, {from_piano['cadenza event']:.1f}x from a pedalled piano "
          f"file; anticipatory {from_score['cadenza anticipatory']:.1f}x, {from_file['cadenza anticipatory']:.1f}x "
          f"and {from_piano['cadenza anticipatory']:.1f}x")


if __name__ == "__main__":
    main()
