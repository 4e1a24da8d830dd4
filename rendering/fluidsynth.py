"""Render a Score to audio with the FluidSynth library, offline and much faster than real time.

Every track gets its own MIDI channel (the synth has 256), so controllers of one track never
leak into another; drum tracks play from bank 128 on drum channels (the first on channel 10).
The score is converted to seconds by symusic, which applies every tempo change; all events
(programs, control changes including the sustain pedal, pitch bends, note-offs, note-ons with
their velocities) are sorted by sample position, and the synth renders the frames between
consecutive events straight into one float32 buffer. A release tail follows the last event,
then the result is peak-normalized with headroom.

SoundFont: the ``soundfont`` argument, else $CADENZA_SOUNDFONT, else the TimGM6mb.sf2 shipped
with pretty_midi (``default_soundfont``). .sf2 and .sf3 both load (FluidSynth decodes the
Ogg-compressed samples of .sf3 itself).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from cadenza.data.errors import CadenzaError, MissingDependencyError

from .audio import peak_normalize

DEFAULT_SAMPLE_RATE = 44100
SOUNDFONT_ENV = "CADENZA_SOUNDFONT"
SOUNDFONT_SUFFIXES = (".sf2", ".sf3")
INSTALL_HINT = ("the FluidSynth library is not installed: install it with `sudo apt-get install libfluidsynth3` "
                "(Debian/Ubuntu), `sudo dnf install fluidsynth-libs` (Fedora) or `brew install fluid-synth` (macOS), "
                "and pyfluidsynth with `pip install pyfluidsynth`; or pass --allow-fallback for symusic's "
                "built-in synthesizer")
MIDI_CHANNELS = 256
DRUM_CHANNEL = 9
DRUM_BANK = 128
SUSTAIN_CC = 64
BANK_SELECT_CCS = (0, 32)
_SYSTEM_SOUNDFONTS = ("/usr/share/sounds/sf2/default-GM.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2",
                      "/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf3/default-GM.sf3")

# Event kinds, in the order they are applied when they fall on the same sample: a program is set
# before anything plays, a note-off before a note-on of the same instant (repeated notes retrigger),
# controllers and bends before the notes they shape.
PROGRAM, NOTE_OFF, CONTROL, BEND, NOTE_ON = range(5)


def default_soundfont() -> Path:
    """The SoundFont used when none is given: $CADENZA_SOUNDFONT, else pretty_midi's TimGM6mb.sf2,
    else a system General MIDI SoundFont."""
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        return _checked_soundfont(Path(env).expanduser(), f"${SOUNDFONT_ENV}")
    spec = importlib.util.find_spec("pretty_midi")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "TimGM6mb.sf2"
        if bundled.is_file():
            return bundled
    for candidate in _SYSTEM_SOUNDFONTS:
        if Path(candidate).is_file():
            return Path(candidate).resolve()
    raise MissingDependencyError("no SoundFont found: pass --soundfont FILE.sf2, set $CADENZA_SOUNDFONT, "
                                 "or `pip install pretty_midi` (it ships TimGM6mb.sf2)")


def resolve_soundfont(soundfont: str | os.PathLike | None) -> Path:
    """An explicit SoundFont path, checked, or the default one."""
    if soundfont is None:
        return default_soundfont()
    return _checked_soundfont(Path(soundfont).expanduser(), "SoundFont")


def _checked_soundfont(path: Path, source: str) -> Path:
    if not path.is_file():
        raise CadenzaError(f"{path}: no such SoundFont file ({source})")
    if path.suffix.lower() not in SOUNDFONT_SUFFIXES:
        raise CadenzaError(f"{path}: a SoundFont must be a .sf2 or .sf3 file")
    return path.resolve()


def render(score, *, sample_rate: int = DEFAULT_SAMPLE_RATE, soundfont: str | os.PathLike | None = None,
           stereo: bool = False, normalize: bool = True, tail: float = 1.0, headroom_db: float = 1.0,
           allow_fallback: bool = False) -> np.ndarray:
    """Render a symusic Score (or a music file) to float32 audio, (frames,) or (frames, 2) when ``stereo``.

    The audio starts at the score's time zero and lasts until its last event plus ``tail``
    seconds of release. With ``normalize`` the peak sits ``headroom_db`` below full scale.
    Without the FluidSynth library this raises MissingDependencyError (with the install
    command), unless ``allow_fallback`` asks for symusic's built-in synthesizer.
    """
    from cadenza.data.limits import check_score

    if isinstance(score, (str, os.PathLike)):
        from cadenza.data.io import read_score

        score = read_score(score)
    check_score(score, "the score to render")  # the audio buffer grows with the duration: refuse first
    soundfont_path = resolve_soundfont(soundfont)
    seconds = score.to("second")
    try:
        loaded = _loaded_soundfont(soundfont_path)
    except MissingDependencyError:
        if not allow_fallback:
            raise
        from .fallback import render_fallback

        audio = render_fallback(seconds, soundfont_path, int(sample_rate), tail)
    else:
        audio = loaded.render(seconds, int(sample_rate), tail)
    if not stereo:
        audio = (audio[:, 0] + audio[:, 1]) * np.float32(0.5)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    return peak_normalize(audio, headroom_db) if normalize else audio


# --- the FluidSynth engine -------------------------------------------------------------------

def import_fluidsynth():
    """pyfluidsynth, or a MissingDependencyError saying how to install the library. Its import
    prints where it found the library when $CI is set; that must not reach our stdout (JSON)."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import fluidsynth
    except (ImportError, OSError):
        raise MissingDependencyError(INSTALL_HINT) from None
    return fluidsynth


