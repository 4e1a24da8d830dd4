"""``cadenza transcribe`` and the commands that make, train and evaluate the transcriber."""

from __future__ import annotations

from .common import add_device_arg, add_seed_arg


def register(subparsers) -> None:
    p = subparsers.add_parser("transcribe", help="audio (WAV, FLAC, OGG, MP3) to MIDI (piano by default)")
    p.add_argument("audio", help="recording to transcribe")
    p.add_argument("-o", "--out", required=True, help="file to write: .mid or .musicxml/.mxl")
    p.add_argument("--model", default=None,
                   help="a shipped model's name or a checkpoint directory (default: the framewise piano model; "
                        "transcriber-piano is the MT3-style sequence model)")
    p.add_argument("--events", default=None, help="also write the MT3 event ids, one line per 2.048 s segment")
    p.add_argument("--batch-segments", type=int, default=32, help="2.048 s segments decoded at once (bounds memory)")
    add_device_arg(p)
    p.set_defaults(func=run_transcribe)

    p = subparsers.add_parser("transcription-data", help="render cached audio/MIDI pairs for transcription")
    p.add_argument("--out", required=True, help="directory for {split}/*.flac + *.mid")
    p.add_argument("--corpus", action="append", default=None,
                   help="source corpus (repeatable; default bach-chorales, palestrina, classical and folk)")
    p.add_argument("--pieces", type=int, nargs=3, default=[300, 10, 20], metavar=("TRAIN", "VALID", "TEST"),
                   help="pieces per split")
    p.add_argument("--textures", type=int, nargs=3, default=[150, 5, 0], metavar=("TRAIN", "VALID", "TEST"),
                   help="random textures per split")
    p.add_argument("--seconds", type=float, default=20.0, help="longest excerpt per example")
    p.add_argument("--renders", type=int, default=1, help="examples per piece (excerpt, SoundFont and room vary)")
    p.add_argument("--soundfont", action="append", default=None,
                   help="SoundFont, or a folder of per-key piano samples, to render with (repeatable; default the training SoundFonts and the sample set)")
    p.add_argument("--heldout", action="store_true",
                   help="render with the held-out SoundFont (FluidR3_GM), piano, no augmentation: an evaluation set")
    p.add_argument("--no-augment", action="store_true", help="no gain/EQ/reverb/noise augmentation")
    p.add_argument("--no-room", action="store_true",
                   help="General MIDI's reverb/chorus sends and no detuning instead of random ones")
    p.add_argument("--ensemble", action="store_true",
                   help="multi-instrument pairs: each voice its own General MIDI program (piano, organ, guitar, "
                        "strings, brass, winds), labeled with it, for the sequence model")
    add_seed_arg(p)
    p.set_defaults(func=run_data)

    p = subparsers.add_parser("transcription-train", help="train a transcriber on cached pairs")
    p.add_argument("data", help="directory made by `cadenza transcription-data`")
    p.add_argument("--out", required=True, help="checkpoint directory (resumed when it holds a run)")
    p.add_argument("--kind", choices=["framewise", "seq2seq"], default=None,
                   help="framewise piano model (onsets, frames, offsets, velocities; the default for a new run) or "
                        "the MT3-style sequence model; a resumed run or --init follows its checkpoint")
    p.add_argument("--size", choices=["cpu", "medium", "large", "t5-small", "debug"], default="cpu",
                   help="framewise: cpu (0.5 M parameters), medium (1.8 M), large (GPU); t5-small (MT3's "
                        "sequence model); debug")
    p.add_argument("--window-frames", type=int, default=200, help="framewise training window (16 ms frames)")
    p.add_argument("--n-mels", type=int, default=None, help="mel bins (cpu: 128, MT3: 512)")
    p.add_argument("--velocity-bins", type=int, default=1, help="1 (on/off, MT3) .. 127")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=None, help="windows per step (framewise 8, seq2seq 16)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this wall time")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start a new run from these weights (a shipped model's name or a checkpoint directory); "
                        "its size and codec replace --size, --n-mels and --velocity-bins")
    p.add_argument("--long-context", type=int, default=0, metavar="CHANNELS",
                   help="framewise: add a dilated temporal stack of this many channels that sees 2.5 s either side "
                        "(with --init, the loaded model grows by it and starts out computing what it did)")
    p.add_argument("--half", action="store_true", help="store the final weights as float16 (small to ship)")
    p.add_argument("--quiet-weight", type=float, default=0.0,
                   help="framewise: weight each onset in the loss by 1 + Q (1 - velocity / 127), so quiet notes count more")
    p.add_argument("--timbre-db", type=float, default=0.0, metavar="DB",
                   help="framewise: colour each training window's spectrum with a random smooth equaliser curve of "
                        "about +-DB dB (a tilt, resonances, notches), so the model hears more pianos than it was given")
    p.add_argument("--pitch-shift", type=int, default=0, metavar="N",
                   help="framewise: transpose each training window by up to N semitones (audio resampled, notes "
                        "moved with it), so each key is also heard through its neighbours' strings and samples")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="framewise: what training steps compute in (auto: bf16 autocast on CUDA and on CPUs with AMX, "
                        "about 2x faster there; float32 elsewhere)")
    p.add_argument("--leg-steps", type=int, default=None,
                   help="end this leg after this many more steps, with a checkpoint (the run resumes from it)")
    add_device_arg(p)
    add_seed_arg(p)
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("transcription-tune",
                              help="choose a framewise model's decoding thresholds on a valid split (written to its config)")
    p.add_argument("data", help="directory made by `cadenza transcription-data`")
    p.add_argument("--model", required=True, help="framewise checkpoint directory to tune")
    p.add_argument("--split", default="valid", choices=["train", "valid"], help="never the test split")
    p.add_argument("--limit", type=int, default=None, help="tune on at most this many pieces")
    p.set_defaults(func=run_tune)

    p = subparsers.add_parser("transcription-eval", help="onset / onset+offset / per-program F1 with mir_eval")
    p.add_argument("data", help="directory made by `cadenza transcription-data`")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default=None, help="a shipped model's name or a checkpoint directory "
                                                  "(default: the framewise piano model)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most this many pieces")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_device_arg(p)
    p.set_defaults(func=run_eval)


