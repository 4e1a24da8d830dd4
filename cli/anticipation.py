"""``cadenza infill`` and ``cadenza accompany``: anticipatory generation around given music."""

from __future__ import annotations

from .common import add_device_arg, add_seed_arg, naming


def _sampling_args(p) -> None:
    p.add_argument("-o", "--output", required=True, help="output file: .mid, .musicxml/.mxl or .wav/.flac (the extension decides)")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint directory "
                   "(default: the shipped anticipatory model)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--index", type=int, default=0, help="tune number in a multi-tune ABC file")
    p.add_argument("--rests", action="store_true",
                   help="let a voice rest (default: in a texture of several voices a voice that stops is taken up "
                        "again at once, SamplingConstraints.fill_voices)")
    add_seed_arg(p)
    add_device_arg(p)


def register(subparsers) -> None:
    p = subparsers.add_parser("infill", help="regenerate a time span of a piece, given the music around it")
    p.add_argument("piece")
    p.add_argument("--start", type=float, required=True, help="span start in seconds")
    p.add_argument("--end", type=float, required=True, help="span end in seconds")
    p.add_argument("--no-join", action="store_true",
                   help="do not hold the span's last notes within a fifth of the next top-voice note (nor resample)")
    _sampling_args(p)
    p.set_defaults(func=run_infill)
    a = subparsers.add_parser("accompany", help="keep a melody and generate the other parts")
    a.add_argument("piece")
    group = a.add_mutually_exclusive_group(required=True)
    group.add_argument("--melody-program", type=int, help="GM program (0-127) of the melody's track(s)")
    group.add_argument("--melody-track", type=int, help="track index of the melody (0-based, as 'cadenza info' lists)")
    a.add_argument("--prompt-seconds", type=float, default=0.0,
                   help="keep this much of the other parts as a prompt (default 0)")
    a.add_argument("--end", type=float, default=None, help="stop at this time (default: the melody's end)")
    a.add_argument("--above-melody", action="store_true",
                   help="let the new parts rise above the melody (default: when the melody is the top part, "
                        "no new note starts at or above the melody note it sounds against)")
    a.add_argument("--dissonance-penalty", type=float, default=2.0,
                   help="logit penalty on a 2nd, tritone or 7th against a melody note struck at the same time "
                        "(default 2: about 7 times less likely; 0 switches the guard off)")
    a.add_argument("--hold-bonus", type=float, default=4.5,
                   help="where the melody holds a note two beats or more, how strongly the parts hold a chord "
                        "with it (a logit bonus; default 4.5; 0 lets them move on)")
    _sampling_args(a)
    a.set_defaults(func=run_accompany)


def _load(args):
    from cadenza.data.io import read_score
    from cadenza.rendering.output import MUSIC, check_output
    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.device import resolve_device
    from cadenza.symbolic.registry import DEFAULT_INFILL_MODEL, resolve_model

    from cadenza.data.errors import CadenzaError

    check_output(args.output, *MUSIC, "audio")
    score = read_score(args.piece, index=args.index)
    model, tokenizer, info = load_checkpoint(resolve_model(args.model or DEFAULT_INFILL_MODEL),
                                             device=resolve_device(args.device))
    if not tokenizer.takes_controls:
        raise CadenzaError(f"{args.model}: infilling and accompaniment need an anticipatory model, "
                           f"this one uses {tokenizer.name}")
    return score, model, tokenizer, info


def _sampling(args, info) -> dict:
    return {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed,
            "context": int(info.get("settings", {}).get("seq_len", 1024))}


def _rests(args, constraints):
    """``constraints`` (the defaults when None) with ``fill_voices`` off when ``--rests`` asks."""
    import dataclasses

    from cadenza.tokenizers.grammar import SamplingConstraints

    constraints = constraints or SamplingConstraints()
    return dataclasses.replace(constraints, fill_voices=None) if args.rests else constraints


def _write(result, args, what: str) -> int:
    from cadenza.rendering.output import write_output

    path = write_output(result.score, args.output)
    print(f"{what}: {result.generated_events} new notes; wrote {path}")
    return 0


def run_infill(args) -> int:
    from cadenza.symbolic.anticipation_tasks import infill

    score, model, tokenizer, info = _load(args)
    with naming(args.piece):
        result = infill(model, tokenizer, score, args.start, args.end, join=not args.no_join,
                        constraints=_rests(args, None), **_sampling(args, info))
    return _write(result, args, f"infilled {args.start:g}-{args.end:g} s")


def run_accompany(args) -> int:
    from cadenza.symbolic.anticipation_tasks import accompany
    from cadenza.tokenizers.grammar import SamplingConstraints

    constraints = SamplingConstraints(under_melody=not args.above_melody,
                                      melody_dissonance_penalty=args.dissonance_penalty or None,
                                      melody_hold_bonus=args.hold_bonus or None)
    score, model, tokenizer, info = _load(args)
    with naming(args.piece):
        result = accompany(model, tokenizer, score, args.melody_program, melody_track=args.melody_track,
                           prompt_seconds=args.prompt_seconds, end=args.end, constraints=_rests(args, constraints),
                           **_sampling(args, info))
    what = f"track {args.melody_track}" if args.melody_track is not None else f"program {args.melody_program}"
    return _write(result, args, f"accompanied the melody of {what}")
