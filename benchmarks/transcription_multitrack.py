"""Multi-instrument transcription: onset F1 ignoring and respecting the program, on rendered multi-track pieces.

Test-split chorales (four parts) rendered on FluidR3_GM (held out from every cadenza model's
training), each part on its own channel with its own General MIDI program from a seeded draw of
ensemble instruments (strings, woodwinds, brass, organ, guitar, piano), General MIDI's reverb
send, no augmentation. The label keeps each part's program.

    python benchmarks/transcription_multitrack.py [--pieces N] [--seconds S] [--model NAME ...] [--json OUT]

Scores per piece, averaged (mir_eval, 50 ms onsets; offsets within 20 % or 50 ms):

* onset F1 and onset+offset F1 ignoring the program (every note on one instrument);
* onset F1 and onset+offset F1 respecting the program: a note matches only a reference note of
  the same program (MT3's multi-instrument F1 is the onset+offset form of this);
* the share of estimated notes whose program is one of the piece's.

The sequence model `transcriber-piano` writes programs in its token stream; the framewise piano
model writes every note as program 0, so its program-respecting score shows what a piano-only
transcriber gets (the part that happens to be a piano) and is given for contrast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import symusic


def multitrack_pieces(pieces: int, seconds: float, seed: int = 0):
    """(name, audio 16 kHz, reference Score with each part's program) of test-split chorales."""
    from cadenza.tokenizers.mt3 import notes_to_score
    from cadenza.transcription.data import ENSEMBLE_PROGRAMS, FluidRenderer, heldout_soundfont, perform, score_notes

    from cadenza.data.corpora import open_corpus

    font = heldout_soundfont()
    chosen = open_corpus("bach-chorales").pieces(split="test")[:pieces]
    renderer = FluidRenderer([font])
    out = []
    for index, piece in enumerate(chosen):
        rng = np.random.default_rng(seed * 1000 + index)
        notes = perform(score_notes(symusic.Score(str(piece.path))), rng, seconds, pedal=0.0)
        voices = sorted({n[4] for n in notes})
        programs = {v: int(p) for v, p in zip(voices, rng.choice(ENSEMBLE_PROGRAMS, len(voices), replace=False))}
        audio = renderer.render(notes, font, 0, voice_programs=programs)
        audio = audio / max(1e-6, float(np.abs(audio).max())) * 0.5
        reference = notes_to_score([(s, e, p, v, programs[voice], False) for s, e, p, v, voice in notes])
        out.append((piece.id, audio.astype(np.float32), reference, programs))
    renderer.close()
    return out


def notes_of(score: symusic.Score) -> list[tuple[float, float, int, int]]:
    """(start, end, pitch, program) in seconds of every non-drum note."""
    seconds = score.to("second")
    return [(float(n.time), float(n.time + max(n.duration, 1e-3)), int(n.pitch), int(t.program))
            for t in seconds.tracks if not t.is_drum for n in t.notes]


def f1(reference, estimate, with_program: bool, offsets: bool) -> float:
    """mir_eval note F1; with_program places each program's notes 128 semitones apart, so only
    notes of the same program can match."""
    import mir_eval

    if not reference and not estimate:
        return 1.0
    if not reference or not estimate:
        return 0.0

    def arrays(notes):
        intervals = np.array([[s, e] for s, e, _, _ in notes])
        pitches = np.array([mir_eval.util.midi_to_hz(p + (128 * program if with_program else 0))
                            for _, _, p, program in notes])
        return intervals, pitches

    (ri, rp), (ei, ep) = arrays(reference), arrays(estimate)
    _, _, score, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=0.05, offset_ratio=0.2 if offsets else None, offset_min_tolerance=0.05)
    return float(score)


def main() -> None:
    import torch

    from cadenza.transcription.inference import load_transcriber, transcribe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=8, help="test-split chorales")
    parser.add_argument("--seconds", type=float, default=20.0, help="excerpt length")
    parser.add_argument("--model", action="append", default=None,
                        help="transcribers to measure (default: transcriber-piano and transcriber-framewise)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pieces = multitrack_pieces(args.pieces, args.seconds)
    names = args.model or ["transcriber-piano", "transcriber-framewise"]
    print(f"{len(pieces)} test chorales, {args.seconds:.0f} s each, a General MIDI program per part, "
          f"FluidR3_GM (held out); one thread")
    keys = ("onset_f1", "onset_offset_f1", "onset_f1_program", "onset_offset_f1_program", "program_in_piece")
    summary = {}
    for name in names:
        model, tokenizer, _ = load_transcriber(name)
        rows, compute = [], 0.0
        for piece_id, audio, reference, programs in pieces:
            began = time.perf_counter()
            estimate = transcribe(audio, model, tokenizer).score
            compute += time.perf_counter() - began
            ref, est = notes_of(reference), notes_of(estimate)
            rows.append({"piece": piece_id, "programs": sorted(set(programs.values())),
                         "estimated_programs": sorted({n[3] for n in est}),
                         "onset_f1": f1(ref, est, False, False), "onset_offset_f1": f1(ref, est, False, True),
                         "onset_f1_program": f1(ref, est, True, False),
                         "onset_offset_f1_program": f1(ref, est, True, True),
                         "program_in_piece": (float(np.mean([n[3] in programs.values() for n in est]))
                                              if est else 0.0)})
        audio_seconds = sum(len(p[1]) for p in pieces) / 16000
        summary[name] = {**{k: float(np.mean([r[k] for r in rows])) for k in keys},
                         "speed_x_realtime": audio_seconds / max(compute, 1e-9), "per_piece": rows}
    print(f"{'system':24s} {'onset F1':>8s} {'on+off':>7s} {'onset F1 (prog)':>15s} {'on+off (prog)':>13s} "
          f"{'prog in piece':>13s} {'x real time':>11s}")
    for name, row in summary.items():
        print(f"{name:24s} {row['onset_f1']:8.3f} {row['onset_offset_f1']:7.3f} {row['onset_f1_program']:15.3f} "
              f"{row['onset_offset_f1_program']:13.3f} {row['program_in_piece']:13.3f} {row['speed_x_realtime']:11.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"pieces": len(pieces), "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
