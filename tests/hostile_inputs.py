"""A generated corpus of broken and extreme inputs for every command (see test_hostile.py).

Every file is made here from a seed, so the corpus is the same on every machine and nothing
large is stored in the repository. ``build(directory)`` writes them all and returns
{name: path}; the names say what each file is.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np


# -- MIDI by hand: what a careless or hostile writer can put in a file -----------------------
def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file(tracks: list[list[tuple[int, bytes]]], division: int = 480, fmt: int = 1) -> bytes:
    """A standard MIDI file from tracks of (delta ticks, event bytes); end-of-track is added."""
    chunks = [b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks), division & 0xFFFF)]
    for events in tracks:
        body = b"".join(_vlq(delta) + data for delta, data in events) + b"\x00\xff\x2f\x00"
        chunks.append(b"MTrk" + struct.pack(">I", len(body)) + body)
    return b"".join(chunks)


def tempo(microseconds: int) -> bytes:
    return b"\xff\x51\x03" + microseconds.to_bytes(3, "big")


def on(pitch: int, channel: int = 0, velocity: int = 80) -> bytes:
    return bytes([0x90 | channel, pitch, velocity])


def off(pitch: int, channel: int = 0) -> bytes:
    return bytes([0x80 | channel, pitch, 0])


def scale(n: int = 8, channel: int = 0, length: int = 480, low: int = 60) -> list[tuple[int, bytes]]:
    events = []
    for i in range(n):
        events += [(0, on(low + i, channel)), (length, off(low + i, channel))]
    return events


def plain_midi() -> bytes:
    return midi_file([[(0, tempo(500000))] + scale()])


MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 3.1 Partwise//EN" "http://www.musicxml.org/dtds/partwise.dtd">
<score-partwise version="3.1"><part-list><score-part id="P1"><part-name>Music</part-name></score-part></part-list>
<part id="P1"><measure number="1"><attributes><divisions>1</divisions><key><fifths>0</fifths></key>
<time><beats>4</beats><beat-type>4</beat-type></time><clef><sign>G</sign><line>2</line></clef></attributes>
{direction}<note><pitch><step>C</step><octave>4</octave></pitch><duration>4</duration><type>whole</type></note>
</measure></part></score-partwise>
"""

ENTITY_BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">
""" + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10)) + """]>
<score-partwise version="3.1"><work><work-title>&lol9;</work-title></work></score-partwise>
"""


def zip_bomb(path: Path, megabytes: int) -> None:
    """A small .mxl whose one member unzips to ``megabytes`` of spaces."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("META-INF/container.xml",
                         '<?xml version="1.0"?><container><rootfiles><rootfile full-path="score.xml"/>'
                         "</rootfiles></container>")
        with archive.open("score.xml", "w", force_zip64=True) as member:
            member.write(b'<?xml version="1.0"?><score-partwise version="3.1">')
            block = b" " * 2**20
            for _ in range(megabytes):
                member.write(block)
            member.write(b"</score-partwise>")


ABC = "X:1\nT:Scale\nM:4/4\nL:1/8\nK:C\n{body}|\n"