class _Library:
    """The few FluidSynth C functions called directly: rendering float frames into a NumPy
    buffer without copies, sharing one loaded SoundFont between synths, channel types, logging."""

    def __init__(self, fluidsynth):
        lib = fluidsynth._fl
        ptr, i = ctypes.c_void_p, ctypes.c_int

        def bind(name, argtypes, restype=ctypes.c_int):
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype
            return function

        self.write_float = bind("fluid_synth_write_float", [ptr, i, ptr, i, i, ptr, i, i])
        self.noteon = bind("fluid_synth_noteon", [ptr, i, i, i])
        self.noteoff = bind("fluid_synth_noteoff", [ptr, i, i])
        self.cc = bind("fluid_synth_cc", [ptr, i, i, i])
        self.pitch_bend = bind("fluid_synth_pitch_bend", [ptr, i, i])
        self.get_sfont_by_id = bind("fluid_synth_get_sfont_by_id", [ptr, i], ptr)
        self.add_sfont = bind("fluid_synth_add_sfont", [ptr, ptr])
        self.remove_sfont = bind("fluid_synth_remove_sfont", [ptr, ptr])
        self.set_channel_type = bind("fluid_synth_set_channel_type", [ptr, i, i])
        set_log_function = bind("fluid_set_log_function", [i, ptr, ptr], ptr)
        set_log_function(FLUID_LOG_WARNING, None, None)  # "no preset on channel N" for every unused channel


FLUID_LOG_WARNING = 2
CHANNEL_TYPE_MELODIC, CHANNEL_TYPE_DRUM = 0, 1
CHORUS_CC = 93


