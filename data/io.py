"""Reading any music file into a ``symusic.Score`` and writing MIDI and MusicXML.

MIDI is parsed by symusic (C++). Score formats (MusicXML, kern, ABC) go through
music21 and reach symusic as an in-memory MIDI file, so tempo, time signatures
and key signatures travel with the notes. music21 is imported only here, when needed.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import symusic

from .atomic import atomic_path
from .errors import MusicFileError
from .limits import LIMITS, check_score, limit_error

MIDI_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".musicxml", ".xml", ".mxl", ".krn", ".abc")
SUPPORTED_SUFFIXES = MIDI_SUFFIXES + SCORE_SUFFIXES


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MusicFileError(path, "no such file")
    if path.is_dir():
        raise MusicFileError(path, "is a directory, not a music file")
    if path.stat().st_size == 0:
        raise MusicFileError(path, "empty file (0 bytes)")


def read_score(path: str | os.PathLike, index: int = 0, allow_empty: bool = False) -> symusic.Score:
    """Read a MIDI, MusicXML, kern or ABC file into a Score (ticks).

    ``index`` chooses a tune in a file that holds several (ABC collections).
    Raises MusicFileError, naming the file, for anything that is not readable music
    or (unless ``allow_empty``) holds no notes.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        if index != 0:
            raise MusicFileError(path, f"a MIDI file holds one piece; index {index} applies to ABC collections")
        score = _read_midi(path)
    elif suffix in SCORE_SUFFIXES:
        score = m21_to_score(_parse_music21(path, index), path)
    else:
        raise MusicFileError(path, f"unsupported file type {suffix or '(none)'}; cadenza reads "
                             + ", ".join(SUPPORTED_SUFFIXES))
    if not allow_empty and score.note_num() == 0:
        raise MusicFileError(path, "contains no notes")
    check_tempos(score, path)
    check_score(score, path)
    return score


def check_tempos(score: symusic.Score, path: str | os.PathLike = "<score>") -> None:
    """Refuse a tempo of 0 microseconds per quarter note (time would stand still: every note at 0 s)."""
    for tempo in score.tempos:
        if tempo.mspq <= 0:
            raise MusicFileError(path, f"a tempo of {tempo.mspq} microseconds per quarter note at tick {tempo.time} "
                                       "is not a tempo")


