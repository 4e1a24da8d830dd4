"""What a user wants to know about a piece or a corpus: duration, tracks, tempi, metre, key."""

from __future__ import annotations

from collections import Counter

import numpy as np
import symusic

MAJOR_KEYS = ["Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#"]
MINOR_KEYS = ["ab", "eb", "bb", "f", "c", "g", "d", "a", "e", "b", "f#", "c#", "g#", "d#", "a#"]
PITCH_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def key_name(sharps: int, minor: bool) -> str:
    """'A major' / 'f# minor' from a key signature's sharps (negative for flats) and mode."""
    sharps = max(-7, min(7, int(sharps)))
    return f"{MINOR_KEYS[sharps + 7]} minor" if minor else f"{MAJOR_KEYS[sharps + 7]} major"


def pitch_name(pitch: int) -> str:
    """MIDI pitch as a name with octave, middle C = C4."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


GM_PROGRAMS = (
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet", "Celesta", "Glockenspiel", "Music Box",
    "Vibraphone", "Marimba", "Xylophone", "Tubular Bells", "Dulcimer", "Drawbar Organ", "Percussive Organ",
    "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica", "Tango Accordion",
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)", "Electric Guitar (clean)",
    "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics", "Acoustic Bass",
    "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1", "Slap Bass 2",
    "Synth Bass 1", "Synth Bass 2", "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings",
    "Pizzicato Strings", "Orchestral Harp", "Timpani", "String Ensemble 1", "String Ensemble 2",
    "Synth Strings 1", "Synth Strings 2", "Choir Aahs", "Voice Oohs", "Synth Choir", "Orchestra Hit",
    "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass 1",
    "Synth Brass 2", "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn",
    "Bassoon", "Clarinet", "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi",
    "Whistle", "Ocarina", "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)",
    "Lead 5 (charang)", "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)", "Pad 1 (new age)",
    "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)", "Pad 7 (halo)",
    "Pad 8 (sweep)", "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)",
    "FX 5 (brightness)", "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)", "Sitar", "Banjo", "Shamisen",
    "Koto", "Kalimba", "Bag pipe", "Fiddle", "Shanai", "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock",
    "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal", "Guitar Fret Noise", "Breath Noise",
    "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause", "Gunshot",
)


def gm_program_name(program: int) -> str:
    """The General MIDI instrument name of a program number (0-127)."""
    return GM_PROGRAMS[int(program)]


def score_summary(score: symusic.Score) -> dict:
    """A plain dict describing a Score (seconds, not ticks)."""
    seconds = score.to("second")
    tracks = []
    for track in seconds.tracks:
        pitches = track.notes.numpy()["pitch"] if track.notes else np.zeros(0, int)
        tracks.append({
            "name": track.name,
            "program": int(track.program),
            "instrument": "Drums" if track.is_drum else gm_program_name(track.program),
            "is_drum": bool(track.is_drum),
            "notes": len(track.notes),
            "pitch_range": [int(pitches.min()), int(pitches.max())] if len(pitches) else None,
        })
    return {
        "duration_seconds": round(float(seconds.end()), 3),
        "ticks_per_quarter": int(score.ticks_per_quarter),
        "notes": int(score.note_num()),
        "tracks": tracks,
        "tempos_qpm": sorted({round(float(t.qpm), 2) for t in score.tempos}),
        "time_signatures": _unique([f"{ts.numerator}/{ts.denominator}" for ts in score.time_signatures]),
        "keys": _unique([key_name(k.key, bool(k.tonality)) for k in score.key_signatures]),
    }


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def format_summary(summary: dict, title: str) -> str:
    lines = [title]
    minutes, secs = divmod(summary["duration_seconds"], 60)
    lines.append(f"  duration        {int(minutes)}:{secs:05.2f} ({summary['duration_seconds']:.2f} s)")
    lines.append(f"  notes           {summary['notes']}")
    lines.append(f"  tempo (qpm)     {', '.join(f'{q:g}' for q in summary['tempos_qpm']) or 'none (120 assumed)'}")
    lines.append(f"  time signature  {', '.join(summary['time_signatures']) or 'none'}")
    lines.append(f"  key             {', '.join(summary['keys']) or 'unknown'}")
    lines.append(f"  tracks          {len(summary['tracks'])}")
    for i, t in enumerate(summary["tracks"]):
        rng = t["pitch_range"]
        rng_text = f"{pitch_name(rng[0])}-{pitch_name(rng[1])}" if rng else "-"
        prog = "drums" if t["is_drum"] else f"program {t['program']:3d} ({t['instrument']})"
        lines.append(f"    {i:2d} {t['name'][:24]:24s} {prog:38s} {t['notes']:6d} notes  {rng_text}")
    return "\n".join(lines)


def pieces_stats(pieces, progress: bool = True) -> dict:
    """``corpus_stats`` of corpus pieces read with ``read_score`` (its format checks and limits);
    the pieces it refuses are listed under "broken" as (piece id, reason) and left out."""
    from tqdm import tqdm

    from .errors import CadenzaError
    from .io import read_score

    broken: list[tuple[str, str]] = []

    def scores():
        for piece in tqdm(pieces, desc="reading", unit="piece", leave=False, disable=not progress):
            try:
                yield read_score(piece.path)
            except CadenzaError as exc:
                broken.append((piece.id, str(exc)))

    stats = corpus_stats(scores())
    stats["broken"] = broken
    return stats


def corpus_stats(scores) -> dict:
    """Aggregate statistics over an iterable of Scores."""
    pieces = notes = 0
    seconds = 0.0
    programs: Counter = Counter()
    time_sigs: Counter = Counter()
    low, high = 127, 0
    for score in scores:
        pieces += 1
        notes += score.note_num()
        seconds += float(score.to("second").end())
        for track in score.tracks:
            if not track.notes:
                continue
            programs["drums" if track.is_drum else int(track.program)] += len(track.notes)
            pitches = track.notes.numpy()["pitch"]
            low, high = min(low, int(pitches.min())), max(high, int(pitches.max()))
        for ts in score.time_signatures[:1]:
            time_sigs[f"{ts.numerator}/{ts.denominator}"] += 1
    return {
        "pieces": pieces,
        "notes": notes,
        "hours": round(seconds / 3600, 3),
        "programs": dict(programs.most_common()),
        "pitch_range": [low, high] if notes else None,
        "time_signatures": dict(time_sigs.most_common()),
    }


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")


def audio_summary(path) -> dict:
    """Duration, sample rate, channels and peak level of an audio file, read in blocks (a long
    recording is never held whole). Raises MusicFileError for a file that is not readable audio."""
    import math
    from pathlib import Path

    import soundfile

    from .errors import MusicFileError
    from .io import _check_file, _first_line

    path = Path(path)
    _check_file(path)
    try:
        with soundfile.SoundFile(str(path)) as audio:
            rate, channels, frames, fmt = audio.samplerate, audio.channels, audio.frames, audio.format
            peak, finite = 0.0, True
            for block in audio.blocks(blocksize=65536, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    finite = False
                    block = block[np.isfinite(block)]
                if block.size:
                    peak = max(peak, float(np.abs(block).max()))
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as exc:
        raise MusicFileError(path, f"cannot read as audio ({_first_line(exc)})") from None
    if rate <= 0:
        raise MusicFileError(path, f"a sample rate of {rate} Hz is not a recording")
    return {
        "duration_seconds": round(frames / rate, 3),
        "sample_rate": int(rate),
        "channels": int(channels),
        "frames": int(frames),
        "format": fmt,
        "peak": round(peak, 6),
        "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else None,
        "finite": finite,
    }


def format_audio_summary(summary: dict, title: str) -> str:
    minutes, secs = divmod(summary["duration_seconds"], 60)
    peak = "silent" if summary["peak_dbfs"] is None else f"{summary['peak_dbfs']:.1f} dBFS ({summary['peak']:.3f})"
    if not summary["finite"]:
        peak += "; holds NaN or infinite samples"
    channels = {1: "mono", 2: "stereo"}.get(summary["channels"], f"{summary['channels']} channels")
    return "\n".join([
        title,
        f"  duration        {int(minutes)}:{secs:05.2f} ({summary['duration_seconds']:.2f} s)",
        f"  sample rate     {summary['sample_rate']} Hz",
        f"  channels        {summary['channels']} ({channels})",
        f"  format          {summary['format']}",
        f"  peak level      {peak}",
    ])
