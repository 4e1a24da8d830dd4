"""Audio/MIDI pairs for training and evaluating transcription, made here by rendering MIDI.

Sources are the built-in corpora (each part a voice on its own MIDI channel) and random textures
that cover what chorales lack: block chords, fast runs, repeated notes, wide ranges, quiet and
loud playing, pedalled passages. Each example is rendered through FluidSynth with a random
SoundFont from a list (or by a recorded piano's per-key samples, ``cadenza.rendering.sampler``), program, tempo, velocity curve, room (reverb and chorus sends) and a
small detuning, then augmented (gain, EQ tilt, a little extra reverb, noise). The label keeps
every note the performance plays: unisons across voices and short notes stay; only a note that
overlaps the next note of its own pitch in its own voice ends where that one begins (a key cannot
sound twice), and pedal lengthens notes to the release as the sound does. The pair is cached as
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
# an ensemble rendering draws one of these per part: piano, organ, guitar, violin..cello, brass, winds
ENSEMBLE_PROGRAMS = (0, 19, 24, 40, 41, 42, 56, 57, 60, 68, 70, 71, 73)


def _existing(paths) -> list[Path]:
    return [Path(p) for p in paths if Path(p).is_file()]


def training_soundfonts() -> list[Path]:
    """SoundFonts used for training data, where installed: TimGM6mb (shipped with pretty_midi, and
    Debian's timgm6mb-soundfont), MuseScore General Lite and full (musescore-general-soundfont-small,
    musescore-general-soundfont), the OPL3 FM bank (opl3-soundfont) and a recorded piano's
    per-key samples and the Salamander Grand Piano's velocity layers (``sh .ci/sysdeps.sh
    piano-samples``; see ``cadenza.rendering.sampler``).
    FluidR3_GM is held out."""
    import importlib.util

    from cadenza.rendering.sampler import installed_sample_sets

    pretty_midi = importlib.util.find_spec("pretty_midi")  # located, not imported: it imports pyfluidsynth
    found = _existing([Path(pretty_midi.origin).parent / "TimGM6mb.sf2" if pretty_midi else "",
                       "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
                       "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
                       "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2"])
    return found + installed_sample_sets()


def heldout_soundfont() -> Path:
    """FluidR3_GM (Debian's fluid-soundfont-gm): never used for training, only for evaluation."""
    for candidate in ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2"):
        if Path(candidate).is_file():
            return Path(candidate)
    raise MissingDependencyError("the held-out SoundFont FluidR3_GM.sf2 is missing; "
                                 "install it with `apt-get install fluid-soundfont-gm`")


# -- rendering ---------------------------------------------------------------------------
Note = tuple  # (start, end, pitch, velocity, voice): seconds, MIDI pitch and velocity, voice index
CHANNELS = tuple(c for c in range(16) if c != 9)  # channel 10 is percussion in General MIDI


class FluidRenderer:
    """A FluidSynth instance with SoundFonts loaded once (loading an .sf3 takes seconds).

    Reverb and chorus are on, as in real renderings; each voice plays on its own channel (voices
    beyond 15 share channels), so unisons across voices sound twice, as they do in the score.
    """

    def __init__(self, soundfonts: list[Path], sample_rate: int = SAMPLE_RATE):
        from cadenza.rendering.fluidsynth import import_fluidsynth

        fluidsynth = import_fluidsynth()
        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(gain=0.4, samplerate=float(sample_rate))
        self.synth.setting("synth.reverb.active", 1)
        self.synth.setting("synth.chorus.active", 1)
        self.soundfont_ids = {str(sf): self.synth.sfload(str(sf)) for sf in soundfonts}

    def render(self, notes: list[Note], soundfont: Path, program: int, tail: float = 1.0,
               room: dict | None = None, voice_programs: dict[int, int] | None = None) -> np.ndarray:
        """Mono float32 audio of (start, end, pitch, velocity[, voice]) notes played with one program
        (or, for a multi-instrument rendering, voice v with ``voice_programs[v]`` where given).

        ``room``: ``reverb`` and ``chorus`` sends (0-127), ``roomsize`` (0-1), ``detune_cents``;
        the default is General MIDI's (reverb send 40, no chorus, in tune)."""
        room = {"reverb": 40, "chorus": 0, "roomsize": 0.2, "detune_cents": 0.0, **(room or {})}
        synth = self.synth
        synth.set_reverb(roomsize=float(room["roomsize"]), damping=0.3, width=0.8, level=0.9)
        voices = sorted({n[4] if len(n) > 4 else 0 for n in notes})
        channel_of = {voice: CHANNELS[i % len(CHANNELS)] for i, voice in enumerate(voices)}
        bend = int(round(room["detune_cents"] / 100 * 4096))  # 4096 per semitone at the default 2-semitone range
        program_of = {channel_of[v]: (voice_programs or {}).get(v, program) for v in voices}
        for channel in set(channel_of.values()):
            synth.program_select(channel, self.soundfont_ids[str(soundfont)], 0, int(program_of[channel]))
            synth.cc(channel, 91, int(room["reverb"]))
            synth.cc(channel, 93, int(room["chorus"]))
            synth.pitch_bend(channel, bend)
        events = []
        for note in notes:
            channel = channel_of[note[4] if len(note) > 4 else 0]
            events.append((note[1], 0, channel, note[2], 0))
            events.append((note[0], 1, channel, note[2], note[3]))
        events.sort()
        chunks, written = [], 0
        for time, is_on, channel, pitch, velocity in events:
            frame = int(round(time * self.sample_rate))
            if frame > written:
                chunks.append(synth.get_samples(frame - written))
                written = frame
            if is_on:
                synth.noteon(channel, pitch, velocity)
            else:
                synth.noteoff(channel, pitch)
        chunks.append(synth.get_samples(int(tail * self.sample_rate)))
        for channel in set(channel_of.values()):
            for pitch in range(128):
                synth.noteoff(channel, pitch)
            synth.pitch_bend(channel, 0)
        synth.get_samples(self.sample_rate)  # let releases and the room die out before the next example
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
        return stereo.mean(axis=1)

    def close(self) -> None:
        self.synth.delete()


def random_room(rng: np.random.Generator) -> dict:
    """Reverb and chorus sends, room size and a detuning of at most 15 cents."""
    return {"reverb": int(rng.integers(0, 100)), "chorus": int(rng.integers(0, 60)) if rng.random() < 0.5 else 0,
            "roomsize": float(rng.uniform(0.05, 0.8)), "detune_cents": float(rng.uniform(-15, 15))}


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
        from cadenza.rendering.sampler import noise_reverb

        wet = noise_reverb(out, rng.uniform(0.2, 0.9), sample_rate, rng)
        out = out + rng.uniform(0.05, 0.3) * wet
    peak = np.abs(out).max()
    if peak > 0:
        out = out / peak * 10 ** (rng.uniform(-20, -1) / 20)
    if rng.random() < 0.5:
        rms = np.sqrt(np.mean(out ** 2)) + 1e-9
        out = out + rng.standard_normal(len(out)) * rms * 10 ** (-rng.uniform(25, 50) / 20)
    return np.clip(out, -1, 1).astype(np.float32)


# -- note sources ------------------------------------------------------------------------
def score_notes(score: symusic.Score) -> list[Note]:
    """All non-drum notes of a score as (start, end, pitch, velocity, voice) in seconds; each
    track is a voice."""
    seconds = score.to("second")
    return [(float(n.time), float(n.time + n.duration), int(n.pitch), int(n.velocity), voice)
            for voice, track in enumerate(seconds.tracks) if not track.is_drum for n in track.notes]


def velocity_curve(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    """Velocities 1-127 for notes at ``times``: a base level anywhere from pp to ff, a slow swell
    and per-note spread, so quiet notes are as common in training as in playing."""
    base = rng.uniform(8, 118)
    swell = rng.uniform(0, 25) * np.sin(times / rng.uniform(1.5, 6.0) + rng.uniform(0, 2 * np.pi))
    spread = rng.normal(0, rng.uniform(3, 12), len(times))
    return np.clip(np.round(base + swell + spread), 1, 127).astype(int)


def apply_pedal(notes: list[Note], rng: np.random.Generator, seconds: float) -> list[Note]:
    """Sustain pedal as the label must show it: random pedal-down spans, and a note released
    inside a span sounds on to the span's end (or to the next note of its pitch, which re-strikes)."""
    spans, time = [], float(rng.uniform(0, 1.0))
    while time < seconds:
        length = float(rng.uniform(0.5, 3.0))
        spans.append((time, time + length))
        time += length + float(rng.uniform(0.05, 1.5))
    out = []
    for start, end, pitch, velocity, voice in notes:
        for down, up in spans:
            if down <= end < up:
                end = max(end, up)
                break
        out.append((start, min(end, seconds), pitch, velocity, voice))
    return out


def voice_overlaps(notes: list[Note]) -> list[Note]:
    """Within each voice, a note that overlaps the next note of its pitch ends where that one
    starts (a key cannot sound twice); across voices nothing is merged, so unisons stay. Notes
    of any positive length are kept, however short, as the reference keeps them."""
    by_key: dict[tuple[int, int], list[list]] = {}
    for note in sorted(notes):
        by_key.setdefault((note[4], note[2]), []).append(list(note))
    out = []
    for group in by_key.values():
        for i, note in enumerate(group):
            if i + 1 < len(group):
                note[1] = min(note[1], group[i + 1][0])
            if note[1] > note[0]:
                out.append(tuple(note))
    return sorted(out)


def perform(notes: list[Note], rng: np.random.Generator, max_seconds: float, pedal: float = 0.3) -> list[Note]:
    """A varied performance: random tempo, velocity curve (1-127), articulation and, with
    probability ``pedal``, sustain pedal; one excerpt of at most ``max_seconds``."""
    if not notes:
        return []
    stretch = rng.uniform(0.6, 1.4)
    staccato = rng.random() < 0.2
    start_at = 0.0
    total = max(n[1] for n in notes) * stretch
    if total > max_seconds:
        start_at = rng.uniform(0, total - max_seconds)
    kept = []
    for start, end, pitch, _, voice in notes:
        s, e = start * stretch - start_at, end * stretch - start_at
        if s < 0 or s >= max_seconds or not 21 <= pitch <= 108:
            continue
        if staccato:
            e = s + min(e - s, rng.uniform(0.08, 0.25))
        kept.append((s, min(e, max_seconds), int(pitch), voice))
    velocities = velocity_curve(rng, np.array([k[0] for k in kept]))
    out = [(round(s, 4), round(e, 4), p, int(v), voice) for (s, e, p, voice), v in zip(kept, velocities)]
    if rng.random() < pedal:
        out = apply_pedal(out, rng, max_seconds)
    return voice_overlaps(out)


def random_texture(rng: np.random.Generator, seconds: float, pedal: float = 0.4) -> list[Note]:
    """Random piano writing for coverage: block chords, fast runs, repeated notes, wide leaps and
    independent voices, at any loudness from ppp to fff, with tempo varying by section and, with
    probability ``pedal``, sustain pedal. Each strand of a section is its own voice."""
    notes: list[Note] = []
    time, voice = 0.0, 0
    while time < seconds - 0.3:
        kind = str(rng.choice(["chords", "run", "repeat", "leaps", "poly", "melody"]))
        span = rng.uniform(1.0, 3.5)
        end = min(seconds, time + span)
        pace = rng.uniform(0.6, 1.6)  # section tempo
        at = time
        if kind == "chords":
            while at < end - 0.1:
                root = int(rng.integers(28, 88))
                size = int(rng.integers(2, 8))
                pitches = sorted(set(int(root + x) for x in rng.choice([-12, 0, 3, 4, 5, 7, 9, 10, 12, 14, 16, 19, 24],
                                                                      min(size, 13), replace=False)))
                length = rng.uniform(0.1, 1.2) * pace
                notes += [(at, at + length * rng.uniform(0.85, 1.0), p, 0, voice + i)
                          for i, p in enumerate(pitches) if 21 <= p <= 108]
                at += length + float(rng.choice([0.0, rng.uniform(0, 0.3)]))
            voice += 8
        elif kind == "run":
            step = rng.uniform(0.04, 0.14) * pace
            pitch = int(rng.integers(30, 96))
            direction = int(rng.choice([-1, 1]))
            scales = ([2, 2, 1, 2, 2, 2, 1], [1], [2, 1, 2, 2, 1, 3, 1], [3, 4, 5], [4, 3, 5])
            scale = scales[int(rng.integers(len(scales)))]
            i = 0
            while at < end and 21 <= pitch <= 108:
                notes.append((at, at + step * rng.uniform(0.5, 1.6), pitch, 0, voice))
                pitch += direction * scale[i % len(scale)]
                at += step
                i += 1
            voice += 1
        elif kind == "repeat":
            pitch = int(rng.integers(30, 100))
            step = rng.uniform(0.06, 0.3) * pace
            while at < end:
                notes.append((at, at + step * rng.uniform(0.3, 0.9), pitch, 0, voice))
                at += step
            voice += 1
        elif kind == "leaps":
            step = rng.uniform(0.1, 0.4) * pace
            while at < end:
                notes.append((at, at + step * rng.uniform(0.3, 1.5), int(rng.integers(21, 109)), 0, voice))
                at += step
            voice += 1
        else:  # independent voices (poly) or a melody over held chords
            lows = [int(rng.integers(24, 50)), int(rng.integers(48, 70)), int(rng.integers(62, 92))]
            if kind == "poly" and rng.random() < 0.5:
                lows.append(int(rng.integers(40, 80)))
            for low in lows:
                t = at
                while t < end:
                    length = float(rng.choice([0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0])) * pace
                    if kind == "melody" and low != lows[-1]:
                        length *= 4
                    notes.append((t, t + length * rng.uniform(0.6, 1.0), int(low + rng.integers(0, 12)), 0, voice))
                    t += length
                voice += 1
        time = max(end, at)
    notes = [n for n in notes if n[0] < seconds]
    velocities = velocity_curve(rng, np.array([n[0] for n in notes], dtype=np.float64))
    if rng.random() < 0.3:  # accents and echoes: a second, independent loudness layer
        velocities = np.clip(velocities + rng.choice([-30, 0, 0, 25], len(notes)), 1, 127)
    notes = [(round(s, 4), round(min(e, seconds), 4), p, int(v), voice)
             for (s, e, p, _, voice), v in zip(notes, velocities)]
    if rng.random() < pedal:
        notes = apply_pedal(notes, rng, seconds)
    return voice_overlaps(notes)


# -- the dataset -------------------------------------------------------------------------
@dataclass
class PairSpec:
    """What to build: sources, counts per split, rendering variety."""

    corpora: tuple[str, ...] = ("bach-chorales", "palestrina", "classical", "folk")
    # a seeded sample of a large corpus's source files (the rest: all of them)
    sources_per_corpus: dict[str, int] = field(default_factory=lambda: {"palestrina": 160, "folk": 60,
                                                                          "classical": 6})
    pieces_per_split: dict[str, int] = field(default_factory=lambda: {"train": 300, "valid": 10, "test": 20})
    textures_per_split: dict[str, int] = field(default_factory=lambda: {"train": 150, "valid": 5, "test": 0})
    max_seconds: float = 20.0
    renders_per_piece: int = 1  # excerpts of each piece, each with its own performance, SoundFont and room
    programs: tuple[int, ...] = PIANO_PROGRAMS
    label_program: int | None = 0  # every note labeled with this program (a piano model); None keeps it
    soundfonts: tuple[str, ...] = ()  # empty: training_soundfonts()
    augment: bool = True
    room: bool = True  # random reverb/chorus sends, room size and detuning (False: General MIDI's defaults)
    ensemble: bool = False  # each voice its own program from ENSEMBLE_PROGRAMS, labeled with it (multi-instrument)
    seed: int = 0


def corpus_pieces(name: str, split: str, sources: int | None = None, seed: int = 0):
    """The pieces of a corpus in one split, from all its source files or a seeded sample of
    ``sources`` of them (only those are exported, so a sample of a large corpus is quick)."""
    corpus = open_corpus(name)
    if sources is None or not hasattr(corpus, "sources"):
        return corpus.pieces(split=split)
    every = corpus.sources()
    picked = sorted(every[i] for i in np.random.default_rng(seed).permutation(len(every))[:sources])
    return corpus.pieces(split=split, sources=picked)


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
            pieces += corpus_pieces(corpus, split, spec.sources_per_corpus.get(corpus))
        rng = np.random.default_rng(spec.seed)
        order = rng.permutation(len(pieces))[:wanted] if pieces else []
        jobs += [(split, pieces[i].id + (f"~{k}" if k else ""), pieces[i].path)
                 for i in order for k in range(spec.renders_per_piece)]
        jobs += [(split, f"texture-{split}-{i:05d}", None) for i in range(spec.textures_per_split.get(split, 0))]
    (out / "spec.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    from cadenza.rendering.sampler import SampleSet

    renderer, sample_sets = None, {}
    font_files = [s for s in soundfonts if not s.is_dir()]  # what FluidSynth loads; the rest are sample sets
    if spec.ensemble and not font_files:
        raise MissingDependencyError("an ensemble rendering needs a SoundFont (sample sets hold one piano)")
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
        fonts = font_files if spec.ensemble else soundfonts
        soundfont = fonts[int(rng.integers(len(fonts)))]
        program = int(spec.programs[int(rng.integers(len(spec.programs)))])
        room = random_room(rng) if spec.room else None
        voice_programs = None
        if spec.ensemble:  # distinct programs while they last, so parts stay tellable apart
            voices = sorted({n[4] if len(n) > 4 else 0 for n in notes})
            draw = rng.permutation(ENSEMBLE_PROGRAMS)
            voice_programs = {v: int(draw[i % len(draw)]) for i, v in enumerate(voices)}
        if soundfont.is_dir():  # a sample set: one recorded instrument, whatever the program
            if str(soundfont) not in sample_sets:
                sample_sets[str(soundfont)] = SampleSet(soundfont, SAMPLE_RATE)
            audio = sample_sets[str(soundfont)].render(notes, room=room, rng=rng)
        else:
            if renderer is None:
                renderer = FluidRenderer(font_files)
            audio = renderer.render(notes, soundfont, program, room=room, voice_programs=voice_programs)
        audio = augment(audio, rng) if spec.augment else audio / max(1e-6, np.abs(audio).max()) * 0.5
        label = spec.label_program if spec.label_program is not None else program
        if voice_programs is not None:
            label = None
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{safe}.flac") as tmp:
            soundfile.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16")
        score = notes_to_score([(n[0], n[1], n[2], n[3],
                                 voice_programs[n[4] if len(n) > 4 else 0] if label is None else label, False)
                                for n in notes])
        with atomic_path(folder / f"{safe}.mid") as tmp:
            score.dump_midi(str(tmp))
        entry = {"id": safe, "source": example_id, "split": split, "seconds": len(audio) / SAMPLE_RATE,
                 "notes": len(notes), "soundfont": soundfont.name, "room": room,
                 **({"programs": sorted(set(voice_programs.values()))} if voice_programs else {"program": program})}
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


__all__ = ["ENSEMBLE_PROGRAMS", "FluidRenderer", "PairSpec", "augment", "build_pairs", "heldout_soundfont", "load_pairs",
           "perform", "random_room", "random_texture", "score_notes", "split_of", "training_soundfonts",
           "voice_overlaps"]
