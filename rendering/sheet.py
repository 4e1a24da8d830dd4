"""Example sheets: one self-contained HTML page per piece, or per comparison of several.

Each entry shows its label and description, a table of what is in the piece, the engraved
score (inline SVG, every page), the piano roll (an inline PNG), an audio player per rendering
and a link that downloads the MIDI file. Everything is embedded as data, so the page can be
mailed or opened offline; a rendering may instead point at an audio file by a relative link.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cadenza.data.atomic import write_text_atomic

AUDIO_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
table.meta { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
table.meta th { text-align: left; padding: .15rem 1rem .15rem 0; color: #555; font-weight: 600; }
table.meta td { padding: .15rem 0; }
.score { overflow-x: auto; background: #fff; border: 1px solid #ddd; margin: .5rem 0; }
.score svg { display: block; max-width: 100%; height: auto; }
figure { margin: .8rem 0; } figcaption { font-size: .9rem; color: #555; margin-bottom: .2rem; }
img.pianoroll { max-width: 100%; border: 1px solid #ddd; }
.renderings { display: flex; flex-wrap: wrap; gap: 1.5rem; }
a.midi { display: inline-block; margin-top: .5rem; }
"""


@dataclass
class Rendering:
    """One way the entry sounds: audio samples, or an existing audio file."""

    label: str
    audio: np.ndarray | None = None
    sample_rate: int = 44100
    path: str | os.PathLike | None = None


@dataclass
class SheetEntry:
    """One piece on the sheet (a prompt with its continuation, a model's sample, an original)."""

    label: str
    score: object  # symusic.Score
    renderings: list[Rendering] = field(default_factory=list)
    description: str = ""
    boundary_seconds: float | None = None
    midi_name: str | None = None
    score_pages: list[str] | None = None  # engraved SVG pages already made (``score.svg_pages``)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "piece"


