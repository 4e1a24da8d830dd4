"""Piano transcription quality and speed: cadenza's framewise model, its sequence model and Spotify's basic-pitch.

All run in this process, on one thread each, on the same audio: test-split chorales and random
piano textures rendered on FluidR3_GM's piano (a SoundFont no cadenza model heard in training),
with General MIDI's reverb send and no augmentation. Scores are mir_eval's onset F1 (50 ms) and
onset+offset F1 (offsets within 20 % or 50 ms), averaged over pieces, and the velocity error of
onset-matched notes (MIDI units; "fitted" after the best affine map, since a recording's loudness
fixes velocity only up to gain). Speed is seconds of audio per second of compute, features included.

    python benchmarks/transcription.py [--data DIR] [--pieces N] [--textures N] [--model NAME]
                                       [--seq2seq NAME | --no-seq2seq] [--json OUT]

The evaluation set is built on first use. basic-pitch runs from its pip package's ONNX model
(``pip install --no-deps basic-pitch onnxruntime librosa``) in a one-thread onnxruntime session;
its sonification helper imports resampy, which basic-pitch never calls here, so a placeholder
module stands in when resampy is absent. Targets: onset F1 >= 0.90, onset+offset F1 >= 0.70,
>= 40x real time on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import symusic

METRICS = ("onset_f1", "onset_offset_f1", "onset_precision", "onset_recall", "velocity_mae", "velocity_mae_fitted")


def heldout_pairs(data_dir: Path, pieces: int, textures: int):
    """Test-split chorales and textures on FluidR3_GM (built once, then read from ``data_dir``)."""
    from cadenza.transcription.data import PairSpec, build_pairs, heldout_soundfont, load_pairs

    spec = PairSpec(corpora=("bach-chorales",), pieces_per_split={"test": pieces}, textures_per_split={"test": textures},
                    max_seconds=30.0, programs=(0,), soundfonts=(str(heldout_soundfont()),), augment=False,
                    room=False, seed=1)
    if len(load_pairs(data_dir, "test")) < pieces + textures:
        build_pairs(data_dir, spec, splits=("test",))
    pairs = load_pairs(data_dir, "test")
    chorales = [p for p in pairs if not p[0].stem.startswith("texture")][:pieces]
    return chorales + [p for p in pairs if p[0].stem.startswith("texture")][:textures]


def basic_pitch_runner():
    """A function path -> Score using basic-pitch's ONNX model on one thread, or the reason it cannot run."""
    try:
        sys.modules.setdefault("resampy", types.ModuleType("resampy"))  # only its sonify() uses resampy
        import logging

        logging.getLogger().setLevel(logging.ERROR)
        import onnxruntime
        from basic_pitch import ICASSP_2022_MODEL_PATH
        from basic_pitch.inference import Model, predict
    except Exception as exc:  # noqa: BLE001 - report any reason the peer is unavailable
        return None, f"basic-pitch unavailable: {type(exc).__name__}: {exc}"
    try:
        model = Model(ICASSP_2022_MODEL_PATH)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        onnx_path = Path(str(ICASSP_2022_MODEL_PATH))
        onnx_path = onnx_path if onnx_path.suffix == ".onnx" else onnx_path.with_suffix(".onnx")
        if onnx_path.is_file() and hasattr(model, "model") and isinstance(model.model, onnxruntime.InferenceSession):
            model.model = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
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

    return run, f"basic-pitch {ICASSP_2022_MODEL_PATH.name if hasattr(ICASSP_2022_MODEL_PATH, 'name') else ''}"


def cadenza_runner(name: str | None):
    from cadenza.transcription.inference import load_transcriber, transcribe

    model, tokenizer, info = load_transcriber(name)
    kind = type(model).__name__
    size = sum(p.numel() for p in model.parameters())

    def run(path: Path) -> symusic.Score:
        return transcribe(str(path), model, tokenizer).score

    steps = info.get("step", info.get("steps", "?"))
    return run, f"{name or 'default'}: {kind}, {size / 1e3:.0f} k parameters, {steps} steps"