class _LoadedSoundFont:
    """A SoundFont loaded once (parsing a large one takes far longer than rendering a chorale)
    and lent to a fresh synth for every render, so no state of one render reaches the next:
    the same score always renders to the same samples."""

    def __init__(self, path: Path):
        fluidsynth = import_fluidsynth()
        self.fluidsynth = fluidsynth
        self.library = _Library(fluidsynth)
        self.lock = threading.Lock()
        self.holder = fluidsynth.Synth(gain=0.2, samplerate=float(DEFAULT_SAMPLE_RATE), channels=16)
        sfid = self.holder.sfload(str(path))
        if sfid < 0:
            self.holder.delete()
            raise CadenzaError(f"{path}: FluidSynth cannot load this SoundFont (corrupt, or an .sf3 and this "
                               "FluidSynth was built without Ogg/Vorbis support)")
        self.sfont = ctypes.c_void_p(self.library.get_sfont_by_id(ctypes.c_void_p(self.holder.synth), sfid))

    def render(self, score, sample_rate: int, tail: float) -> np.ndarray:
        """Render a Score in seconds to (frames, 2) float32 audio at the synth's gain."""
        tracks = [t for t in score.tracks if len(t.notes) or len(t.controls) or len(t.pitch_bends)]
        uses_chorus = any(c.number == CHORUS_CC and c.value > 0 for t in tracks for c in t.controls)
        n_channels = min(MIDI_CHANNELS, 16 * (len(tracks) // 15 + 1))
        with self.lock:
            synth = self.fluidsynth.Synth(gain=0.2, samplerate=float(sample_rate), channels=n_channels,
                                          **{"synth.chorus.active": int(uses_chorus)})
            handle = ctypes.c_void_p(synth.synth)
            sfid = self.library.add_sfont(handle, self.sfont)
            try:
                channels = self._assign_channels(synth, handle, sfid, tracks, n_channels)
                events = _event_table(tracks, channels, sample_rate)
                end_seconds = max(float(score.end()), 0.0) if tracks else 0.0
                total = int(np.ceil((end_seconds + max(tail, 0.0)) * sample_rate))
                if len(events):
                    total = max(total, int(events[:, 0].max()) + 1)
                out = np.zeros((total, 2), dtype=np.float32)
                self._play(handle, events, out)
            finally:
                self.library.remove_sfont(handle, self.sfont)
                synth.delete()
        return out

    def _assign_channels(self, synth, handle, sfid: int, tracks, n_channels: int) -> list[int]:
        """A channel per track: the first drum track on channel 10, further drum tracks on other
        channels switched to drum mode, melodic tracks on the rest; only past 255 tracks do
        tracks of the same program share a channel."""
        channels: list[int] = []
        free = [c for c in range(n_channels) if c != DRUM_CHANNEL]
        drum_channel_taken = False
        shared: dict[tuple[bool, int], int] = {}
        for track in tracks:
            key = (bool(track.is_drum), int(track.program))
            if track.is_drum and not drum_channel_taken:
                channel, drum_channel_taken = DRUM_CHANNEL, True
            elif free:
                channel = free.pop(0)
            else:
                channel = shared.get(key, DRUM_CHANNEL if track.is_drum else 0)
            shared.setdefault(key, channel)
            channels.append(channel)
            self.library.set_channel_type(handle, channel, CHANNEL_TYPE_DRUM if track.is_drum else CHANNEL_TYPE_MELODIC)
            bank = DRUM_BANK if track.is_drum else 0
            if synth.program_select(channel, sfid, bank, int(track.program)) != 0:
                synth.program_select(channel, sfid, bank, 0)  # program missing from this SoundFont
        return channels

    def _play(self, handle, events: np.ndarray, out: np.ndarray) -> None:
        """Send the events in order, rendering the frames between consecutive event times."""
        library = self.library
        base = out.ctypes.data

        def write(start: int, stop: int) -> None:
            if stop > start:  # interleaved stereo: left at even offsets, right at odd
                library.write_float(handle, stop - start, base, 2 * start, 2, base, 2 * start + 1, 2)

        sounding: dict[tuple[int, int], int] = {}
        position = 0
        for sample, kind, channel, a, b in events.tolist():
            if sample > position:
                write(position, sample)
                position = sample
            if kind == NOTE_ON:
                # FluidSynth releases an earlier voice of the same key itself; count overlaps so
                # the first note's end does not cut the second one short.
                sounding[(channel, a)] = sounding.get((channel, a), 0) + 1
                library.noteon(handle, channel, a, b)
            elif kind == NOTE_OFF:
                count = sounding.get((channel, a), 0)
                if count <= 1:
                    sounding.pop((channel, a), None)
                    library.noteoff(handle, channel, a)
                else:
                    sounding[(channel, a)] = count - 1
            elif kind == CONTROL:
                library.cc(handle, channel, a, b)
            elif kind == BEND:
                library.pitch_bend(handle, channel, b)
        write(position, len(out))


def _event_table(tracks, channels: list[int], sample_rate: int) -> np.ndarray:
    """All events as int64 rows (sample, kind, channel, a, b), sorted by time then kind."""
    blocks = []

    def add(times, kind: int, channel: int, a, b) -> None:
        samples = np.round(np.asarray(times, dtype=np.float64) * sample_rate).astype(np.int64)
        n = len(samples)
        blocks.append(np.stack([np.maximum(samples, 0), np.full(n, kind), np.full(n, channel),
                                np.broadcast_to(np.asarray(a, dtype=np.int64), (n,)),
                                np.broadcast_to(np.asarray(b, dtype=np.int64), (n,))], axis=1))

    for track, channel in zip(tracks, channels):
        notes = track.notes.numpy()
        if len(notes["time"]):
            velocity = np.clip(notes["velocity"].astype(np.int64), 1, 127)
            pitch = notes["pitch"].astype(np.int64)
            keep = (pitch >= 0) & (pitch <= 127)
            start = notes["time"][keep].astype(np.float64)
            end = start + np.maximum(notes["duration"][keep].astype(np.float64), 0.0)
            add(start, NOTE_ON, channel, pitch[keep], velocity[keep])
            add(end, NOTE_OFF, channel, pitch[keep], 0)
        controls = track.controls.numpy()
        has_sustain_cc = False
        if len(controls["time"]):
            number = controls["number"].astype(np.int64)
            keep = ~np.isin(number, BANK_SELECT_CCS)
            has_sustain_cc = bool(np.any(number == SUSTAIN_CC))
            add(controls["time"][keep], CONTROL, channel, number[keep],
                np.clip(controls["value"][keep].astype(np.int64), 0, 127))
        pedals = track.pedals.numpy()
        if len(pedals["time"]) and not has_sustain_cc:  # pedals built in code, not read from CC 64
            down = pedals["time"].astype(np.float64)
            add(down, CONTROL, channel, SUSTAIN_CC, 127)
            add(down + pedals["duration"].astype(np.float64), CONTROL, channel, SUSTAIN_CC, 0)
        bends = track.pitch_bends.numpy()
        if len(bends["time"]):
            value = np.clip(bends["value"].astype(np.int64) + 8192, 0, 16383)
            add(bends["time"], BEND, channel, 0, value)
    if not blocks:
        return np.zeros((0, 5), dtype=np.int64)
    table = np.concatenate(blocks)
    return table[np.lexsort((table[:, 1], table[:, 0]))]


_SOUNDFONTS: dict[tuple[str, float], _LoadedSoundFont] = {}
_SOUNDFONTS_LOCK = threading.Lock()
_MAX_SOUNDFONTS = 2


def _loaded_soundfont(path: Path) -> _LoadedSoundFont:
    key = (str(path), path.stat().st_mtime)
    with _SOUNDFONTS_LOCK:
        loaded = _SOUNDFONTS.get(key)
        if loaded is None:
            loaded = _LoadedSoundFont(path)
            while len(_SOUNDFONTS) >= _MAX_SOUNDFONTS:
                evicted = _SOUNDFONTS.pop(next(iter(_SOUNDFONTS)))
                with evicted.lock:
                    evicted.holder.delete()
            _SOUNDFONTS[key] = loaded
        return loaded