def _device(name: str):
    try:
        from cadenza.symbolic.device import resolve_device
    except ImportError:
        import torch

        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(name)
    return resolve_device(name)


def run_transcribe(args) -> int:
    import sys

    from cadenza.data.io import write_score
    from cadenza.rendering.output import MUSIC, check_output
    from cadenza.transcription.inference import load_transcriber, transcribe

    check_output(args.out, *MUSIC)
    device = _device(args.device)
    model, tokenizer, _ = load_transcriber(args.model, device=device)
    result = transcribe(args.audio, model, tokenizer, batch_segments=args.batch_segments, device=device,
                        progress=sys.stderr.isatty())
    write_score(result.score, args.out)
    if args.events:
        from cadenza.data.atomic import write_text_atomic

        ids = result.tokens or tokenizer.encode_segments(result.score)
        write_text_atomic(args.events, "".join(" ".join(map(str, seg.tolist())) + "\n" for seg in ids))
    for message in result.messages:
        print(message)
    print(f"{args.out}: {result.notes} notes from {result.seconds:.1f} s of audio ({result.segments} segments)")
    return 0


def run_data(args) -> int:
    from cadenza.transcription.data import PairSpec, build_pairs, heldout_soundfont

    splits = ("train", "valid", "test")
    spec = PairSpec(
        corpora=tuple(args.corpus or PairSpec.corpora),
        pieces_per_split=dict(zip(splits, args.pieces)),
        textures_per_split=dict(zip(splits, args.textures)),
        max_seconds=args.seconds,
        renders_per_piece=args.renders,
        soundfonts=tuple(args.soundfont or ()),
        augment=not args.no_augment,
        room=not args.no_room,
        ensemble=args.ensemble,
        seed=args.seed,
    )
    if args.heldout:
        spec.soundfonts = (str(heldout_soundfont()),)
        spec.programs = (0,)
        spec.augment = False
        spec.room = False
    wanted = tuple(s for s in splits if spec.pieces_per_split.get(s) or spec.textures_per_split.get(s))
    report = build_pairs(args.out, spec, splits=wanted)
    for split, row in report["splits"].items():
        print(f"{split:5s}: {row['examples']} examples, {row['seconds'] / 60:.1f} min, {row['notes']} notes")
    if report["failed"]:
        print(f"{len(report['failed'])} source pieces failed, e.g. {report['failed'][0][0]}: {report['failed'][0][1]}")
    print(f"wrote {args.out} with SoundFonts {', '.join(report['soundfonts'])}")
    return 0


def run_train(args) -> int:
    import torch

    from cadenza.data.errors import CadenzaError
    from cadenza.transcription.data import load_pairs

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pairs = load_pairs(args.data, "train")
    if not pairs:
        raise CadenzaError(f"{args.data}: no training pairs (run `cadenza transcription-data --out {args.data}`)")
    if (args.kind or _checkpoint_kind(args)) == "framewise":
        return _train_framewise(args, pairs)
    return _train_seq2seq(args, pairs)


