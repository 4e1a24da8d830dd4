"""Outputs whose extension decides their format, and refusals for the rest.

``check_output(path, *kinds)`` is called before any work, so ``continue -o noext`` fails in a
second instead of after sampling; ``write_output(score, path)`` then writes the Score as MIDI,
MusicXML or audio by the same extension.
"""

from __future__ import annotations

import os
from pathlib import Path

from cadenza.data.errors import CadenzaError

SUFFIXES: dict[str, tuple[str, ...]] = {
    "midi": (".mid", ".midi"),
    "musicxml": (".musicxml", ".xml", ".mxl"),
    "audio": (".wav", ".flac"),
    "picture": (".png", ".svg", ".pdf", ".jpg", ".jpeg"),
    "engraving": (".svg",),
    "sheet": (".html", ".htm"),
    "json": (".json",),
}
MUSIC = ("midi", "musicxml")


def check_output(path: str | os.PathLike, *kinds: str, option: str = "-o/--output") -> str:
    """The kind of output ``path``'s extension names, or one line refusing it (naming ``option``)."""
    suffix = Path(path).suffix.lower()
    for kind in kinds:
        if suffix in SUFFIXES[kind]:
            return kind
    accepted = ", ".join(s for kind in kinds for s in SUFFIXES[kind])
    raise CadenzaError(f"{path}: {option} must end in one of {accepted} (the extension decides the format; "
                       f"got {suffix or 'none'})")


def write_output(score, path: str | os.PathLike, *, sample_rate: int = 44100, soundfont=None) -> Path:
    """Write a Score as its path's extension says: MIDI, MusicXML, or audio rendered with FluidSynth."""
    kind = check_output(path, *MUSIC, "audio")
    if kind == "audio":
        from .audio import write_audio
        from .fluidsynth import render

        return write_audio(path, render(score, sample_rate=sample_rate, soundfont=soundfont), sample_rate)
    from cadenza.data.io import write_score

    return write_score(score, path)
