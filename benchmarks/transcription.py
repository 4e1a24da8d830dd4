"""Piano transcription quality and speed: cadenza's shipped model vs Spotify's basic-pitch.

Both run in this process on the same audio: test-split chorales rendered on FluidR3_GM's
piano (a SoundFont the model never heard in training), without augmentation. Scores are
mir_eval's onset F1 (50 ms) and onset+offset F1, averaged over pieces; speed is seconds of
audio per second of compute (single process, torch and onnxruntime at their default threads).

    python benchmarks/transcription.py [--data DIR] [--pieces N] [--model DIR]

The evaluation set is built on first use (``cadenza transcription-data --heldout``). basic-pitch
runs from its pip package's ONNX model (``pip install --no-deps basic-pitch onnxruntime librosa``);
its sonification helper imports resampy, which basic-pitch never calls here, so a placeholder
module stands in when resampy is absent. Targets: onset F1 >= 0.90, onset+offset F1 >= 0.70,
>= 10x real time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import symusic


def heldout_pairs(data_dir: Path, pieces: int):
    from cadenza.transcription.data import PairSpec, build_pairs, heldout_soundfont, load_pairs

    spec = PairSpec(corpora=("bach-chorales",), pieces_per_split={"test": pieces}, textures_per_split={"test": 0},
                    max_seconds=30.0, programs=(0,), soundfonts=(str(heldout_soundfont()),), augment=False, seed=1)
    if len(load_pairs(data_dir, "test")) < pieces:
        build_pairs(data_dir, spec, splits=("test",))
    return load_pairs(data_dir, "test")[:pieces]


def basic_pitch_runner():
    """A function path -> Score using basic-pitch's ONNX model, or the reason it cannot run."""
    try:
        sys.modules.setdefault("resampy", types.ModuleType("resampy"))  # only its sonify() uses resampy
        import logging

        logging.getLogger().setLevel(logging.ERROR)
        from basic_pitch import ICASSP_2022_MODEL_PATH
        from basic_pitch.inference import Model, predict
    except Exception as exc:  # noqa: BLE001 - report any reason the peer is unavailable
        return None, f"basic-pitch unavailable: {type(exc).__name__}: {exc}"
    try:
        model = Model(ICASSP_2022_MODEL_PATH)
    except Exception as exc:  # noqa: BLE001
        return None, f"basic-pitch model does not load: {exc}"

    def run(path: Path) -> symusic.Score:
        import io
        from contextlib import redirect_stdout

        from cadenza.tokenizers.mt3 import notes_to_score

        with redirect_stdout(io.StringIO()):
            _, _, events = predict(str(path), model)
        return notes_to_score([(float(s), float(e), int(p), int(round(a * 127)) or 1, 0, False)
                               for s, e, p, a, *_ in events])

    return run, str(ICASSP_2022_MODEL_PATH)


def main() -> None:
    import torch

    from cadenza.transcription.inference import load_transcriber, transcribe, transcription_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CADENZA_TRANSCRIPTION_EVAL",
                                                         str(Path.home() / ".cache" / "cadenza" / "piano-heldout")))
    parser.add_argument("--pieces", type=int, default=16)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    pairs = heldout_pairs(Path(args.data), args.pieces)
    model, tokenizer, info = load_transcriber(args.model)
    peer, peer_note = basic_pitch_runner()
    print(f"{len(pairs)} test chorales on FluidR3_GM piano; cadenza model: {model.num_parameters() / 1e6:.2f} M "
          f"parameters, {info.get('steps', '?')} steps; torch threads {torch.get_num_threads()}")
    print(f"peer: {peer_note}")
    rows = {"cadenza": [], "basic-pitch": []}
    timing = {"cadenza": 0.0, "basic-pitch": 0.0}
    audio_seconds = 0.0
    # warm up both once (model load, JIT, first-call allocations) so timings compare steady states
    transcribe(pairs[0][0], model, tokenizer)
    if peer:
        peer(pairs[0][0])
    for audio_path, midi_path in pairs:
        reference = symusic.Score(str(midi_path))
        began = time.perf_counter()
        result = transcribe(audio_path, model, tokenizer)
        timing["cadenza"] += time.perf_counter() - began
        audio_seconds += result.seconds
        rows["cadenza"].append(transcription_scores(reference, result.score))
        if peer:
            began = time.perf_counter()
            estimate = peer(audio_path)
            timing["basic-pitch"] += time.perf_counter() - began
            rows["basic-pitch"].append(transcription_scores(reference, estimate))
    print(f"{'system':12s} {'onset F1':>9s} {'on+off F1':>9s} {'precision':>9s} {'recall':>9s} {'x real time':>11s}")
    summary = {}
    for system, scores in rows.items():
        if not scores:
            continue
        mean = {k: float(np.mean([s[k] for s in scores])) for k in
                ("onset_f1", "onset_offset_f1", "onset_precision", "onset_recall")}
        speed = audio_seconds / max(timing[system], 1e-9)
        summary[system] = (mean, speed)
        print(f"{system:12s} {mean['onset_f1']:9.3f} {mean['onset_offset_f1']:9.3f} {mean['onset_precision']:9.3f} "
              f"{mean['onset_recall']:9.3f} {speed:11.1f}")
    ours, our_speed = summary["cadenza"]
    if "basic-pitch" in summary:
        theirs, their_speed = summary["basic-pitch"]
        print(f"cadenza piano onset F1 {ours['onset_f1']:.3f} vs basic-pitch {theirs['onset_f1']:.3f}; "
              f"onset+offset F1 {ours['onset_offset_f1']:.3f} vs {theirs['onset_offset_f1']:.3f}; "
              f"{our_speed:.1f}x real time ({our_speed / their_speed:.2f}x basic-pitch's speed)")
    else:
        print(f"cadenza piano onset F1 {ours['onset_f1']:.3f}, onset+offset F1 {ours['onset_offset_f1']:.3f}, "
              f"{our_speed:.1f}x real time (basic-pitch not run: {peer_note})")


if __name__ == "__main__":
    main()