def main() -> None:
    import torch

    from cadenza.transcription.inference import load_audio, transcription_scores, velocity_errors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CADENZA_TRANSCRIPTION_EVAL",
                                                         str(Path.home() / ".cache" / "cadenza" / "piano-heldout")))
    parser.add_argument("--pieces", type=int, default=16, help="test-split chorales")
    parser.add_argument("--textures", type=int, default=8, help="random test textures")
    parser.add_argument("--model", default=None, help="cadenza's piano model (default: the shipped default)")
    parser.add_argument("--seq2seq", default="transcriber-piano", help="the sequence model to compare")
    parser.add_argument("--no-seq2seq", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="skip basic-pitch")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    pairs = heldout_pairs(Path(args.data), args.pieces, args.textures)
    systems = {"cadenza": cadenza_runner(args.model)}
    if not args.no_seq2seq:
        systems["cadenza-seq2seq"] = cadenza_runner(args.seq2seq)
    peer, peer_note = basic_pitch_runner() if not args.no_peer else (None, "not asked for")
    if peer:
        systems["basic-pitch"] = (peer, peer_note)
    print(f"{len(pairs)} test pieces on FluidR3_GM piano (held out); one thread each")
    for system, (_, note) in systems.items():
        print(f"  {system}: {note}")
    if not peer:
        print(f"  basic-pitch: {peer_note}")
    rows: dict[str, list[dict]] = {s: [] for s in systems}
    timing = {s: 0.0 for s in systems}
    audio_seconds = sum(len(load_audio(a)) for a, _ in pairs) / 16000
    for _, (run, _) in systems.items():  # warm up once (model load, first-call allocations)
        run(pairs[0][0])
    for audio_path, midi_path in pairs:
        reference = symusic.Score(str(midi_path))
        for system, (run, _) in systems.items():
            began = time.perf_counter()
            estimate = run(audio_path)
            timing[system] += time.perf_counter() - began
            scores = {**transcription_scores(reference, estimate), **velocity_errors(reference, estimate)}
            scores["piece"] = audio_path.stem
            rows[system].append(scores)
    print(f"{'system':16s} {'group':9s} {'onset F1':>8s} {'on+off F1':>9s} {'prec':>6s} {'recall':>6s} "
          f"{'vel err':>7s} {'fitted':>6s} {'x real time':>11s}")
    summary = {}
    for system, scores in rows.items():
        speed = audio_seconds / max(timing[system], 1e-9)
        for group, members in (("all", scores), ("chorales", [s for s in scores if not s["piece"].startswith("texture")]),
                               ("textures", [s for s in scores if s["piece"].startswith("texture")])):
            if not members:
                continue
            mean = {k: float(np.mean([s[k] for s in members if s[k] is not None]))
                    if any(s[k] is not None for s in members) else float("nan") for k in METRICS}
            summary.setdefault(system, {})[group] = {**mean, "pieces": len(members)}
            print(f"{system:16s} {group:9s} {mean['onset_f1']:8.3f} {mean['onset_offset_f1']:9.3f} "
                  f"{mean['onset_precision']:6.3f} {mean['onset_recall']:6.3f} {mean['velocity_mae']:7.1f} "
                  f"{mean['velocity_mae_fitted']:6.1f} {speed if group == 'all' else float('nan'):11.1f}")
        summary[system]["speed_x_realtime"] = speed
    if args.json:
        Path(args.json).write_text(json.dumps({"pieces": len(pairs), "audio_seconds": audio_seconds,
                                               "summary": summary, "per_piece": rows}, indent=2))
    ours = summary["cadenza"]["all"]
    line = (f"cadenza piano onset F1 {ours['onset_f1']:.3f}, onset+offset F1 {ours['onset_offset_f1']:.3f}, "
            f"velocity error {ours['velocity_mae_fitted']:.1f} (fitted), "
            f"{summary['cadenza']['speed_x_realtime']:.1f}x real time on one thread")
    if "basic-pitch" in summary:
        theirs = summary["basic-pitch"]["all"]
        line += (f"; basic-pitch {theirs['onset_f1']:.3f} / {theirs['onset_offset_f1']:.3f} at "
                 f"{summary['basic-pitch']['speed_x_realtime']:.1f}x")
    print(line)


if __name__ == "__main__":
    main()
