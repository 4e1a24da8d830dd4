"""``cadenza render`` end to end, in a subprocess, on a real chorale and on an ABC tune."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import soundfile
import symusic

from conftest import require_fluidsynth, run_cli

TUNE_ABC = """X:1
T:Scale
M:4/4
L:1/4
Q:1/4=120
K:C
C D E F | G A B c |
"""


def test_render_chorale_to_every_output(tmp_path, bach_pieces):
    require_fluidsynth()
    piece = bach_pieces[1]
    result = run_cli("render", piece.path, "-o", tmp_path / "out.flac", "--pianoroll", tmp_path / "roll.png",
                     "--axis", "bars", "--score", tmp_path / "score.svg", "--sheet", tmp_path / "sheet.html",
                     "--boundary", "4", "--sample-rate", "22050")
    assert "x real time" in result.stdout
    audio, rate = soundfile.read(str(tmp_path / "out.flac"), dtype="float32")
    expected = symusic.Score(str(piece.path)).to("second").end() + 1.0  # the default one-second tail
    assert rate == 22050 and audio.ndim == 1
    assert abs(len(audio) / rate - expected) < 0.01
    assert 0.85 < np.abs(audio).max() < 0.9  # peak-normalized to -1 dBFS
    assert np.sqrt(np.mean(audio[: rate * 4] ** 2)) > 0.02  # sounding from the first bars
    assert (tmp_path / "roll.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pages = sorted(tmp_path.glob("score*.svg"))
    assert pages and all(ElementTree.parse(p).getroot().tag.endswith("svg") for p in pages)
    sheet = (tmp_path / "sheet.html").read_text(encoding="utf-8")
    assert sheet.count("<audio") == 1 and "<svg" in sheet and "data:audio/midi;base64," in sheet


def test_abc_tune_defaults_and_ddsp(tmp_path, monkeypatch):
    from cadenza.cli.main import main  # in this process: torch is imported once for the whole suite

    tune = tmp_path / "scale.abc"
    tune.write_text(TUNE_ABC)
    monkeypatch.chdir(tmp_path)
    assert main(["render", str(tune), "--synth", "ddsp", "--preset", "flute", "--stereo"]) == 0
    audio, rate = soundfile.read(str(tmp_path / "scale.wav"), dtype="float32")  # default output name
    assert rate == 16000 and audio.shape[1] == 2
    assert 4.0 <= len(audio) / rate <= 5.5  # eight quarters at 120 bpm plus the release
    assert np.sqrt(np.mean(audio[: rate * 3] ** 2)) > 0.02


def test_errors_are_one_line_with_status_2(tmp_path, monkeypatch, bach_pieces):
    missing = run_cli("render", tmp_path / "nope.mid", check=False)
    assert missing.returncode == 2 and "nope.mid: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    misuse = run_cli("render", bach_pieces[0].path, "--preset", "flute", "-o", tmp_path / "x.wav", check=False)
    assert misuse.returncode == 2 and "--preset applies to --synth ddsp" in misuse.stderr
    # Without the FluidSynth library (a stand-in module that fails to import like a missing one):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "fluidsynth.py").write_text("raise ImportError(\"Couldn't find the FluidSynth library.\")\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    tune = tmp_path / "scale.mid"
    tune.write_bytes(_scale_midi())
    no_library = run_cli("render", tune, "-o", tmp_path / "a.wav", check=False)
    assert no_library.returncode == 2 and "apt-get install libfluidsynth3" in no_library.stderr
    assert not (tmp_path / "a.wav").exists()


def test_allow_fallback_renders_without_the_library(tmp_path, monkeypatch):
    import sys

    from cadenza.cli.main import main
    from cadenza.rendering import fluidsynth

    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # import fluidsynth -> ImportError
    monkeypatch.setattr(fluidsynth, "_SOUNDFONTS", {})
    tune = tmp_path / "scale.mid"
    tune.write_bytes(_scale_midi())
    assert main(["render", str(tune), "-o", str(tmp_path / "a.wav")]) == 2
    assert main(["render", str(tune), "-o", str(tmp_path / "a.wav"), "--allow-fallback", "--sample-rate", "16000"]) == 0
    audio, rate = soundfile.read(str(tmp_path / "a.wav"), dtype="float32")
    assert rate == 16000 and abs(len(audio) / rate - 5.0) < 0.01 and np.abs(audio).max() > 0.5


def _scale_midi() -> bytes:
    """Eight quarter notes at 120 bpm: four seconds of music."""
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track()
    for i, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72]):
        track.notes.append(symusic.Note(i * 480, 480, pitch, 90))
    score.tracks.append(track)
    return score.dumps_midi()


def test_a_four_part_chorale_in_3_4_engraves_every_staff_in_its_metre_and_key(tmp_path, bach_pieces):
    """bwv122.6 (3/4, two flats, four voices): every staff starts with 3/4 and every system of
    every staff carries the key; before, only the first part had the metre and the others 4/4."""
    import re

    from cadenza.data.io import read_score
    from cadenza.rendering.score import musicxml_text

    piece = next(p for p in bach_pieces if p.id == "bwv122.6")
    out = tmp_path / "chorale.svg"
    run_cli("render", piece.path, "--score", out)
    svg = "".join(path.read_text() for path in sorted(tmp_path.glob("chorale*.svg")))
    staves_per_system = 4
    assert svg.count('class="meterSig') == staves_per_system
    keys = svg.count('class="keySig')
    assert keys >= staves_per_system and keys % staves_per_system == 0
    text = musicxml_text(read_score(piece.path))
    parts = re.findall(r"<part id=.*?</part>", text, re.S)
    assert len(parts) == staves_per_system
    for part in parts:
        first = re.search(r"<measure.*?</measure>", part, re.S).group(0)
        assert "<beats>3</beats>" in first and "<beat-type>4</beat-type>" in first and "<fifths>-2</fifths>" in first
