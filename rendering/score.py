"""Engraved scores: Score -> music21 (quantized) -> MusicXML -> verovio -> one SVG per page.

The quantization (sixteenths and eighth-triplets) and key estimation happen in
``cadenza.data.io.score_to_m21``; verovio lays out systems and pages at A4 proportions.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from cadenza.data.atomic import write_text_atomic
from cadenza.data.errors import MissingDependencyError, MusicFileError

PAGE_OPTIONS = {
    "pageWidth": 2100,       # A4 at verovio's tenths of a millimetre
    "pageHeight": 2970,
    "pageMarginLeft": 80,
    "pageMarginRight": 80,
    "pageMarginTop": 60,
    "pageMarginBottom": 60,
    "scale": 40,
    "adjustPageHeight": True,  # the last page ends with the music instead of blank paper
    "footer": "none",
    "breaks": "auto",
}


def musicxml_text(score, title: str | None = None) -> str:
    """MusicXML for a Score, with the given title (and no placeholder title or composer)."""
    import music21
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    from cadenza.data.io import score_to_m21

    stream = score_to_m21(score)  # every part has the time and key signatures
    stream.metadata = music21.metadata.Metadata()
    stream.metadata.title = title or ""
    stream.metadata.movementName = title or ""
    stream.metadata.composer = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GeneralObjectExporter(stream).parse().decode("utf-8")


def svg_pages(score, title: str | None = None, scale: int | None = None) -> list[str]:
    """The engraved Score as SVG documents, one per page."""
    try:
        import verovio
    except ImportError:
        raise MissingDependencyError("engraving needs verovio: `pip install verovio`") from None
    if score.note_num() == 0:
        raise MusicFileError("<score>", "contains no notes to engrave")
    verovio.enableLog(verovio.LOG_OFF)
    toolkit = verovio.toolkit()
    toolkit.setOptions({**PAGE_OPTIONS, **({"scale": int(scale)} if scale else {})})
    if not toolkit.loadData(musicxml_text(score, title)):
        raise MusicFileError("<score>", "verovio could not lay out the MusicXML made from this score")
    return [toolkit.renderToSVG(page) for page in range(1, toolkit.getPageCount() + 1)]


def page_paths(path: str | os.PathLike, pages: int) -> list[Path]:
    """Where ``render_svg`` writes: ``path`` itself for one page, else path-1.svg, path-2.svg, ..."""
    path = Path(path)
    if pages == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{page}{path.suffix or '.svg'}") for page in range(1, pages + 1)]


def render_svg(score, path: str | os.PathLike, title: str | None = None) -> list[Path]:
    """Engrave a Score to SVG files and return their paths.

    A score that fits on one page is written to ``path``; a longer one is written as
    ``<stem>-1.svg``, ``<stem>-2.svg``, ... beside it, one file per page. Each file is
    written atomically.
    """
    return write_svg_pages(svg_pages(score, title), path)


def write_svg_pages(pages: list[str], path: str | os.PathLike) -> list[Path]:
    """Write SVG pages under the names ``page_paths`` gives, each atomically."""
    from .output import check_output

    check_output(path, "engraving", option="--score")
    paths = page_paths(path, len(pages))
    for page_path, svg in zip(paths, pages):
        write_text_atomic(page_path, svg)
    return paths
