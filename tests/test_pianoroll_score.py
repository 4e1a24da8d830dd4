"""Piano-roll PNGs and engraved SVG scores."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import symusic

from cadenza.rendering.pianoroll import (
    TRACK_COLOURS, bar_starts, draw_pianoroll, pianoroll_png, plot_pianoroll, tick_to_seconds,
)
from cadenza.rendering.score import page_paths, render_svg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quarter_score(pitches, velocities=None, program=0, tpq=480, qpm=120.0, tracks=1) -> symusic.Score:
    """Quarter notes, one after another, repeated on ``tracks`` tracks a fifth apart."""
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, qpm))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for t in range(tracks):
        track = symusic.Track(name=f"voice {t + 1}", program=program)
        for i, pitch in enumerate(pitches):
            velocity = velocities[i] if velocities else 90
            track.notes.append(symusic.Note(i * tpq, tpq, pitch - 7 * t, velocity))
        score.tracks.append(track)
    return score


def decode_png(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    assert data.startswith(PNG_MAGIC)
    return imread(io.BytesIO(data), format="png")


def pixel_at(figure, image: np.ndarray, x: float, y: float) -> np.ndarray:
    """RGB of the saved image at data coordinates (x, y) of the figure's axes."""
    display_x, display_y = figure.axes[0].transData.transform((x, y))
    return image[int(round(image.shape[0] - display_y)), int(round(display_x)), :3]


def test_tempo_map_and_bars_follow_changes():
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 120.0))
    score.tempos.append(symusic.Tempo(960, 60.0))  # after two quarters at 0.5 s each, quarters last 1 s
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    score.time_signatures.append(symusic.TimeSignature(2880, 4, 4))  # two bars of 3/4, then 4/4
    track = symusic.Track()
    track.notes.append(symusic.Note(0, 480 * 14, 60, 90))
    score.tracks.append(track)
    assert np.allclose(tick_to_seconds(score, [0, 480, 960, 1440, 2880]), [0, 0.5, 1.0, 2.0, 5.0])
    assert np.allclose(tick_to_seconds(score, [480 * 14]), score.to("second").end())
    assert bar_starts(score).tolist() == [0, 1440, 2880, 4800]


def test_pianoroll_colours_opacity_pitch_names_and_boundary(tmp_path):
    loud_then_soft = quarter_score([60, 62, 64, 65], velocities=[127, 127, 10, 10], tracks=2)
    figure = draw_pianoroll(loud_then_soft, boundary_seconds=1.0, axis="bars")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    image = decode_png(buffer.getvalue())
    assert image.shape[0] == 500 and image.shape[1] == 1200
    first_track, second_track = (np.array([int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]) for c in TRACK_COLOURS[:2])
    loud = pixel_at(figure, image, 0.25, 60)
    soft = pixel_at(figure, image, 1.25, 64)
    other = pixel_at(figure, image, 0.25, 53)
    assert np.abs(loud - first_track).max() < 0.05  # full velocity: the track colour itself
    assert np.abs(other - second_track).max() < 0.05  # the second track has its own colour
    assert soft.mean() > loud.mean() + 0.2  # quiet notes are paler (more transparent on white)
    assert np.abs(pixel_at(figure, image, 0.25, 61) - 1.0).max() < 0.1  # no note at 61 then: background
    boundary = [pixel_at(figure, image, 1.0, y).max() for y in np.arange(54.0, 60.0, 0.25)]
    assert min(boundary) < 0.2  # the dashed boundary line is black at 1 s
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]  # four quarters in 4/4: one bar
    assert "C4" in [t.get_text() for t in ax.get_yticklabels()]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["voice 1", "voice 2"]
    path = plot_pianoroll(loud_then_soft, tmp_path / "roll.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["roll.png"]
    with pytest.raises(ValueError):
        pianoroll_png(loud_then_soft, axis="beats")


def test_engraved_svg_one_page_with_every_note(tmp_path):
    score = quarter_score([60, 62, 64, 65, 67, 69, 71, 72])  # two bars of a C major scale
    paths = render_svg(score, tmp_path / "scale.svg", title="A scale")
    assert paths == [tmp_path / "scale.svg"]
    text = paths[0].read_text()
    root = ElementTree.fromstring(text)
    assert root.tag.endswith("svg")
    classes = [element.get("class", "") for element in root.iter()]
    assert sum(c.split()[0] == "note" for c in classes if c) == 8
    assert sum(c.split()[0] == "measure" for c in classes if c) == 2
    assert "A scale" in "".join(root.itertext())


def test_long_piece_engraves_to_numbered_pages(tmp_path, bach_scores):
    chorale = bach_scores[0]  # 5 staves, 20 bars: more than one A4 page
    paths = render_svg(chorale, tmp_path / "chorale.svg")
    assert len(paths) >= 2
    assert paths == [tmp_path / f"chorale-{i}.svg" for i in range(1, len(paths) + 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    notes = 0
    for path in paths:
        root = ElementTree.fromstring(path.read_text())
        notes += sum((e.get("class") or "").split()[:1] == ["note"] for e in root.iter())
    assert notes >= chorale.note_num()  # every note engraved (long ones tied across bar lines count twice)
    assert page_paths(tmp_path / "c.svg", 3) == [tmp_path / "c-1.svg", tmp_path / "c-2.svg", tmp_path / "c-3.svg"]
    assert page_paths(tmp_path / "c.svg", 1) == [tmp_path / "c.svg"]