def _checkpoint_kind(args) -> str:
    """The kind of the run being resumed, or of the --init weights; framewise for a new run."""
    import json
    from pathlib import Path

    from cadenza.symbolic.registry import resolve_model

    source = Path(args.out) if not args.no_resume and (Path(args.out) / "config.json").exists() else None
    if source is None and args.init:
        source = resolve_model(args.init)
    if source is None:
        return "framewise"
    return "framewise" if json.loads((source / "config.json").read_text()).get("kind") == "framewise" else "seq2seq"


def _train_framewise(args, pairs) -> int:
    import shlex
    import sys
    from pathlib import Path

    from cadenza.data.errors import CadenzaError
    from cadenza.transcription.framewise import FramewiseTranscriber, grow_long_context
    from cadenza.transcription.framewise_train import (FramewiseSettings, FrameWindowSampler, new_framewise,
                                                       train_framewise)
    from cadenza.transcription.inference import load_transcriber

    if args.size == "t5-small":
        raise CadenzaError("--size t5-small is the sequence model's; use --kind seq2seq")
    out = Path(args.out)
    initialized_from = None
    resuming = not args.no_resume and (out / "training_state.json").exists()
    if resuming:  # the run's own architecture and origin, whatever --size, --init and --long-context say now
        model, _, earlier = load_transcriber(out)
        initialized_from = earlier.get("initialized_from")
    elif args.init:
        model, _, earlier = load_transcriber(args.init)
        if not isinstance(model, FramewiseTranscriber):
            raise CadenzaError(f"{args.init}: not a framewise transcriber (use --kind seq2seq to continue it)")
        initialized_from = {"model": str(args.init), "step": earlier.get("step")}
    else:
        model = new_framewise("cpu" if args.size == "cpu" else args.size)
    if args.long_context and not resuming:
        model = grow_long_context(model, args.long_context)
    sampler = FrameWindowSampler(pairs, model.config.hop, args.window_frames, args.seed)
    print(f"{len(pairs)} examples, {sampler.seconds() / 60:.1f} min of audio; "
          f"framewise model {model.num_parameters() / 1e3:.0f} k parameters")
    batch = args.batch_size or 8
    settings = FramewiseSettings(steps=args.steps, batch_size=batch, window_frames=args.window_frames,
                                 learning_rate=args.lr, warmup=args.warmup, seed=args.seed, max_minutes=args.max_minutes,
                                 quiet_weight=args.quiet_weight, timbre_db=args.timbre_db,
                                 pitch_shift=args.pitch_shift,
                                 leg_steps=args.leg_steps, precision=args.precision)
    info = {"data": str(args.data), "train_examples": len(pairs), "train_audio_seconds": round(sampler.seconds(), 1),
            "seed": args.seed, "batch_size": batch,
            "training_command": "cadenza " + " ".join(shlex.quote(a) for a in sys.argv[1:])}
    if initialized_from:
        info["initialized_from"] = initialized_from
    summary = train_framewise(model, sampler, out, settings, device=_device(args.device), resume=not args.no_resume,
                              info=info, half=args.half)
    last = summary["last"] or {}
    print(f"trained {summary['steps']} steps in {summary['seconds'] / 60:.1f} min, onset loss "
          f"{last.get('onset', float('nan')):.4f}, frame loss {last.get('frame', float('nan')):.4f}; checkpoint in {out}")
    return 0


