"""``cadenza ddsp-fit`` and ``cadenza ddsp-velocities``: fit the DDSP synth to a recording of a score."""

from __future__ import annotations

DEFAULT_SAMPLE_RATE = 16000


def register(subparsers) -> None:
    fit = subparsers.add_parser(
        "ddsp-fit", help="fit a DDSP timbre (preset JSON) to a recording of a MIDI file",
        description="Optimize a DDSP preset's parameters so the synth playing NOTES sounds like REFERENCE "
                    "(multi-resolution STFT loss); prints the loss before and after.",
    )
    fit.add_argument("reference", help="recording of the notes (WAV/FLAC), aligned with the MIDI file")
    fit.add_argument("notes", help="the notes played in the recording (MIDI, MusicXML, kern, ABC)")
    fit.add_argument("-o", "--output", required=True, help="where to write the fitted preset (.json)")
    fit.add_argument("--preset", default="strings", help="start from this preset: a name or a .json (default strings)")
    fit.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    fit.add_argument("--seconds", type=float, default=12.0,
                     help="fit on the first SECONDS of the recording (default 12; 0 for all)")
    fit.add_argument("--learning-rate", type=float, default=0.05)
    fit.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE)
    fit.add_argument("--name", help="name of the fitted preset (default: the output file's stem)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.set_defaults(func=run_fit)

    vel = subparsers.add_parser(
        "ddsp-velocities", help="estimate note velocities from a recording of a MIDI file",
        description="Optimize per-note velocities by gradient descent through the DDSP synth so its rendering "
                    "of NOTES matches REFERENCE; writes a MIDI file with the estimated velocities.",
    )
    vel.add_argument("reference", help="recording of the notes (WAV/FLAC), aligned with the MIDI file")
    vel.add_argument("notes", help="the notes played in the recording (MIDI, MusicXML, kern, ABC)")
    vel.add_argument("-o", "--output", required=True, help="file to write: .mid or .musicxml/.mxl")
    vel.add_argument("--preset", default="strings", help="DDSP preset: a name or a fitted .json (default strings)")
    vel.add_argument("--steps", type=int, default=150, help="optimizer steps (default 150)")
    vel.add_argument("--learning-rate", type=float, default=0.1)
    vel.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE)
    vel.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    vel.set_defaults(func=run_velocities)


def _check_steps(steps: int) -> None:
    from cadenza.data.errors import CadenzaError

    if steps < 1:
        raise CadenzaError(f"--steps must be at least 1 (got {steps})")


def run_fit(args) -> int:
    import time
    from pathlib import Path

    from cadenza.data.io import read_score
    from cadenza.rendering.audio import load_audio
    from cadenza.rendering.ddsp import load_preset
    from cadenza.rendering.ddsp_fit import fit_preset
    from cadenza.rendering.output import check_output

    from .common import naming

    _check_steps(args.steps)
    check_output(args.output, "json")
    start_preset = load_preset(args.preset)
    score = read_score(args.notes)
    reference, _ = load_audio(args.reference, sample_rate=args.sample_rate)
    began = time.perf_counter()
    with naming(f"{args.reference} and {args.notes}"):
        preset, before, after = fit_preset(
            reference, score, start_preset, steps=args.steps, sample_rate=args.sample_rate,
            learning_rate=args.learning_rate, seed=args.seed, max_seconds=args.seconds or None, progress=True,
        )
    preset.name = args.name or Path(args.output).stem
    preset.save(args.output)
    print(f"loss before: {before:.4f}")
    print(f"loss after:  {after:.4f}")
    print(f"fitted preset {preset.name!r} from {start_preset.name!r} in {args.steps} steps "
          f"({time.perf_counter() - began:.1f} s, loss x{after / before:.2f}) -> {args.output}")
    return 0


def run_velocities(args) -> int:
    import numpy as np

    from cadenza.data.io import read_score, write_score
    from cadenza.rendering.audio import load_audio
    from cadenza.rendering.ddsp import load_preset
    from cadenza.rendering.ddsp_fit import estimate_velocities
    from cadenza.rendering.output import MUSIC, check_output

    from .common import naming

    _check_steps(args.steps)
    check_output(args.output, *MUSIC)
    preset = load_preset(args.preset)
    score = read_score(args.notes)
    reference, _ = load_audio(args.reference, sample_rate=args.sample_rate)
    with naming(f"{args.reference} and {args.notes}"):
        result = estimate_velocities(reference, score, preset, steps=args.steps, sample_rate=args.sample_rate,
                                     learning_rate=args.learning_rate, seed=args.seed, progress=True)
    write_score(result, args.output)
    velocities = np.array([n.velocity for t in result.tracks if not t.is_drum for n in t.notes])
    print(f"estimated {len(velocities)} velocities (min {velocities.min()}, mean {velocities.mean():.1f}, "
          f"max {velocities.max()}) with preset {preset.name!r} -> {args.output}")
    return 0
