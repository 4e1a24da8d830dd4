"""``cadenza render FILE``: audio, a piano roll, an engraved score and an HTML example sheet."""

from __future__ import annotations

from pathlib import Path

SYNTHS = ("fluidsynth", "ddsp")  # cadenza.rendering.audio.SYNTHS, named here so --help loads no numpy


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "render", help="render a music file to audio (FluidSynth or DDSP), a piano roll, an engraved score, "
                       "an HTML example sheet",
        description="Render any file cadenza reads (MIDI, MusicXML, kern, ABC). With no output option, "
                    "writes FILE's name with .wav in the current directory.")
    p.add_argument("file")
    p.add_argument("-o", "--output", metavar="OUT.wav", help="audio file to write (.wav or .flac)")
    p.add_argument("--synth", choices=SYNTHS, default="fluidsynth", help="synthesizer (default fluidsynth)")
    p.add_argument("--soundfont", metavar="SF2", help="SoundFont for FluidSynth (.sf2/.sf3; default "
                   "$CADENZA_SOUNDFONT, else pretty_midi's TimGM6mb.sf2)")
    p.add_argument("--preset", default=None, help="DDSP instrument preset name or fitted preset .json "
                   "(default strings)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="samples per second (default 44100 for fluidsynth, 16000 for ddsp)")
    p.add_argument("--stereo", action="store_true", help="write two channels (default mono)")
    p.add_argument("--tail", type=float, default=1.0, help="seconds of release after the last note (fluidsynth)")
    p.add_argument("--pianoroll", metavar="OUT.png", help="write a piano-roll picture")
    p.add_argument("--axis", choices=("seconds", "bars"), default="seconds", help="piano-roll time axis")
    p.add_argument("--boundary", type=float, default=None, metavar="SECONDS",
                   help="mark where a prompt ends and its continuation begins (piano roll and sheet)")
    p.add_argument("--score", metavar="OUT.svg", help="write the engraved score as SVG; a score longer than a "
                   "page is written as OUT-1.svg, OUT-2.svg, ...")
    p.add_argument("--sheet", metavar="OUT.html", help="write a self-contained HTML example sheet")
    p.add_argument("--allow-fallback", action="store_true",
                   help="without the FluidSynth library, render with symusic's built-in synthesizer")
    p.add_argument("--index", type=int, default=0, help="tune number in a multi-tune ABC file (0-based)")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from cadenza.data.errors import CadenzaError
    from cadenza.data.io import read_score
    from cadenza.rendering.output import check_output

    source = Path(args.file)
    if args.preset is not None and args.synth != "ddsp":
        raise CadenzaError("--preset applies to --synth ddsp; FluidSynth takes --soundfont")
    if args.soundfont is not None and args.synth != "fluidsynth":
        raise CadenzaError("--soundfont applies to --synth fluidsynth; DDSP takes --preset")
    output = args.output
    if not (output or args.pianoroll or args.score or args.sheet):
        output = source.with_suffix(".wav").name
    if output:
        check_output(output, "audio")
    for path, kind, option in ((args.pianoroll, "picture", "--pianoroll"), (args.score, "engraving", "--score"),
                               (args.sheet, "sheet", "--sheet")):
        if path:
            check_output(path, kind, option=option)

    score = read_score(source, index=args.index)
    audio = None
    if output or args.sheet:
        started = time.perf_counter()
        audio, sample_rate = synthesize(score, args, args.sample_rate)
        elapsed = time.perf_counter() - started
        seconds = len(audio) / sample_rate
    if output:
        from cadenza.rendering.audio import write_audio

        write_audio(output, audio, sample_rate)
        channels = "stereo" if audio.ndim == 2 else "mono"
        print(f"wrote {output} ({seconds:.1f} s, {sample_rate} Hz, {channels}, {args.synth}; "
              f"rendered in {elapsed:.2f} s, {seconds / max(elapsed, 1e-9):.0f}x real time)")
    if args.pianoroll:
        from cadenza.rendering.pianoroll import plot_pianoroll

        plot_pianoroll(score, args.pianoroll, boundary_seconds=args.boundary, axis=args.axis, title=source.name)
        print(f"wrote {args.pianoroll}")
    svgs = None
    if args.score:
        from cadenza.rendering.score import svg_pages, write_svg_pages

        svgs = svg_pages(score, title=source.stem)
        pages = write_svg_pages(svgs, args.score)
        print(f"wrote {', '.join(map(str, pages))} ({len(pages)} page{'s' if len(pages) != 1 else ''})")
    if args.sheet:
        from cadenza.rendering.sheet import Rendering, SheetEntry, write_sheet

        label = "FluidSynth" if args.synth == "fluidsynth" else f"DDSP ({args.preset or 'strings'})"
        entry = SheetEntry(source.stem, score, [Rendering(label, audio, sample_rate)],
                           boundary_seconds=args.boundary, midi_name=source.with_suffix(".mid").name,
                           score_pages=svgs)
        write_sheet(args.sheet, source.name, entry, metadata={"source": str(source), "synthesizer": label})
        print(f"wrote {args.sheet}")
    return 0


def synthesize(score, args, sample_rate: int | None):
    """(audio, sample rate) from the chosen synthesizer; the fallback's notice becomes one line on stderr."""
    import sys
    import warnings

    from cadenza.rendering.audio import synthesize

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = synthesize(score, args.synth, sample_rate=sample_rate, stereo=args.stereo,
                            soundfont=args.soundfont, preset=args.preset, tail=args.tail,
                            allow_fallback=args.allow_fallback)
    for warning in caught:
        print(f"cadenza: note: {warning.message}", file=sys.stderr)
    return result