def _read_midi(path: Path) -> symusic.Score:
    data = path.read_bytes()
    if not data.startswith(b"MThd"):
        raise MusicFileError(path, "not a MIDI file (no MThd header)")
    if len(data) >= 14 and data[12] & 0x80:
        raise MusicFileError(path, "SMPTE time division (frames per second); cadenza reads MIDI files "
                                   "timed in ticks per quarter note")
    try:
        return symusic.Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError/ValueError with C++ messages
        raise MusicFileError(path, f"corrupt or truncated MIDI file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    line = re.sub(r"^MiniMidi: |: iostream error$", "", line)  # the C++ reader's own prefix and suffix
    return line[:160]


def _check_archive(path: Path) -> None:
    """A compressed MusicXML file is a zip archive: refuse one that unpacks past the limit before
    anything unpacks it (a 1 MB file can hold gigabytes of spaces)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise MusicFileError(path, f"not a compressed MusicXML file ({_first_line(exc)})") from None
    unpacked = sum(member.file_size for member in members)
    if unpacked > LIMITS.max_uncompressed_mb * 2**20:
        raise limit_error(str(path), "unpacks to", f"{unpacked / 2**20:.0f} MB", "max_uncompressed_mb")


_ABC_FIELD = re.compile(r"^[A-Za-z+]:")
_ABC_SKIP = re.compile(r'"[^"]*"|![^!\n]*!|\+[^+\n]*\+|\[[A-Za-z]:[^\]]*\]|%.*$')
_ABC_BAD_CHARS = set("@#$;?")


def _check_abc(path: Path) -> None:
    """music21 skips what it cannot read in ABC; refuse text that is not ABC instead."""
    text = path.read_text(encoding="utf-8", errors="strict")
    if not re.search(r"^X:", text, re.M) and not re.search(r"^K:", text, re.M):
        raise MusicFileError(path, "not an ABC file (no X: or K: field)")
    for number, line in enumerate(text.splitlines(), 1):
        if _ABC_FIELD.match(line) or line.startswith("%"):
            continue
        bad = set(_ABC_SKIP.sub("", line)) & _ABC_BAD_CHARS
        if bad:
            raise MusicFileError(path, f"ABC syntax error on line {number}: unexpected {''.join(sorted(bad))!r}")


def _abc_tune(path: Path, index: int):
    """Parse only the index-th tune of an ABC file (a collection can hold hundreds; parsing
    them all to take one costs seconds per tune). The file header is kept in front of it."""
    import music21

    text = path.read_text(encoding="utf-8")
    starts = [m.start() for m in re.finditer(r"^X:", text, re.M)]
    if len(starts) <= 1:
        if index != 0:
            raise MusicFileError(path, f"holds one piece; index {index} is out of range")
        return music21.converter.parse(text, format="abc", forceSource=True)
    if not 0 <= index < len(starts):
        raise MusicFileError(path, f"has {len(starts)} tunes; index {index} is out of range")
    end = starts[index + 1] if index + 1 < len(starts) else len(text)
    return music21.converter.parse(text[: starts[0]] + text[starts[index]:end], format="abc", forceSource=True)


def _parse_music21(path: Path, index: int):
    import music21

    if path.suffix.lower() == ".abc":
        try:
            _check_abc(path)
        except UnicodeDecodeError:
            raise MusicFileError(path, "not a text file, so not ABC") from None
    if path.suffix.lower() == ".mxl":
        _check_archive(path)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if path.suffix.lower() == ".abc":
                parsed, index = _abc_tune(path, index), 0
            else:
                parsed = music21.converter.parse(str(path), forceSource=True)
    except MusicFileError:
        raise
    except Exception as exc:
        raise MusicFileError(path, f"cannot parse as {path.suffix.lstrip('.')} ({_first_line(exc)})") from None
    if isinstance(parsed, music21.stream.Opus):
        scores = list(parsed.scores)
        if not scores:
            raise MusicFileError(path, "contains no tunes")
        if not 0 <= index < len(scores):
            raise MusicFileError(path, f"has {len(scores)} tunes; index {index} is out of range")
        return scores[index]
    if index != 0:
        raise MusicFileError(path, f"holds one piece; index {index} is out of range")
    return parsed


def m21_to_score(stream, path: str | os.PathLike = "<music21>") -> symusic.Score:
    """Convert a music21 stream to a Score through an in-memory MIDI file."""
    from music21.midi import translate
    from music21.repeat import ExpanderException

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                midi_file = translate.streamToMidiFile(stream)
            except ExpanderException:  # repeats music21 reads but cannot unfold: play them as written
                midi_file = translate.streamToMidiFile(_without_repeats(stream))
            data = midi_file.writestr()
        score = symusic.Score.from_midi(data)
    except Exception as exc:
        longest = max((float(n.quarterLength) for n in stream.recurse().notesAndRests), default=0.0)
        if longest > 4 * 1024:
            raise MusicFileError(path, f"a note or rest lasts {longest:g} quarter notes, too long for MIDI") from None
        raise MusicFileError(path, f"cannot convert to MIDI ({_first_line(exc)})") from None
    _restore_slow_tempos(stream, score)
    return score


# The slowest tempo a MIDI file holds: 2^24 - 1 microseconds per quarter note (3.58 qpm).
SLOWEST_MIDI_QPM = 60e6 / 0xFFFFFF


def _restore_slow_tempos(stream, score: symusic.Score) -> None:
    """music21 writes a tempo below 3.58 qpm into 24 bits by wrapping it (1 bpm came back as 6.21):
    take such tempi from the score itself (symusic holds them exactly)."""
    marks = {}
    for mark in stream.flatten().getElementsByClass("MetronomeMark"):
        qpm = mark.getQuarterBPM()
        if qpm:
            marks.setdefault(float(mark.getOffsetInHierarchy(stream)), float(qpm))
    if not any(qpm < SLOWEST_MIDI_QPM for qpm in marks.values()):
        return
    score.tempos = type(score.tempos)()
    for offset, qpm in sorted(marks.items()):
        score.tempos.append(symusic.Tempo(int(round(offset * score.ticks_per_quarter)), qpm=qpm))


def _without_repeats(stream):
    """A copy of the stream with its repeat barlines and repeat expressions removed."""
    from music21 import bar, repeat, spanner

    copy = stream.coreCopyAsDerivation("withoutRepeats") if hasattr(stream, "coreCopyAsDerivation") \
        else __import__("copy").deepcopy(stream)
    for measure in copy.recurse().getElementsByClass("Measure"):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
        for element in list(measure.getElementsByClass(repeat.RepeatExpression)):
            measure.remove(element)
    for element in list(copy.recurse().getElementsByClass(spanner.RepeatBracket)):
        element.activeSite.remove(element)
    return copy


def write_midi(score: symusic.Score, path: str | os.PathLike) -> Path:
    """Write a Score as a standard MIDI file, atomically."""
    path = Path(path)
    if any(tempo.mspq > 0xFFFFFF for tempo in score.tempos):  # 24 bits would wrap it to a faster tempo
        score = score.copy()
        for tempo in score.tempos:
            tempo.mspq = min(tempo.mspq, 0xFFFFFF)
    with atomic_path(path) as tmp:
        score.dump_midi(str(tmp))
    return path


def score_to_m21(score: symusic.Score, quarter_divisors: tuple[int, ...] = (4, 3)):
    """A music21 Score from a symusic Score, quantized to sixteenths and eighth-triplets.

    Parts follow tracks; every part gets the time and key signatures, and a key is estimated
    (Krumhansl-Schmuckler) when the file has none, so the engraving has a signature.
    """
    import music21
    from music21.midi import translate

    # An empty first track holds the tempi, time and key signatures: music21 reads a track without
    # notes as the conductor and gives its signatures to every part (else only the first part has them).
    led = score.copy()
    led.tracks.insert(0, symusic.Track("", 0, False))
    midi_file = music21.midi.MidiFile()
    midi_file.readstr(led.dumps_midi())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = translate.midiFileToStream(midi_file, quantizePost=True, quarterLengthDivisors=quarter_divisors)
        if not score.key_signatures and stream.recurse().getElementsByClass("KeySignature").first() is None:
            try:
                key = stream.analyze("key")
                for part in stream.parts:
                    first_measure = part.getElementsByClass("Measure").first()
                    (first_measure or part).insert(0, music21.key.KeySignature(key.sharps))
            except Exception:
                pass
    return stream


def write_musicxml(score: symusic.Score, path: str | os.PathLike) -> Path:
    """Write a Score as MusicXML (.musicxml/.xml, or compressed .mxl), atomically."""
    path = Path(path)
    fmt = "mxl" if path.suffix.lower() == ".mxl" else "musicxml"
    stream = score_to_m21(score)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream.write(fmt, fp=str(tmp))
    return path


def write_score(score: symusic.Score, path: str | os.PathLike) -> Path:
    """Write by extension: .mid/.midi as MIDI, .musicxml/.xml/.mxl as MusicXML."""
    suffix = Path(path).suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return write_midi(score, path)
    if suffix in (".musicxml", ".xml", ".mxl"):
        return write_musicxml(score, path)
    raise MusicFileError(path, f"cannot write {suffix or '(no extension)'}; use .mid or .musicxml")
