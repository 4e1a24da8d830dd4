"""``cadenza demo``: the main job end to end on a test-split Bach chorale."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="continue a Bach chorale, render, engrave, transcribe back")
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint (default bach-event)")
    p.add_argument("--seconds", type=float, default=12.0, help="length of the continuation (default 12)")
    p.add_argument("--prompt-bars", type=int, default=4)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from cadenza.apps.demo import run_demo

    result = run_demo(args.out, model=args.model, seconds=args.seconds, prompt_bars=args.prompt_bars, seed=args.seed,
                      temperature=args.temperature, top_p=args.top_p, device=args.device)
    print("files:")
    for label, path in result.files.items():
        if path is not None:
            print(f"  {label:15s} {path}")
    print(f"demo finished in {result.figures['seconds']:.0f} s: onset F1 of the transcription against the "
          f"generated MIDI {result.figures['onset_f1']:.3f}")
    return 0
