"""Audio/MIDI pairs for training and evaluating transcription, made here by rendering MIDI.

Sources are the built-in corpora (every voice played as one instrument) and random textures
that cover what chorales lack: block chords, fast runs, repeated notes, wide ranges. Each
example is rendered through FluidSynth with a random SoundFont from a list, program, tempo
and velocity curve, then augmented (gain, EQ, a little reverb, noise). The pair is cached as
``{split}/{id}.flac`` (16 kHz mono) + ``{split}/{id}.mid`` (the label, in seconds at 120 bpm)
and a line in ``{split}/manifest.jsonl``; an example keeps the split of its source piece, so
test pieces never leak into training. Re-running skips what is already there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import symusic

from cadenza.data.atomic import atomic_path
from cadenza.data.corpora import SPLITS, open_corpus, split_of
from cadenza.data.errors import MissingDependencyError

from . import SAMPLE_RATE  # defined once, in the package
PIANO_PROGRAMS = (0, 1, 2, 3)  # acoustic grand, bright, electric grand, honky-tonk: one "piano" label


def _existing(paths) -> list[Path]:
    return [Path(p) for p in paths if Path(p).is_file()]


def training_soundfonts() -> list[Path]:
    """SoundFonts used for training data: TimGM6mb (shipped with pretty_midi) and MuseScore's
    General Lite (Debian's musescore-general-soundfont-small) where installed."""
    import importlib.util

    pretty_midi = importlib.util.find_spec("pretty_midi")  # located, not imported: it imports pyfluidsynth
    return _existing([Path(pretty_midi.origin).parent / "TimGM6mb.sf2" if pretty_midi else "",
                      "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"])


def heldout_soundfont() -> Path:
    """FluidR3_GM (Debian's fluid-soundfont-gm): never used for training, only for evaluation."""
    for candidate in ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2"):
        if Path(candidate).is_file():
            return Path(candidate)
    raise MissingDependencyError("the held-out SoundFont FluidR3_GM.sf2 is missing; "
                                 "install it with `apt-get install fluid-soundfont-gm`")


# -- rendering ---------------------------------------------------------------------------
class FluidRenderer:
    """A FluidSynth instance with SoundFonts loaded once (loading an .sf3 takes seconds).

    Reverb and chorus are off: augmentation adds room sound, so the label stays exact.
    """

    def __init__(self, soundfonts: list[Path], sample_rate: int = SAMPLE_RATE):
        from cadenza.rendering.fluidsynth import import_fluidsynth

        fluidsynth = import_fluidsynth()
        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(gain=0.4, samplerate=float(sample_rate))
        self.synth.setting("synth.reverb.active", 0)
        self.synth.setting("synth.chorus.active", 0)
        self.soundfont_ids = {str(sf): self.synth.sfload(str(sf)) for sf in soundfonts}

    def render(self, notes: list[tuple[float, float, int, int]], soundfont: Path, program: int,
               tail: float = 1.0) -> np.ndarray:
        """Mono float32 audio of (start, end, pitch, velocity) notes played with one program."""
        synth = self.synth
        synth.program_select(0, self.soundfont_ids[str(soundfont)], 0, program)
        events = sorted([(end, 0, pitch, 0) for start, end, pitch, _ in notes]
                        + [(start, 1, pitch, vel) for start, _, pitch, vel in notes])
        chunks, written = [], 0
        for time, is_on, pitch, velocity in events:
            frame = int(round(time * self.sample_rate))
            if frame > written:
                chunks.append(synth.get_samples(frame - written))
                written = frame
            if is_on:
                synth.noteon(0, pitch, velocity)
            else:
                synth.noteoff(0, pitch)
        chunks.append(synth.get_samples(int(tail * self.sample_rate)))
        for pitch in range(128):
            synth.noteoff(0, pitch)
        synth.get_samples(self.sample_rate // 2)  # let releases die out before the next example
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
        return stereo.mean(axis=1)

    def close(self) -> None:
        self.synth.delete()


# -- augmentation ------------------------------------------------------------------------
def augment(audio: np.ndarray, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Random EQ (low/high shelf), a little reverb, noise and gain; peak stays below 1."""
    from scipy import signal

    out = audio.astype(np.float64)
    if rng.random() < 0.7:  # tilt EQ: a first-order low-pass or high-pass blended with the dry signal
        cutoff = rng.uniform(300, 4000)
        b, a = signal.butter(1, cutoff / (sample_rate / 2), btype="low" if rng.random() < 0.5 else "high")
        out = out + rng.uniform(-0.6, 0.6) * signal.lfilter(b, a, out)
    if rng.random() < 0.5:  # reverb: exponentially decaying noise impulse response
        rt60 = rng.uniform(0.2, 0.9)
        length = int(rt60 * sample_rate)
        t = np.arange(length) / sample_rate
        ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
        ir /= np.sqrt((ir ** 2).sum())
        wet = signal.fftconvolve(out, ir)[: len(out)]
        out = out + rng.uniform(0.05, 0.3) * wet
    peak = np.abs(out).max()
    if peak > 0:
        out = out / peak * 10 ** (rng.uniform(-20, -1) / 20)
    if rng.random() < 0.5:
        rms = np.sqrt(np.mean(out ** 2)) + 1e-9
        out = out + rng.standard_normal(len(out)) * rms * 10 ** (-rng.uniform(25, 50) / 20)
    return np.clip(out, -1, 1).astype(np.float32)


# -- note sources ------------------------------------------------------------------------
def score_notes(score: symusic.Score) -> list[tuple[float, float, int, int]]:
    """All non-drum notes of a score as (start, end, pitch, velocity) in seconds."""
    seconds = score.to("second")
    return [(float(n.time), float(n.time + n.duration), int(n.pitch), int(n.velocity))
            for track in seconds.tracks if not track.is_drum for n in track.notes]


def perform(notes, rng: np.random.Generator, max_seconds: float) -> list[tuple[float, float, int, int]]:
    """A varied performance: random tempo, velocity curve and articulation, one excerpt of
    at most ``max_seconds``; overlapping repeats of a pitch are trimmed (as MT3 does)."""
    if not notes:
        return []
    stretch = rng.uniform(0.6, 1.4)
    base = rng.uniform(45, 110)
    staccato = rng.random() < 0.2
    start_at = 0.0
    total = max(end for _, end, _, _ in notes) * stretch
    if total > max_seconds:
        start_at = rng.uniform(0, total - max_seconds)
    out = []
    for start, end, pitch, _ in notes:
        s, e = start * stretch - start_at, end * stretch - start_at
        if s < 0 or s >= max_seconds or not 21 <= pitch <= 108:
            continue
        if staccato:
            e = s + min(e - s, rng.uniform(0.08, 0.25))
        e = min(e, max_seconds)
        velocity = int(np.clip(base + 15 * math.sin(s / 3.0) + rng.normal(0, 8), 15, 127))
        out.append((round(s, 4), round(e, 4), int(pitch), velocity))
    return trim_overlaps(out)


def trim_overlaps(notes):
    """End a note where the next note of the same pitch begins; drop notes shorter than 20 ms."""
    by_pitch: dict[int, list] = {}
    for note in sorted(notes):
        by_pitch.setdefault(note[2], []).append(list(note))
    out = []
    for group in by_pitch.values():
        for i, note in enumerate(group):
            if i + 1 < len(group):
                note[1] = min(note[1], group[i + 1][0])
            if note[1] - note[0] >= 0.02:
                out.append(tuple(note))
    return sorted(out)


def random_texture(rng: np.random.Generator, seconds: float) -> list[tuple[float, float, int, int]]:
    """Random piano writing for coverage: block chords, fast runs, repeated notes, wide leaps."""
    notes = []
    time = 0.0
    while time < seconds - 0.3:
        kind = str(rng.choice(["chords", "run", "repeat", "leaps", "poly"]))
        span = rng.uniform(1.0, 3.0)
        velocity = int(rng.uniform(35, 120))
        if kind == "chords":
            while time < min(seconds, time + span) - 0.2:
                root = int(rng.integers(28, 88))
                size = int(rng.integers(2, 6))
                pitches = sorted(set(int(root + x) for x in rng.choice([0, 3, 4, 5, 7, 9, 10, 12, 14, 16, 19],
                                                                      size, replace=False)))
                length = rng.uniform(0.15, 1.0)
                notes += [(time, time + length, p, int(np.clip(velocity + rng.normal(0, 6), 10, 127)))
                          for p in pitches if p <= 108]
                time += length + rng.choice([0.0, rng.uniform(0, 0.3)])
        elif kind == "run":
            step = rng.uniform(0.05, 0.14)
            pitch = int(rng.integers(30, 96))
            direction = rng.choice([-1, 1])
            scales = ([2, 2, 1, 2, 2, 2, 1], [1], [2, 1, 2, 2, 1, 3, 1], [3, 4, 5])
            scale = scales[int(rng.integers(len(scales)))]
            for i in range(int(span / step)):
                if not 21 <= pitch <= 108:
                    break
                notes.append((time, time + step * rng.uniform(0.6, 1.0), pitch,
                              int(np.clip(velocity + rng.normal(0, 8), 10, 127))))
                pitch += direction * scale[i % len(scale)]
                time += step
        elif kind == "repeat":
            pitch = int(rng.integers(36, 96))
            step = rng.uniform(0.08, 0.3)
            for _ in range(int(span / step)):
                notes.append((time, time + step * 0.7, pitch, int(np.clip(velocity + rng.normal(0, 10), 10, 127))))
                time += step
        elif kind == "leaps":
            step = rng.uniform(0.12, 0.4)
            for _ in range(int(span / step)):
                pitch = int(rng.integers(21, 109))
                notes.append((time, time + step * rng.uniform(0.5, 1.5), pitch, int(rng.uniform(25, 127))))
                time += step
        else:  # independent voices with their own rhythms
            end = time + span
            for low in (int(rng.integers(24, 50)), int(rng.integers(50, 70)), int(rng.integers(65, 90))):
                t = time
                while t < end:
                    length = float(rng.choice([0.125, 0.25, 0.375, 0.5, 0.75]))
                    notes.append((t, t + length * 0.95, int(low + rng.integers(0, 12)),
                                  int(np.clip(velocity + rng.normal(0, 10), 10, 127))))
                    t += length
            time = end
    notes = [(round(s, 4), round(min(e, seconds), 4), p, v) for s, e, p, v in notes if s < seconds]
    return trim_overlaps(notes)


# -- the dataset -------------------------------------------------------------------------
@dataclass
class PairSpec:
    """What to build: sources, counts per split, rendering variety."""

    corpora: tuple[str, ...] = ("bach-chorales", "classical")
    pieces_per_split: dict[str, int] = field(default_factory=lambda: {"train": 300, "valid": 10, "test": 20})
    textures_per_split: dict[str, int] = field(default_factory=lambda: {"train": 150, "valid": 5, "test": 0})
    max_seconds: float = 20.0
    programs: tuple[int, ...] = PIANO_PROGRAMS
    label_program: int | None = 0  # every note labeled with this program (a piano model); None keeps it
    soundfonts: tuple[str, ...] = ()  # empty: training_soundfonts()
    augment: bool = True
    seed: int = 0


def _example_seed(seed: int, example_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big")


def build_pairs(out_dir: str | os.PathLike, spec: PairSpec | None = None, splits=SPLITS,
                progress: bool = True) -> dict:
    """Render and cache audio/MIDI pairs under ``out_dir``; returns a summary per split."""
    import soundfile
    from tqdm import tqdm

    from cadenza.tokenizers.mt3 import notes_to_score

    spec = spec or PairSpec()
    out = Path(out_dir)
    soundfonts = [Path(s) for s in spec.soundfonts] or training_soundfonts()
    if not soundfonts:
        raise MissingDependencyError("no SoundFont found for rendering transcription data")
    jobs: list[tuple[str, str, object]] = []  # (split, example id, source)
    for split in splits:
        wanted = spec.pieces_per_split.get(split, 0)
        pieces = []
        for corpus in spec.corpora:
            pieces += open_corpus(corpus).pieces(split=split)
        rng = np.random.default_rng(spec.seed)
        order = rng.permutation(len(pieces))[:wanted] if pieces else []
        jobs += [(split, pieces[i].id, pieces[i].path) for i in order]
        jobs += [(split, f"texture-{split}-{i:05d}", None) for i in range(spec.textures_per_split.get(split, 0))]
    (out / "spec.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    renderer = None
    summary = {split: {"examples": 0, "seconds": 0.0, "notes": 0, "skipped": 0} for split in splits}
    failed = []
    manifests = {split: _read_manifest(out / split) for split in splits}
    for split, example_id, source in tqdm(jobs, desc="rendering pairs", unit="example", disable=not progress):
        safe = example_id.replace("/", "__").replace("#", "_")
        if safe in manifests[split]:
            entry = manifests[split][safe]
            summary[split]["examples"] += 1
            summary[split]["seconds"] += entry["seconds"]
            summary[split]["notes"] += entry["notes"]
            continue
        rng = np.random.default_rng(_example_seed(spec.seed, example_id))
        try:
            if source is None:
                notes = random_texture(rng, spec.max_seconds)
            else:
                notes = perform(score_notes(symusic.Score(str(source))), rng, spec.max_seconds)
        except Exception as exc:  # a broken source piece is skipped and reported
            failed.append((example_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            continue
        if not notes:
            summary[split]["skipped"] += 1
            continue
        if renderer is None:
            renderer = FluidRenderer(soundfonts)
        soundfont = soundfonts[int(rng.integers(len(soundfonts)))]
        program = int(spec.programs[int(rng.integers(len(spec.programs)))])
        audio = renderer.render(notes, soundfont, program)
        audio = augment(audio, rng) if spec.augment else audio / max(1e-6, np.abs(audio).max()) * 0.5
        label = spec.label_program if spec.label_program is not None else program
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{safe}.flac") as tmp:
            soundfile.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16")
        score = notes_to_score([(s, e, p, v, label, False) for s, e, p, v in notes])
        with atomic_path(folder / f"{safe}.mid") as tmp:
            score.dump_midi(str(tmp))
        entry = {"id": safe, "source": example_id, "split": split, "seconds": len(audio) / SAMPLE_RATE,
                 "notes": len(notes), "soundfont": soundfont.name, "program": program}
        with open(folder / "manifest.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        manifests[split][safe] = entry
        summary[split]["examples"] += 1
        summary[split]["seconds"] += entry["seconds"]
        summary[split]["notes"] += entry["notes"]
    if renderer is not None:
        renderer.close()
    return {"splits": summary, "failed": failed, "soundfonts": [s.name for s in soundfonts]}


def _read_manifest(folder: Path) -> dict[str, dict]:
    path = folder / "manifest.jsonl"
    entries = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                if (folder / f"{entry['id']}.flac").exists() and (folder / f"{entry['id']}.mid").exists():
                    entries[entry["id"]] = entry
    return entries


def load_pairs(data_dir: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """(audio, midi) paths of the cached examples of one split."""
    folder = Path(data_dir) / split
    return [(folder / f"{e}.flac", folder / f"{e}.mid") for e in sorted(_read_manifest(folder))]


__all__ = ["FluidRenderer", "PairSpec", "augment", "build_pairs", "heldout_soundfont", "load_pairs",
           "perform", "random_texture", "score_notes", "split_of", "training_soundfonts", "trim_overlaps"]
