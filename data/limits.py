"""The limits cadenza enforces before it allocates anything an input asks for.

A hostile or broken file can ask for 300 TiB of audio (one note at tick 10^9), a polyphony
no synthesizer voices, or a checkpoint whose config wants a vocabulary of 10^15 ids. Each such
request is refused before the allocation, in one line that names the limit and the option that
raises it. ``LIMITS`` holds the values in force; ``cadenza COMMAND --max-seconds ...`` (and the
other ``--max-*`` options) change them for one run, ``raised(...)`` does so in Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

from .errors import CadenzaError


class LimitError(CadenzaError):
    """An input asks for more than a stated limit; the message names the option that raises it."""


@dataclass
class Limits:
    max_seconds: float = 3600.0          # music to read, render or tokenize (1 hour)
    max_notes: int = 500_000             # notes in one piece
    max_polyphony: int = 512             # notes sounding at once
    max_vocab: int = 1_000_000           # ids in a checkpoint's vocabulary
    max_parameters: int = 2_000_000_000  # weights in a checkpoint's model (8 GB as float32)
    max_uncompressed_mb: float = 256.0   # a compressed MusicXML file (.mxl), unpacked


# The option that raises each limit and how its value reads in a message.
OPTIONS = {
    "max_seconds": ("--max-seconds", "{:g} s of music"),
    "max_notes": ("--max-notes", "{:d} notes"),
    "max_polyphony": ("--max-polyphony", "{:d} notes sounding at once"),
    "max_vocab": ("--max-vocab", "a vocabulary of {:d} ids"),
    "max_parameters": ("--max-parameters", "{:d} parameters"),
    "max_uncompressed_mb": ("--max-uncompressed-mb", "{:g} MB unpacked"),
}

LIMITS = Limits()


def limit_error(subject: str, what: str, found: str, name: str) -> LimitError:
    """``subject: what found; the limit is ... (raise it with --option)``."""
    option, phrase = OPTIONS[name]
    return LimitError(f"{subject}: {what} {found}; the limit is {phrase.format(getattr(LIMITS, name))} "
                      f"(raise it with {option})")


def set_limits(**values) -> None:
    """Change limits in force (``None`` leaves one as it is); each must be a finite number > 0."""
    given = {name: value for name, value in values.items() if value is not None}
    for name, value in given.items():  # all checked before any is set
        if name not in OPTIONS:
            raise TypeError(f"no limit named {name}")
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise CadenzaError(f"{OPTIONS[name][0]} must be a finite number > 0 (got {value})")
    for name, value in given.items():
        setattr(LIMITS, name, type(getattr(Limits(), name))(value))


@contextlib.contextmanager
def raised(**values):
    """Limits changed for the length of a ``with`` block."""
    saved = dataclasses.replace(LIMITS)
    set_limits(**values)
    try:
        yield LIMITS
    finally:
        for field in dataclasses.fields(Limits):
            setattr(LIMITS, field.name, getattr(saved, field.name))


def max_polyphony(starts, ends) -> int:
    """Most notes sounding at once, from onset and offset times (a note ending where another
    starts does not overlap it)."""
    import numpy as np

    starts, ends = np.asarray(starts), np.asarray(ends)
    if starts.size == 0:
        return 0
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(starts.size, np.int64), -np.ones(ends.size, np.int64)])
    order = np.lexsort((steps, times))  # at equal times, offsets (-1) before onsets (+1)
    return int(np.cumsum(steps[order]).max())


def check_score(score, subject) -> None:
    """Refuse a Score over the note, duration or polyphony limits (the Score is already parsed,
    in ticks; nothing proportional to its duration is allocated here)."""
    import numpy as np

    notes = int(score.note_num())
    if notes > LIMITS.max_notes:
        raise limit_error(str(subject), "has", f"{notes} notes", "max_notes")
    if notes == 0:
        return
    seconds = float(score.end()) and float(score.to("second").end())
    if not math.isfinite(seconds) or seconds > LIMITS.max_seconds:
        found = "an unbounded duration" if not math.isfinite(seconds) else f"{seconds:.0f} s"
        raise limit_error(str(subject), "lasts", found, "max_seconds")
    starts, ends = [], []
    for track in score.tracks:
        if len(track.notes):
            array = track.notes.numpy()
            starts.append(array["time"])
            ends.append(array["time"] + array["duration"])
    polyphony = max_polyphony(np.concatenate(starts), np.concatenate(ends))
    if polyphony > LIMITS.max_polyphony:
        raise limit_error(str(subject), "has", f"{polyphony} notes sounding at once", "max_polyphony")
