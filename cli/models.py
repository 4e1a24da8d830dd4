"""``cadenza models``: the models that ship with cadenza and their figures."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list shipped models with their figures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


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
