"""Rendering speed: cadenza's FluidSynth renderer against pretty_midi.fluidsynth on Bach chorales.

Both render the same MIDI files with the same SoundFont (pretty_midi's TimGM6mb.sf2) at
44.1 kHz, mono, in this process, interleaved so that load from other processes hits both alike.
Prints times per piece, the speed against real time (wall clock and CPU), and the ratio to the
peer; the last line is the headline.

    python benchmarks/rendering.py [--pieces 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=5, help="number of chorales, the first in the corpus (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per piece and renderer (median kept)")
    args = parser.parse_args()

    import pretty_midi
    import symusic

    from cadenza.data.corpora import open_corpus
    from cadenza.rendering import fluidsynth

    soundfont = fluidsynth.default_soundfont()
    pieces = open_corpus("bach-chorales").pieces(limit=args.pieces)
    print(f"SoundFont {soundfont.name}, 44100 Hz mono, {len(pieces)} chorales, median of {args.repeats} runs")

    _, cold_wall, _ = timed(lambda: fluidsynth.render(symusic.Score(str(pieces[0].path))))
    print(f"first call (loads the SoundFont): {cold_wall:.3f} s")

    total_audio = total_ours = total_ours_cpu = total_peer = 0.0
    for piece in pieces:
        score = symusic.Score(str(piece.path))
        midi = pretty_midi.PrettyMIDI(str(piece.path))
        ours_wall, ours_cpu, peer_wall = [], [], []
        for _ in range(args.repeats):
            audio, wall, cpu = timed(lambda: fluidsynth.render(score, sample_rate=44100))
            ours_wall.append(wall)
            ours_cpu.append(cpu)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, wall, _ = timed(lambda: midi.fluidsynth(fs=44100, sf2_path=str(soundfont)))
            peer_wall.append(wall)
        seconds = len(audio) / 44100
        ours, cpu, peer = statistics.median(ours_wall), statistics.median(ours_cpu), statistics.median(peer_wall)
        total_audio, total_ours, total_ours_cpu, total_peer = (total_audio + seconds, total_ours + ours,
                                                               total_ours_cpu + cpu, total_peer + peer)
        print(f"{piece.id:12s} {seconds:6.1f} s audio  cadenza {ours:6.3f} s ({seconds / ours:5.0f}x real time, "
              f"CPU {seconds / cpu:5.0f}x)  pretty_midi {peer:6.3f} s ({seconds / peer:5.0f}x)  "
              f"ratio {peer / ours:4.1f}x")
    print(f"total: {total_audio:.1f} s of audio; cadenza {total_ours:.2f} s wall, {total_ours_cpu:.2f} s CPU; "
          f"pretty_midi {total_peer:.2f} s wall")
    print(f"cadenza FluidSynth renders Bach chorales at {total_audio / total_ours:.0f}x real time "
          f"({total_audio / total_ours_cpu:.0f}x per CPU second), {total_peer / total_ours:.1f}x faster than "
          f"pretty_midi.fluidsynth")


if __name__ == "__main__":
    main()
