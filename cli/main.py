"""The ``cadenza`` command.

The command list is the table ``COMMANDS`` below: each entry names the subcommands a module
of this package registers with its ``register(subparsers)`` function. Modules import their
heavy libraries (torch, symusic, music21) inside the handlers, so building the parser, and
``cadenza --help``, import none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

from cadenza.data.errors import CadenzaError

from .common import Parser, add_limit_args, check_options, limits_of

# (module, the subcommands it registers), in the order ``cadenza --help`` lists them.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("info", ("info",)),
    ("render", ("render",)),
    ("generate", ("continue",)),
    ("anticipation", ("infill", "accompany")),
    ("transcribe", ("transcribe", "transcription-data", "transcription-train", "transcription-tune",
                    "transcription-eval")),
    ("models", ("models", "ship-model")),
    ("corpus", ("corpus",)),
    ("tokenize", ("tokenize", "detokenize")),
    ("train", ("train", "evaluate")),
    ("compare", ("compare",)),
    ("ddsp", ("ddsp-fit", "ddsp-velocities")),
    ("demo", ("demo",)),
)


# Commands that read music or load a model take the --max-* limit options.
LIMITED = ("info", "render", "continue", "infill", "accompany", "tokenize", "detokenize", "transcribe",
           "evaluate", "ddsp-fit", "ddsp-velocities", "demo")

# One name for one thing: an output file is -o/--output, a model is --model, an output
# directory is --out. Older spellings still work and no longer show in --help.
ALIASES: dict[tuple[str, str], str] = {
    ("tokenize", "--out"): "--output",
    ("detokenize", "--out"): "--output",
    ("transcribe", "--out"): "--output",
    ("evaluate", "--checkpoint"): "--model",
    ("continue", "--checkpoint"): "--model",
}


def _rename_option(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Show ``new`` in place of ``old``; ``old`` keeps working as a hidden alias."""
    action = parser._option_string_actions[old]
    action.option_strings = [o for o in action.option_strings if o != old]
    if new not in action.option_strings:
        action.option_strings.append(new)
        parser._option_string_actions[new] = action


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cadenza",
        description="Symbolic music generation: tokenize, train, continue, infill, render, transcribe.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, commands in COMMANDS:
        before = set(subparsers.choices)
        importlib.import_module(f"cadenza.cli.{module_name}").register(subparsers)
        added = tuple(name for name in subparsers.choices if name not in before)
        if set(added) - set(commands) or set(commands) - set(subparsers.choices):
            raise RuntimeError(f"cadenza.cli.{module_name} registers {added}; COMMANDS lists {commands}")
    for (command, old), new in ALIASES.items():
        _rename_option(subparsers.choices[command], old, new)
    for command in LIMITED:
        add_limit_args(subparsers.choices[command])
    return parser


def _error(message: str) -> int:
    print(f"cadenza: error: {message}", file=sys.stderr)
    return 2


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``cadenza models | head``): exit quietly, as cat does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, a container stop): unwinds like Ctrl-C, so temporary files are removed."""

    exit_status = 143


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While a command runs, SIGTERM raises Terminated instead of killing the process outright."""
    def terminate(signum, frame):
        raise Terminated("terminated")

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        check_options(args, parser._subparsers._group_actions[0].choices.get(args.command))
        with limits_of(args), _terminate_as_interrupt():
            code = int(args.func(args) or 0)
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except CadenzaError as exc:
        return _error(str(exc))
    except OSError as exc:  # an output in an unwritable place, under a file, on a full disk
        if exc.filename is None:
            return _error(exc.strerror or str(exc))
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return _error(f"{where}: {exc.strerror or exc}")
    except MemoryError:
        return _error("out of memory; the input is larger than this machine can hold (see the command's limits)")
    except KeyboardInterrupt as exc:  # a trainer's TrainingInterrupted says where its checkpoint is
        print(f"cadenza: {exc}" if str(exc) else "cadenza: interrupted", file=sys.stderr)
        return getattr(exc, "exit_status", 130)


if __name__ == "__main__":
    sys.exit(main())
