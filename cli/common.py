"""What every command shares: JSON output, the device and seed options, the one-line parser,
the rules every numeric option obeys, and the ``--max-*`` limit options."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys

from cadenza.data.errors import CadenzaError


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def add_device_arg(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")


def add_seed_arg(parser, default: int = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, help=f"random seed (default {default})")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (``cadenza continue: error: ...``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def naming(path):
    """Errors from inside the block name ``path`` (a tokenizer's "no notes to encode" does not know
    which file its Score came from)."""
    try:
        yield
    except CadenzaError as exc:
        if str(path) in str(exc):
            raise
        raise type(exc)(f"{path}: {exc}") if type(exc).__init__ is CadenzaError.__init__ \
            else CadenzaError(f"{path}: {exc}") from None


# -- numeric options --------------------------------------------------------------------------
# One rule per option name, for every command that has the option (training options are
# checked by the trainer). A rule is (test, what the value must be).
def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _int_at_least(low: int, high: int | None = None):
    def test(value):
        return isinstance(value, int) and value >= low and (high is None or value <= high)
    bound = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return test, bound


def _float_range(low: float, high: float, low_open: bool = False, high_open: bool = False):
    def test(value):
        return _finite(value) and (value > low if low_open else value >= low) and \
            (value < high if high_open else value <= high)
    bound = f"a finite number {'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}"
    return test, bound


MAX_TOKENS = 100_000  # far past any model's context; more would run for hours, not fail
RULES: dict[str, tuple] = {
    "temperature": _float_range(0, 100),
    "top_p": _float_range(0, 1, low_open=True),
    "top_k": _int_at_least(1, 2**31 - 1),
    "tokens": _int_at_least(1, MAX_TOKENS),
    "max_tokens": _int_at_least(1, MAX_TOKENS),
    "bars": _int_at_least(1, 10_000),
    "prompt_bars": _int_at_least(1, 10_000),
    "num_samples": _int_at_least(1, 64),
    "samples": _int_at_least(1, 64),
    "seconds": _float_range(0, 1e6, low_open=True),
    "sample_seconds": _float_range(0, 1e6, low_open=True),
    "budget_minutes": _float_range(0, 1e6, low_open=True),
    "start": _float_range(0, 1e6),
    "end": _float_range(0, 1e6, low_open=True),
    "prompt_seconds": _float_range(0, 1e6),
    "boundary": _float_range(0, 1e6),
    "tail": _float_range(0, 60),
    "sample_rate": _int_at_least(8000, 192000),
    "batch_segments": _int_at_least(1, 4096),
    "index": _int_at_least(0, 2**31 - 1),
    "seed": _int_at_least(0, 2**32 - 1),
    "steps": _int_at_least(1, 10**7),
    "learning_rate": _float_range(0, 100, low_open=True),
    "melody_program": _int_at_least(0, 127),
    "melody_track": _int_at_least(0, 2**31 - 1),
    "dissonance_penalty": _float_range(0, 100),
    "key_prior": _float_range(0, 100),
    "workers": _int_at_least(1, 1024),
    "limit": _int_at_least(1),
    "limit_pieces": _int_at_least(1),
    "seq_len": _int_at_least(1, MAX_TOKENS),
    "batch_size": _int_at_least(1, 65536),
}
# Where an option means something else, its own rule.
COMMAND_RULES: dict[tuple[str, str], tuple] = {
    ("ddsp-fit", "seconds"): _float_range(0, 1e6),  # 0: the whole recording
}
UNCHECKED_COMMANDS = ("train", "transcription-train", "transcription-data")  # their trainers check them


def _option_name(parser: argparse.ArgumentParser | None, dest: str) -> str:
    if parser is not None:
        for action in parser._actions:
            if action.dest == dest and action.option_strings:
                return max(action.option_strings, key=len)
    return "--" + dest.replace("_", "-")


def check_options(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> None:
    """Raise CadenzaError, in one line naming the option, for a value outside its rule."""
    command = getattr(args, "command", None)
    if command in UNCHECKED_COMMANDS:
        return
    for dest, value in vars(args).items():
        rule = COMMAND_RULES.get((command, dest), RULES.get(dest))
        if rule is None or value is None or isinstance(value, bool):
            continue
        test, bound = rule
        if not test(value):
            raise CadenzaError(f"{_option_name(parser, dest)} must be {bound} (got {value})")
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start is not None and end is not None and not start < end:
        raise CadenzaError(f"--start ({start:g}) must come before --end ({end:g})")


# -- limits -----------------------------------------------------------------------------------
LIMIT_OPTIONS = ("max_seconds", "max_notes", "max_polyphony", "max_vocab", "max_parameters", "max_uncompressed_mb")


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    """The ``--max-*`` options that raise (or lower) cadenza's input limits for one run."""
    from cadenza.data.limits import OPTIONS, Limits

    group = parser.add_argument_group("limits (checked before anything is allocated)")
    defaults = Limits()
    for name in LIMIT_OPTIONS:
        option, phrase = OPTIONS[name]
        kind = float if isinstance(getattr(defaults, name), float) else int
        group.add_argument(option, dest=name, type=kind, default=None, metavar="N",
                           help=f"at most {phrase.format(getattr(defaults, name))} (default)")


def limits_of(args: argparse.Namespace):
    """The limits a command's ``--max-*`` options ask for, in force for a ``with`` block."""
    from cadenza.data.limits import raised

    return raised(**{name: getattr(args, name, None) for name in LIMIT_OPTIONS})
