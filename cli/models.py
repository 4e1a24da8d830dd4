"""``cadenza models``: the models that ship with cadenza and their figures."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list shipped models with their figures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    register_ship(subparsers)


def run(args) -> int:
    from cadenza.symbolic.registry import MODELS_DIR, list_models

    from .common import print_json

    entries = list_models()
    if args.json:
        print_json([{"name": e.name, "kind": e.kind, "scheme": e.scheme, "size_mb": round(e.size_mb, 2),
                     "path": str(e.path), "info": e.info} for e in entries])
        return 0
    if not entries:
        print(f"no models in {MODELS_DIR}")
        return 0
    for entry in entries:
        print(entry.summary())
    return 0


def register_ship(subparsers) -> None:
    p = subparsers.add_parser("ship-model", help="copy a finished training run into the shipped models (fp16)")
    p.add_argument("run", help="the training run's output directory")
    p.add_argument("--name", required=True, help="model name, e.g. bach-event")
    p.add_argument("--command", required=True, help="the exact command that trained it (recorded)")
    p.set_defaults(func=run_ship)


def run_ship(args) -> int:
    from cadenza.symbolic.registry import list_models
    from cadenza.symbolic.shipping import ship_model

    path = ship_model(args.run, args.name, command=args.command)
    entry = next(e for e in list_models() if e.path == path)
    print(f"shipped {entry.summary()}")
    return 0
