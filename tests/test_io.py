"""Reading every supported format from real corpus pieces, writing and reading back, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import symusic

from cadenza.data import MusicFileError, read_score, write_midi, write_musicxml

M21_CORPUS = Path(__import__("music21").__file__).parent / "corpus"

REAL_FILES = {
    "mxl": ("bach/bwv66.6.mxl", 4),
    "xml": ("schubert/lindenbaum.xml", 2),
    "musicxml": ("beach/prayer.musicxml", 2),
    "krn": ("palestrina/Agnus_01.krn", 4),
    "abc": ("essenFolksong/altdeu10.abc", 1),
}


def _existing(rel: str) -> Path:
    path = M21_CORPUS / rel
    if not path.exists():  # file names differ slightly between music21 releases
        candidates = sorted((M21_CORPUS / Path(rel).parent).glob(f"*{Path(rel).suffix}"))
        path = candidates[0]
    return path


@pytest.mark.parametrize("fmt", sorted(REAL_FILES))
def test_reads_every_score_format_from_the_corpus(fmt):
    rel, min_tracks = REAL_FILES[fmt]
    score = read_score(_existing(rel))
    assert score.note_num() > 20
    assert len([t for t in score.tracks if t.notes]) >= min_tracks
    assert score.time_signatures, "time signature travels from the score"
    assert score.tempos


def test_bach_chorale_matches_music21_pitches():
    import music21

    path = M21_CORPUS / "bach/bwv66.6.mxl"
    score = read_score(path)
    m21_pitches = sorted(p.midi for n in music21.converter.parse(path).recurse().notes for p in n.pitches
                         if not (n.tie is not None and n.tie.type in ("stop", "continue")))
    ours = sorted(int(n.pitch) for t in score.tracks for n in t.notes)
    assert ours == m21_pitches
    assert [(k.key, k.tonality) for k in score.key_signatures[:1]] == [(3, 1)]  # f# minor


def test_abc_collection_index_chooses_a_tune():
    path = M21_CORPUS / "essenFolksong/altdeu10.abc"
    first, second = read_score(path, index=0), read_score(path, index=1)
    pitches = lambda s: [int(n.pitch) for t in s.tracks for n in t.notes]  # noqa: E731
    assert pitches(first) != pitches(second)
    with pytest.raises(MusicFileError, match="out of range"):
        read_score(path, index=100000)


def _notes(score: symusic.Score) -> list[tuple[float, float, int]]:
    quarters = score.to("quarter")
    return sorted((round(n.time, 3), round(n.duration, 3), int(n.pitch)) for t in quarters.tracks for n in t.notes)


def test_midi_written_and_read_back_exactly(tmp_path, bach_scores):
    score = bach_scores[0]
    out = write_midi(score, tmp_path / "x.mid")
    back = read_score(out)
    assert _notes(back) == _notes(score)
    assert not list(tmp_path.glob(".x.mid*")), "no temporary file left behind"


def test_musicxml_written_and_read_back_within_the_grid(tmp_path, bach_scores):
    score = bach_scores[1]
    out = write_musicxml(score, tmp_path / "x.musicxml")
    back = read_score(out)
    assert len(back.tracks) == len([t for t in score.tracks if t.notes])
    assert [f"{t.numerator}/{t.denominator}" for t in back.time_signatures[:1]] == \
        [f"{t.numerator}/{t.denominator}" for t in score.time_signatures[:1]]
    assert back.key_signatures, "a key signature is written"
    original, again = _notes(score), _notes(back)
    assert len(again) == len(original)
    grid = 0.25  # sixteenths: chorales lie on the grid, so times agree exactly
    assert np.allclose([n[0] for n in again], [n[0] for n in original], atol=grid / 2)
    assert [n[2] for n in again] == [n[2] for n in original]


def test_musicxml_quantizes_off_grid_notes(tmp_path):
    score = symusic.Score(480)
    track = symusic.Track("p", 0, False)
    for i, pitch in enumerate([60, 62, 64, 65]):
        track.notes.append(symusic.Note(i * 480 + 13, 467, pitch, 80))  # 13 ticks late
    score.tracks.append(track)
    back = read_score(write_musicxml(score, tmp_path / "q.musicxml"))
    starts = [n[0] for n in _notes(back)]
    assert starts == [0.0, 1.0, 2.0, 3.0]


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {}
    files["empty"] = tmp / "empty.mid"
    files["empty"].write_bytes(b"")
    files["random"] = tmp / "random.mid"
    files["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    good = symusic.Score(480)
    track = symusic.Track("p", 0, False)
    track.notes.extend([symusic.Note(i * 120, 120, 60 + i, 90) for i in range(40)])
    good.tracks.append(track)
    data = good.dumps_midi()
    files["truncated"] = tmp / "truncated.mid"
    files["truncated"].write_bytes(data[: len(data) // 2])
    silent = symusic.Score(480)
    silent.tracks.append(symusic.Track("silent", 0, False))
    files["no_notes"] = tmp / "silent.mid"
    silent.dump_midi(str(files["no_notes"]))
    files["abc_syntax"] = tmp / "broken.abc"
    files["abc_syntax"].write_text("X:1\nT:Broken\nM:4/4\nK:G\nG A B @@ c | d ## e $ f |\n")
    files["not_text_abc"] = tmp / "binary.abc"
    files["not_text_abc"].write_bytes(bytes(range(128, 256)))
    files["xml_garbage"] = tmp / "garbage.musicxml"
    files["xml_garbage"].write_text("<score-partwise><part id='P1'><measure")
    files["unknown_suffix"] = tmp / "notes.txt"
    files["unknown_suffix"].write_text("C D E F")
    files["missing"] = tmp / "missing.mid"
    return files


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "no_notes", "abc_syntax", "not_text_abc",
                                  "xml_garbage", "unknown_suffix", "missing"])
def test_bad_files_give_a_clear_error_naming_the_file(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(MusicFileError) as info:
        read_score(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    expected = {"empty": "empty", "random": "not a MIDI", "truncated": "truncated", "no_notes": "no notes",
                "abc_syntax": "syntax error", "not_text_abc": "not a text", "missing": "no such file",
                "unknown_suffix": "unsupported", "xml_garbage": "cannot parse"}[kind]
    assert expected in message
