"""``cadenza continue PROMPT -o OUT.mid [--model NAME|DIR]``: continue a piece with a Music Transformer."""

from __future__ import annotations

from pathlib import Path

from .common import add_device_arg, add_seed_arg, naming


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "continue", help="continue a music file with a Music Transformer (shipped or trained)",
        description="Sample continuations of PROMPT (any music file) from a shipped model or a checkpoint. "
                    "Each output holds the "
                    "prompt (as the model's tokenizer sees it) followed by new music. Sampling follows the "
                    "scheme's grammar, so every output decodes. With --num-samples N > 1 the outputs are "
                    "OUT-1.mid ... OUT-N.mid.",
    )
    p.add_argument("prompt", help="the music to continue (MIDI, MusicXML, kern, ABC)")
    p.add_argument("-o", "--output", required=True,
                   help="output file: .mid, .musicxml/.mxl or .wav/.flac (the extension decides)")
    p.add_argument("--model", "--checkpoint", dest="model", default=None,
                   help="shipped model name (see 'cadenza models') or a checkpoint directory (default bach-event)")
    p.add_argument("--index", type=int, default=0, help="tune number in a multi-tune ABC file")
    p.add_argument("--musicxml", action="store_true", help="also write each continuation as MusicXML")
    p.add_argument("--wav", action="store_true", help="also render each continuation to WAV (FluidSynth)")
    p.add_argument("--sheet", default=None, help="write an HTML example sheet comparing prompt and continuations")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--tokens", type=int, help="new tokens to generate (default 512)")
    length.add_argument("--seconds", type=float, help="seconds of music to add")
    length.add_argument("--bars", type=int, help="bars to add (schemes with bars: remi)")
    p.add_argument("--num-samples", type=int, default=1, help="continuations to sample (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 is greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the K most likely ids")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95; 1 disables)")
    p.add_argument("--max-tokens", type=int, default=8192,
                   help="cap on new tokens for --seconds/--bars (default 8192)")
    p.add_argument("--key-prior", type=float, default=None,
                   help="logits taken off notes outside the prompt's scale (default 1: e times less likely; 0: none)")
    p.add_argument("--parallel-penalty", type=float, default=None,
                   help="logits taken off a note that would move in parallel fifths or octaves with another voice "
                        "(Event and REMI; default 6: about 400 times less likely; 0: none)")
    p.add_argument("--phrase-bonus", type=float, default=None,
                   help="logits added to the wait that holds a root-position triad two beats on a beat, once the "
                        "phrase has run six beats (default 1.5: about 4.5 times likelier; 0: none)")
    p.add_argument("--nucleus-timing", action="store_true",
                   help="let top-p cut time shifts, positions and durations too (default: it cuts only what is "
                        "played, so phrase endings' long notes stay possible)")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--prompt-bars", type=int, default=None,
                     help="prompt the model with the last N bars of PROMPT (default: as much of its end as the "
                          "model's context holds); each output still holds all of PROMPT")
    cut.add_argument("--prompt-seconds", type=float, default=None, help="prompt the model with the last S seconds of PROMPT")
    add_seed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=run)


def _constraints(args):
    """The default sampling constraints, with the key prior, parallel penalty, phrase bonus and nucleus the
    command line asks for."""
    import dataclasses

    from cadenza.tokenizers.grammar import SamplingConstraints

    given = {name: value or None for name, value in (("key_prior", args.key_prior),
                                                     ("parallel_penalty", args.parallel_penalty),
                                                     ("phrase_bonus", getattr(args, "phrase_bonus", None)))
             if value is not None}
    if getattr(args, "nucleus_timing", False):
        given["timing_outside_nucleus"] = False
    return dataclasses.replace(SamplingConstraints(), **given)


def _output_paths(output: str, count: int) -> list[Path]:
    path = Path(output)
    if count == 1:
        return [path]
    suffix = path.suffix
    return [path.with_name(f"{path.stem}-{i}{suffix}") for i in range(1, count + 1)]


def run(args) -> int:
    import time

    import torch

    from cadenza.data.errors import CadenzaError
    from cadenza.data.io import read_score
    from cadenza.rendering.output import MUSIC, check_output, write_output
    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.device import resolve_device
    from cadenza.symbolic.registry import DEFAULT_MODEL, resolve_model
    from cadenza.symbolic.sampling import continue_score

    if args.num_samples < 1:
        raise CadenzaError("--num-samples must be at least 1")
    if args.tokens is None and args.seconds is None and args.bars is None:
        args.tokens = 512
    check_output(args.output, *MUSIC, "audio")
    if args.sheet:
        check_output(args.sheet, "sheet", option="--sheet")
    device = resolve_device(args.device)
    prompt = read_score(args.prompt, index=args.index)
    model_dir = resolve_model(args.model or DEFAULT_MODEL)
    model, tokenizer, info = load_checkpoint(model_dir, device=device)
    if tokenizer is None:
        raise CadenzaError(f"{model_dir}: the checkpoint names no tokenizer")
    started = time.perf_counter()
    with torch.inference_mode(), naming(args.prompt):
        scores = continue_score(model, tokenizer, prompt, tokens=args.tokens, seconds=args.seconds, bars=args.bars,
                                num_samples=args.num_samples, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, seed=args.seed, max_tokens=args.max_tokens,
                                prompt_bars=args.prompt_bars, prompt_seconds=args.prompt_seconds,
                                constraints=_constraints(args))
    elapsed = time.perf_counter() - started
    try:  # the prompt's notes as the scheme keeps them
        prompt_notes = tokenizer.decode(tokenizer.prompt_ids(prompt)).note_num()
    except CadenzaError:  # longer than the scheme's ids hold (anticipatory: 100 s); the model saw its end only
        prompt_notes = prompt.note_num()
    paths = _output_paths(args.output, len(scores))
    for path, score in zip(paths, scores):
        write_output(score, path)
        seconds = score.to("second").end()
        print(f"wrote {path}: {score.note_num()} notes ({score.note_num() - prompt_notes} new), {seconds:.1f} s")
        if args.musicxml:
            from cadenza.data.io import write_musicxml

            print(f"wrote {write_musicxml(score, path.with_suffix('.musicxml'))}")
    if args.wav or args.sheet:
        _audio_and_sheet(args, prompt, scores, paths, model_dir.name)
    print(f"{len(scores)} continuation(s) of {args.prompt} in {elapsed:.1f} s on {device} "
          f"({tokenizer.name} tokens, seed {args.seed})")
    return 0


def _audio_and_sheet(args, prompt, scores, paths, model_name: str) -> None:
    from cadenza.rendering.audio import write_audio
    from cadenza.rendering.fluidsynth import render
    from cadenza.rendering.sheet import write_continuation_sheet

    rate = 44100
    audio = [render(score, sample_rate=rate) for score in scores]
    if args.wav:
        for path, samples in zip(paths, audio):
            print(f"wrote {write_audio(path.with_suffix('.wav'), samples, rate)}")
    if args.sheet:
        sheet = write_continuation_sheet(args.sheet, f"Continuations of {Path(args.prompt).name}", prompt, scores,
                                         model=model_name, metadata={"seed": args.seed,
                                                                     "temperature": args.temperature,
                                                                     "top-p": args.top_p},
                                         audio=audio, sample_rate=rate)
        print(f"wrote {sheet}")