def _metadata_table(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def _summary_rows(score) -> list[tuple[str, str]]:
    from cadenza.data.info import pitch_name, score_summary

    summary = score_summary(score)
    minutes, seconds = divmod(summary["duration_seconds"], 60)
    rows = [("duration", f"{int(minutes)}:{seconds:05.2f}"), ("notes", str(summary["notes"])),
            ("tempo (qpm)", ", ".join(f"{q:g}" for q in summary["tempos_qpm"]) or "120 (assumed)"),
            ("time signature", ", ".join(summary["time_signatures"]) or "none"),
            ("key", ", ".join(summary["keys"]) or "unknown")]
    for track in summary["tracks"]:
        span = track["pitch_range"]
        extent = f", {pitch_name(span[0])}–{pitch_name(span[1])}" if span else ""
        rows.append((f"track {track['name'] or '(unnamed)'}", f"{track['instrument']}, {track['notes']} notes{extent}"))
    return rows


def _audio_html(rendering: Rendering, sheet_dir: Path, audio_format: str, self_contained: bool) -> str:
    from .audio import audio_bytes

    if rendering.path is not None:
        path = Path(rendering.path)
        mime = AUDIO_MIME.get(path.suffix.lower(), "audio/wav")
        source = (_data_uri(mime, path.read_bytes()) if self_contained
                  else html.escape(Path(os.path.relpath(path.resolve(), sheet_dir.resolve())).as_posix()))
    elif rendering.audio is not None:
        mime = AUDIO_MIME[f".{audio_format}"]
        source = _data_uri(mime, audio_bytes(rendering.audio, rendering.sample_rate, audio_format))
    else:
        raise ValueError(f"rendering {rendering.label!r} has neither audio nor a path")
    return (f'<figure class="rendering"><figcaption>{html.escape(rendering.label)}</figcaption>'
            f'<audio controls preload="auto" src="{source}"></audio></figure>')


def _entry_html(entry: SheetEntry, sheet_dir: Path, engrave: bool, audio_format: str, self_contained: bool) -> str:
    from cadenza.data.errors import CadenzaError

    from .pianoroll import pianoroll_png
    from .score import svg_pages

    parts = [f"<section class=\"entry\"><h2>{html.escape(entry.label)}</h2>"]
    if entry.description:
        parts.append(f"<p>{html.escape(entry.description)}</p>")
    parts.append(_metadata_table(_summary_rows(entry.score)))
    if engrave:
        try:
            pages = entry.score_pages if entry.score_pages is not None else svg_pages(entry.score, title=entry.label)
        except CadenzaError as exc:  # the page is still useful without the engraving
            parts.append(f"<p class=\"error\">No engraved score: {html.escape(str(exc))}</p>")
        else:
            for page in pages:
                svg = page[page.index("<svg"):]  # drop any XML declaration before inlining
                parts.append(f'<div class="score">{svg}</div>')
    png = pianoroll_png(entry.score, boundary_seconds=entry.boundary_seconds, axis="bars")
    parts.append(f'<figure><figcaption>Piano roll</figcaption><img class="pianoroll" alt="piano roll of '
                 f'{html.escape(entry.label)}" src="{_data_uri("image/png", png)}"></figure>')
    if entry.renderings:
        players = "".join(_audio_html(r, sheet_dir, audio_format, self_contained) for r in entry.renderings)
        parts.append(f'<div class="renderings">{players}</div>')
    midi_name = entry.midi_name or f"{_slug(entry.label)}.mid"
    midi_uri = _data_uri("audio/midi", entry.score.dumps_midi())
    parts.append(f'<a class="midi" download="{html.escape(midi_name)}" href="{midi_uri}">'
                 f'Download MIDI ({html.escape(midi_name)})</a>')
    parts.append("</section>")
    return "\n".join(parts)


def sheet_html(title: str, entries: Sequence[SheetEntry], *, metadata: dict | None = None,
               sheet_dir: str | os.PathLike = ".", engrave: bool = True, audio_format: str = "flac",
               self_contained: bool = True) -> str:
    """The HTML text of an example sheet (see ``write_sheet``)."""
    if audio_format not in ("wav", "flac"):
        raise ValueError(f"audio_format must be 'wav' or 'flac', not {audio_format!r}")
    header = [f"<h1>{html.escape(title)}</h1>"]
    if metadata:
        header.append(_metadata_table([(str(k), str(v)) for k, v in metadata.items()]))
    body = [_entry_html(entry, Path(sheet_dir), engrave, audio_format, self_contained) for entry in entries]
    head = ('<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style>")
    page = "\n".join(header + body)
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>\n{page}\n</body></html>\n'


def write_sheet(path: str | os.PathLike, title: str, *entries: SheetEntry | Sequence[SheetEntry],
                metadata: dict | None = None, engrave: bool = True, audio_format: str = "flac",
                self_contained: bool = True) -> Path:
    """Write an HTML example sheet for one or several entries, atomically, and return its path.

    ``entries`` may be given one by one or as a list. ``metadata`` (for example model, seed,
    temperature) is shown under the title. Audio arrays are embedded as FLAC (or WAV); audio
    files are embedded too unless ``self_contained`` is false, when they are linked relative
    to the page.
    """
    flat: list[SheetEntry] = []
    for item in entries:
        flat.extend([item] if isinstance(item, SheetEntry) else list(item))
    if not flat:
        raise ValueError("an example sheet needs at least one entry")
    path = Path(path)
    text = sheet_html(title, flat, metadata=metadata, sheet_dir=path.parent, engrave=engrave,
                      audio_format=audio_format, self_contained=self_contained)
    write_text_atomic(path, text)
    return path


def write_continuation_sheet(path: str | os.PathLike, title: str, prompt, continuations: Sequence, *,
                             model: str, metadata: dict | None = None, prompt_description: str = "",
                             audio: Sequence[np.ndarray] | None = None, sample_rate: int = 44100,
                             render=None) -> Path:
    """The example sheet of a prompt and its continuations, as ``continue --sheet`` and the demo write it.

    Every entry sounds through FluidSynth (``render(score, sample_rate=...)``, default
    ``cadenza.rendering.fluidsynth.render``); ``audio`` passes continuations already rendered, so
    a caller that also writes them as WAV renders each once. A line on each continuation marks
    where the prompt ends.
    """
    if render is None:
        from .fluidsynth import render
    if audio is None:
        audio = [render(score, sample_rate=sample_rate) for score in continuations]
    boundary = float(prompt.to("second").end())
    entries = [SheetEntry("Prompt", prompt, [Rendering("FluidSynth", render(prompt, sample_rate=sample_rate),
                                                       sample_rate)], description=prompt_description)]
    for number, (score, samples) in enumerate(zip(continuations, audio), 1):
        label = "Continuation" if len(continuations) == 1 else f"Continuation {number}"
        entries.append(SheetEntry(label, score, [Rendering("FluidSynth", samples, sample_rate)],
                                  description=f"Continued by {model}"
                                              + (f", sample {number}" if len(continuations) > 1 else "")
                                              + "; the line marks where the prompt ends.",
                                  boundary_seconds=boundary))
    return write_sheet(path, title, entries, metadata={"model": model, **(metadata or {})})