def _train_seq2seq(args, pairs) -> int:
    from pathlib import Path

    from cadenza.tokenizers.mt3 import MT3Tokenizer
    from cadenza.transcription.inference import load_transcriber, save_transcriber
    from cadenza.transcription.seq2seq_train import TrainSettings, WindowSampler, new_model, train

    args.batch_size = args.batch_size or 16
    args.size = "cpu" if args.size in ("medium", "large") else args.size
    out = Path(args.out)
    initialized_from = None
    if not args.no_resume and (out / "training_state.json").exists():
        model, tokenizer, earlier = load_transcriber(out)
        initialized_from = earlier.get("initialized_from")
    elif args.init:
        from cadenza.symbolic.registry import resolve_model

        model, tokenizer, earlier = load_transcriber(resolve_model(args.init))
        initialized_from = {"model": str(args.init), "steps": earlier.get("steps"),
                            "heldout_eval": earlier.get("heldout_eval")}
    else:
        tokenizer = MT3Tokenizer(num_velocity_bins=args.velocity_bins)
        model = new_model(tokenizer, args.size, args.n_mels)
    sampler = WindowSampler(pairs, tokenizer, model.config.segment_frames, model.config.max_target_len, args.seed)
    print(f"{len(pairs)} examples, {sampler.seconds() / 60:.1f} min of audio; "
          f"model {model.num_parameters() / 1e6:.2f} M parameters")
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, warmup=args.warmup, seed=args.seed,
                             max_minutes=args.max_minutes)
    info = {"data": str(args.data), "train_examples": len(pairs), "train_audio_seconds": sampler.seconds(),
            "seed": args.seed, "batch_size": args.batch_size}
    if initialized_from:
        info["initialized_from"] = initialized_from
    summary = train(model, tokenizer, sampler, out, settings, device=_device(args.device),
                    resume=not args.no_resume, info=info)
    if args.half:
        save_transcriber(out, model, tokenizer, {**info, "steps": summary["steps"], "loss": summary["loss"],
                                                 "train_seconds": summary["seconds"],
                                                 "history": summary["history"]}, half=True)
    print(f"trained {summary['steps']} steps in {summary['seconds'] / 60:.1f} min, loss {summary['loss']:.3f}; "
          f"checkpoint in {out}")
    return 0


def run_tune(args) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from cadenza.data.atomic import write_text_atomic
    from cadenza.data.errors import CadenzaError
    from cadenza.transcription.data import load_pairs
    from cadenza.transcription.framewise import FramewiseTranscriber
    from cadenza.transcription.framewise_train import decode_label, tune_decoding
    from cadenza.transcription.inference import load_transcriber

    torch.set_num_threads(1)
    pairs = load_pairs(args.data, args.split)[: args.limit]
    if not pairs:
        raise CadenzaError(f"{args.data}: no {args.split} pairs")
    model, _, _ = load_transcriber(args.model)
    if not isinstance(model, FramewiseTranscriber):
        raise CadenzaError(f"{args.model}: not a framewise transcriber (only its decoding has thresholds)")
    best, table = tune_decoding(model, pairs)
    path = Path(args.model) / "config.json"
    config = json.loads(path.read_text())
    config["decode"] = asdict(best)
    chosen = table[decode_label(best)]
    config.setdefault("info", {})["decode_tuning"] = {"split": args.split, "pieces": len(pairs), **chosen}
    write_text_atomic(path, json.dumps(config, indent=2))
    confirmed = (f", weaker onsets from {best.confirmed_onset_threshold} where the frame head reaches "
                 f"{best.confirm_frame_threshold}" if best.confirmed_onset_threshold < best.onset_threshold else "")
    confirmed += f", notes released after {best.release_frames} frames below it" if best.release_frames > 1 else ""
    print(f"{len(pairs)} {args.split} pieces: onset threshold {best.onset_threshold}, frame {best.frame_threshold}, "
          f"offset {best.offset_threshold}{confirmed}: onset F1 {chosen['onset_f1']:.3f}, onset+offset F1 "
          f"{chosen['onset_offset_f1']:.3f}; written to {path}")
    return 0


def run_eval(args) -> int:
    from cadenza.data.errors import CadenzaError
    from cadenza.transcription.data import load_pairs
    from cadenza.transcription.inference import evaluate, load_transcriber

    from .common import print_json

    pairs = load_pairs(args.data, args.split)[: args.limit]
    if not pairs:
        raise CadenzaError(f"{args.data}: no {args.split} pairs")
    model, tokenizer, _ = load_transcriber(args.model, device=_device(args.device))
    report = evaluate(model, tokenizer, pairs)
    if args.json:
        print_json(report)
        return 0
    for row in report["per_piece"]:
        print(f"  {row['piece'][:40]:40s} onset F1 {row['onset_f1']:.3f}  onset+offset F1 {row['onset_offset_f1']:.3f}")
    for program, row in report["programs"].items():
        print(f"  program {program:3d}: onset+offset F1 {row['onset_offset_f1']:.3f} ({row['pieces']} pieces)")
    print(f"{report['pieces']} pieces, {report['audio_seconds']:.0f} s of audio at "
          f"{report['speed_x_realtime']:.1f}x real time")
    print(f"onset F1 {report['onset_f1']:.3f}  onset+offset F1 {report['onset_offset_f1']:.3f}  "
          f"(precision {report['onset_precision']:.3f}, recall {report['onset_recall']:.3f})")
    return 0
