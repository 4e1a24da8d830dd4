"""The ``cadenza`` command. Each module in this package with a ``register(subparsers)``
function contributes its subcommands; heavy libraries are imported inside the handlers,
so ``cadenza --help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from cadenza.data.errors import CadenzaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadenza",
        description="Symbolic music generation: tokenize, train, continue, infill, render, transcribe.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import cadenza.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in ("main", "common") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"cadenza.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CadenzaError as exc:
        print(f"cadenza: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cadenza: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
