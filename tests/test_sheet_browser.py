"""Example sheets opened in a real browser (headless Chromium): score, piano roll, audio that plays."""

from __future__ import annotations

import base64
import html.parser
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import symusic

from cadenza.rendering.sheet import Rendering, SheetEntry, sheet_html, write_sheet
from conftest import require

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars"]

# Appended to a copy of the sheet: once every <audio> has decoded its metadata (or failed), the
# durations and the sizes of the drawn score and piano roll are written into the DOM.
PROBE = """<script>
const players = [...document.querySelectorAll('audio')];
const report = () => {
  const ready = players.every(a => a.readyState >= 1 || a.error);
  if (!ready) { setTimeout(report, 50); return; }
  const svg = document.querySelector('.score svg').getBoundingClientRect();
  const img = document.querySelector('img.pianoroll');
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    durations: players.map(a => a.error ? -1 : a.duration),
    svg: [svg.width, svg.height], img: [img.naturalWidth, img.complete],
  });
  document.body.appendChild(out);
};
window.addEventListener('load', report);
</script>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
        if found:
            return found
    return None


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    browser = chromium()
    require(browser is not None, "headless Chromium (Debian package chromium)")
    return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


class ElementCounter(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def count(tags, name: str) -> int:
    return sum(tag == name for tag, _ in tags)


@pytest.fixture(scope="module")
def comparison(bach_scores):
    """Two entries: a two-bar prompt with its continuation (a boundary), and a short tune with two renderings."""
    chorale = bach_scores[2].clip(0, bach_scores[2].tpq * 8)
    tune = symusic.Score(480)
    tune.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(name="melody")
    for i, pitch in enumerate([67, 64, 60, 64, 67, 72]):
        track.notes.append(symusic.Note(i * 480, 480, pitch, 100))
    tune.tracks.append(track)
    rate = 16000
    t = np.arange(int(1.5 * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return [
        SheetEntry("prompt and continuation", chorale, [Rendering("sine", tone, rate)],
                   description="the first bar is the prompt", boundary_seconds=2.0),
        SheetEntry("tune", tune, [Rendering("flac", tone[:rate], rate),
                                  Rendering("stereo", np.stack([tone, tone], 1), rate)]),
    ]


def test_sheet_structure_and_embedded_media(tmp_path, comparison):
    path = write_sheet(tmp_path / "sheet.html", "Comparison", comparison, metadata={"seed": 7, "model": "debug"})
    text = path.read_text(encoding="utf-8")
    parser = ElementCounter()
    parser.feed(text)
    tags = parser.tags
    assert count(tags, "section") == 2 and count(tags, "audio") == 3 and count(tags, "img") == 2
    assert count(tags, "svg") >= 2  # at least one engraved page per entry
    for tag, attrs in tags:
        if tag == "audio":
            assert attrs["src"].startswith("data:audio/flac;base64,")
            assert base64.b64decode(attrs["src"].split(",", 1)[1])[:4] == b"fLaC"
        if tag == "a" and "download" in attrs:
            midi = base64.b64decode(attrs["href"].split(",", 1)[1])
            assert midi.startswith(b"MThd") and symusic.Score.from_midi(midi).note_num() > 0
    assert "seed" in text and "debug" in text and "Comparison" in text
    assert "http://" not in text.replace("http://www.w3.org", "")  # nothing fetched from the network
    # a rendering given as a file is linked relative to the page when the sheet need not be self-contained
    audio_file = tmp_path / "audio" / "take.wav"
    from cadenza.rendering.audio import write_audio

    write_audio(audio_file, np.zeros(1600, np.float32), 16000)
    linked = sheet_html("t", [SheetEntry("x", comparison[1].score, [Rendering("file", path=audio_file)])],
                        sheet_dir=tmp_path, engrave=False, self_contained=False)
    assert 'src="audio/take.wav"' in linked


def test_sheet_in_headless_chromium(tmp_path, comparison):
    path = write_sheet(tmp_path / "sheet.html", "Comparison", comparison)
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = ElementCounter()
    parser.feed(dom.stdout)
    assert count(parser.tags, "audio") == 3 and count(parser.tags, "svg") >= 2
    report = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S).group(1)))
    assert report["durations"] == pytest.approx([1.5, 1.0, 1.5], abs=0.01)  # Chromium decoded every FLAC
    assert report["svg"][0] > 300 and report["svg"][1] > 100  # the engraved score is laid out
    assert report["img"] == [1200, True]  # the piano-roll PNG decoded

    shot = tmp_path / "shot.png"
    result = run_chromium(tmp_path, "--window-size=1000,1400", f"--screenshot={shot}", path.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    dark = (pixels.mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5  # text, staves and notes drawn on a white page: neither blank nor black
    assert pixels.std() > 0.05