def write_wav(path: Path, audio: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    import soundfile

    soundfile.write(str(path), audio, rate, subtype=subtype)


def checkpoint_variants(root: Path, shipped: Path) -> dict[str, Path]:
    """Broken copies of a shipped checkpoint: each directory is wrong in one way."""
    config = json.loads((shipped / "config.json").read_text())
    weights = (shipped / "model.safetensors").read_bytes()
    header_length = struct.unpack("<Q", weights[:8])[0]
    variants = {
        "ckpt-empty-weights": (config, b""),
        "ckpt-truncated-weights": (config, weights[: len(weights) // 2]),
        "ckpt-truncated-header": (config, weights[: 8 + header_length // 2]),
        "ckpt-header-too-small": (config, weights[:5]),
        "ckpt-header-too-large": (config, struct.pack("<Q", 2**62) + weights[8:]),
        "ckpt-garbage-header": (config, struct.pack("<Q", 64) + b"\x00\xff" * 32 + weights[72:]),
        "ckpt-garbage-config": ("{ not json", weights),
        "ckpt-negative-vocab": ({**config, "model": {**config["model"], "vocab_size": -5}}, weights),
        "ckpt-huge-vocab": ({**config, "model": {**config["model"], "vocab_size": 10**15}}, weights),
        "ckpt-big-vocab": ({**config, "model": {**config["model"], "vocab_size": 5_000_000}}, weights),
        "ckpt-huge-model": ({**config, "model": {**config["model"], "d_model": 2**20, "d_ff": 2**22}}, weights),
        "ckpt-wrong-shape": ({**config, "model": {**config["model"], "d_ff": config["model"]["d_ff"] * 2}}, weights),
        "ckpt-string-size": ({**config, "model": {**config["model"], "n_layer": "six"}}, weights),
        "ckpt-no-weights": (config, None),
        "ckpt-missing-field": ({**config, "model": {k: v for k, v in config["model"].items()
                                                    if k not in ("n_mels", "n_layer")}}, weights),
    }
    out = {}
    for name, (cfg, data) in variants.items():
        directory = root / name
        directory.mkdir()
        (directory / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
        if data is not None:
            (directory / "model.safetensors").write_bytes(data)
        out[name] = directory
    return out


def build(directory: str | Path, *, chorale: Path | None = None) -> dict[str, Path]:
    """Write the corpus into ``directory``; ``chorale`` is a real MIDI file to truncate."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(15)
    files: dict[str, bytes | str] = {}

    # bytes that are not what their extension says
    for suffix in (".mid", ".musicxml", ".mxl", ".krn", ".abc", ".wav", ".flac", ".json"):
        files[f"empty{suffix}"] = b""
        files[f"random{suffix}"] = bytes(rng.randrange(256) for _ in range(2048))
    files["no-mthd.mid"] = b"RIFF" + plain_midi()[4:]
    real = chorale.read_bytes() if chorale else plain_midi()
    for cut in (6, 13, 14, 22, 40, len(real) // 2, len(real) - 3):
        files[f"truncated-{cut}.mid"] = real[:cut]
    files["smpte.mid"] = midi_file([scale()], division=0xE728)
    files["drums.mid"] = midi_file([scale(channel=9, low=36)])
    files["no-notes.mid"] = midi_file([[(0, tempo(500000))]])
    files["never-closed.mid"] = midi_file([[(0, on(60)), (480, on(64)), (480, on(67))]])
    files["zero-length.mid"] = midi_file([[(0, on(60)), (0, off(60)), (480, on(62)), (0, off(62))]])
    files["pitch-0-127.mid"] = midi_file([[(0, on(0)), (480, off(0)), (0, on(127)), (480, off(127))]])
    files["1000-at-once.mid"] = midi_file([[(0, on(20 + i % 100, track)) for i in range(125)]
                                           + [(960, off(20, track))]
                                           + [(0, off(20 + i % 100, track)) for i in range(1, 125)]
                                           for track in range(8)])
    files["tempo-0us.mid"] = midi_file([[(0, tempo(0))] + scale()])
    files["tempo-1us.mid"] = midi_file([[(0, tempo(1))] + scale()])
    files["tempo-max.mid"] = midi_file([[(0, tempo(0xFFFFFF))] + scale()])
    marker = b"\xff\x06\x00"  # an empty marker: deltas are at most 2^28 - 1 ticks
    files["note-at-1e9.mid"] = midi_file([[(0, on(60)), (480, off(60))] + [(250_000_000, marker)] * 3
                                          + [(250_000_000 - 480, on(62)), (480, off(62))]])
    files["two-hour-silence.mid"] = midi_file([[(0, tempo(500000)), (0, on(60)), (480, off(60)),
                                                (2 * 3600 * 2 * 480, on(62)), (480, off(62))]])
    files["plain.mid"] = plain_midi()

    files["plain.musicxml"] = MUSICXML.format(direction="")
    files["tempo-1bpm.musicxml"] = MUSICXML.format(
        direction='<direction><direction-type><metronome><beat-unit>quarter</beat-unit><per-minute>1</per-minute>'
                  '</metronome></direction-type><sound tempo="1"/></direction>')
    files["malformed.musicxml"] = MUSICXML.format(direction="")[:400]
    files["entity-bomb.musicxml"] = ENTITY_BOMB
    files["plain.abc"] = ABC.format(body="CDEF GABc")
    files["syntax-error.abc"] = ABC.format(body="CD@# $;EF")
    files["absurd-length.abc"] = ABC.format(body="C99999999 D")
    files["absurd-short.abc"] = ABC.format(body="C/99999999 D")
    files["tempo-1bpm.abc"] = "X:1\nT:Slow\nM:4/4\nL:1/4\nQ:1/4=1\nK:C\nCDEF|\n"
    files["garbage.krn"] = "**kern\n*M4/4\n4c\n=1\n4zz!!q\n*-\n" + "\x01garbage\n"
    files["not-kern.krn"] = "hello world\n"
    files["ids-nested.json"] = "[" * 100_000 + "]" * 100_000
    files["ids-strings.json"] = json.dumps(["a", 3])
    files["ids-floats.json"] = json.dumps([60.5, 3])
    files["ids-huge.json"] = json.dumps([10**30])
    files["ids-negative.json"] = json.dumps([-1, 5])
    files["ids-object.json"] = json.dumps({"ids": "not a list"})
    files["ids-empty.json"] = "[]"
    for name, data in files.items():
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    zip_bomb(root / "zip-bomb.mxl", 300)
    rate = 16000
    write_wav(root / "silent.wav", np.zeros(rate, np.float32), rate)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / 8000)).astype(np.float32)
    write_wav(root / "8khz.wav", tone, 8000)
    t = np.arange(96000) / 96000
    write_wav(root / "96khz-stereo.wav", np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)],
                                                  axis=1).astype(np.float32), 96000)
    nan = np.full(rate, np.nan, np.float32)
    write_wav(root / "nan.wav", nan, rate, subtype="FLOAT")
    write_wav(root / "tone.flac", tone, 8000)
    import soundfile

    soundfile.write(str(root / "tone.ogg"), tone, 8000, format="OGG", subtype="VORBIS")
    (root / "corrupt.wav").write_bytes((root / "8khz.wav").read_bytes()[:60] + bytes(range(256)) * 4)
    (root / "directory.mid").mkdir()
    (root / "a-file").write_text("a file, not a directory")
    if chorale is not None:
        shutil.copyfile(chorale, root / "chorale.mid")
    return {path.name: path for path in sorted(root.iterdir())}
