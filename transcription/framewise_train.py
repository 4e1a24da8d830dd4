"""Training the framewise transcriber on cached audio/MIDI pairs: random windows, four heads.

Each step draws random windows (anywhere in a random example, weighted by length, starting on
a frame boundary), optionally transposes each by a few semitones (``pitch_shift``: the audio
resampled, the notes moved with it), applies a random gain, computes log-mel frames and the onset, offset, frame
and velocity targets on the fly, optionally colours each window's spectrum with a random smooth
equaliser curve (``timbre_db``: another instrument's spectral envelope), and takes an AdamW
step. Scheduling, the optimizer, the time box, distributed runs and checkpoints come from the
shared training kit (``cadenza.symbolic.kit``): the run directory is a loadable checkpoint plus the training state
(optimizer moments, torch and sampler generator states, the run clock), so an interrupted or
time-boxed run resumes bit-exactly, with what is left of its time budget.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .framewise import (KEYS, MIN_PITCH, DecodeSettings, FramewiseConfig, FramewiseTranscriber, decode_notes,
                        framewise_loss, note_rolls)
from .seq2seq import SAMPLE_RATE

MAX_PITCH = MIN_PITCH + KEYS - 1


def transposition_ratio(semitones: int) -> Fraction:
    """Source samples per output sample of a window transposed by ``semitones``: 2 ** (semitones / 12)
    as a fraction of small terms (``resample_poly``'s up and down factors; 89/84 at one semitone)."""
    return Fraction(2 ** (semitones / 12)).limit_denominator(100) if semitones else Fraction(1)


class FrameWindowSampler:
    """Examples held in memory (int16 audio + notes) and random training windows of ``frames`` frames."""

    def __init__(self, pairs: list[tuple[Path, Path]], hop: int, frames: int, seed: int = 0):
        import symusic

        from .inference import load_audio

        if not pairs:
            raise ValueError("no training examples")
        self.hop, self.frames = hop, frames
        self.window_samples = frames * hop
        self.audio: list[np.ndarray] = []
        self.notes: list[np.ndarray] = []  # (n, 4): start, end, pitch, velocity; sorted by start
        for audio_path, midi_path in pairs:
            self.audio.append((np.clip(load_audio(audio_path), -1, 1) * 32767).astype(np.int16))
            seconds = symusic.Score(str(midi_path)).to("second")
            rows = sorted((n.time, n.time + n.duration, n.pitch, n.velocity) for t in seconds.tracks
                          if not t.is_drum for n in t.notes)
            self.notes.append(np.asarray(rows, dtype=np.float64).reshape(-1, 4))
        lengths = np.array([max(1, len(a) - self.window_samples // 2) for a in self.audio], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.rng = np.random.default_rng(seed)

    def seconds(self) -> float:
        return sum(len(a) for a in self.audio) / SAMPLE_RATE

    def window(self, index: int, start_frame: int, semitones: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Audio (window_samples,) float32 and the targets (frames, 88) of one window.

        ``semitones`` transposes the window: the audio is resampled by 2 ** (semitones / 12) (a
        tape-speed change: pitch and every partial move together, time shrinks or stretches by
        the same ratio, by at most 12 % at two semitones) and the notes move with it, so each key
        is heard through the strings and samples of a neighbouring one."""
        ratio = transposition_ratio(semitones)
        start = start_frame * self.hop
        source_samples = int(np.ceil(self.window_samples * ratio))
        audio = self.audio[index][start: start + source_samples].astype(np.float32) / 32767
        audio = np.pad(audio, (0, source_samples - len(audio)))
        if semitones:
            from scipy.signal import resample_poly

            audio = resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)
        audio = np.pad(audio[: self.window_samples], (0, max(0, self.window_samples - len(audio))))
        hop_seconds = self.hop / SAMPLE_RATE
        begin, end = start / SAMPLE_RATE, (start + source_samples) / SAMPLE_RATE
        notes = self.notes[index]
        inside = notes[(notes[:, 0] < end + hop_seconds) & (notes[:, 1] > begin - hop_seconds)] if len(notes) else notes
        scale = float(ratio)
        shifted = [((s - begin) / scale, (e - begin) / scale, p + semitones, v) for s, e, p, v in inside.tolist()]
        return audio, note_rolls(shifted, self.frames, hop_seconds)

    def batch(self, size: int, gain_db: float = 12.0, pitch_shift: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``size`` random windows at a random gain; with ``pitch_shift`` each is transposed by a
        whole number of semitones drawn uniformly from -pitch_shift ... pitch_shift (limited so
        that no note of the window leaves the 88 keys)."""
        audios, targets = [], []
        for _ in range(size):
            index = int(self.rng.choice(len(self.audio), p=self.weights))
            last = max(0, len(self.audio[index]) - self.window_samples // 2) // self.hop
            start_frame = int(self.rng.integers(0, last + 1))
            semitones = int(self.rng.integers(-pitch_shift, pitch_shift + 1)) if pitch_shift else 0
            if semitones:
                semitones = self._within_keys(index, start_frame, semitones)
            audio, rolls = self.window(index, start_frame, semitones)
            gain = 10 ** (self.rng.uniform(-gain_db, 0) / 20)
            audios.append(audio * gain)
            targets.append(rolls)
        stacked = {k: torch.as_tensor(np.stack([t[k] for t in targets])) for k in targets[0]}
        return torch.as_tensor(np.stack(audios)), stacked

    def _within_keys(self, index: int, start_frame: int, semitones: int) -> int:
        """``semitones`` reduced towards 0 until every note sounding in the window stays on the keyboard."""
        notes = self.notes[index]
        begin = start_frame * self.hop / SAMPLE_RATE
        # an upward shift reads ratio x the window from the source; 1.2 covers that, with a margin, up to 3 semitones
        span = max(1.2, float(transposition_ratio(abs(semitones))))
        end = begin + span * self.window_samples / SAMPLE_RATE
        inside = notes[(notes[:, 0] < end) & (notes[:, 1] > begin)] if len(notes) else notes
        if not len(inside):
            return semitones
        low, high = int(inside[:, 2].min()), int(inside[:, 2].max())
        limit = MAX_PITCH - high if semitones > 0 else low - MIN_PITCH
        return int(np.sign(semitones)) * min(abs(semitones), max(0, limit))

    def timbre_curves(self, size: int, bins: int, db: float) -> torch.Tensor:
        """Random smooth equaliser curves (size, bins) in natural-log magnitude, from this sampler's generator.

        Each curve is a tilt plus three sinusoids over the mel axis with random phases, every
        amplitude uniform in +-``db`` / 2 dB (at 6 dB: gains of 2.4 dB standard deviation, 95 % of
        them within +-4.6 dB): brighter or darker registers, a resonance or a notch where another
        piano's soundboard or microphone puts one.
        """
        u = np.linspace(0.0, 1.0, bins)
        amplitude = self.rng.uniform(-db / 2, db / 2, size=(size, 4))
        phase = self.rng.uniform(0.0, 2 * np.pi, size=(size, 3))
        waves = np.sin(np.pi * np.arange(1, 4)[None, :, None] * u[None, None, :] + phase[:, :, None])
        curve_db = amplitude[:, :1] * (2 * u[None, :] - 1) + (amplitude[:, 1:, None] * waves).sum(1)
        return torch.as_tensor(curve_db * np.log(10) / 20, dtype=torch.float32)


def colour_spectrum(mel: torch.Tensor, curves: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """Log-mel (batch, frames, bins) through equaliser curves (batch, bins) of log gains.

    The gain applies to the magnitude above the front end's floor, so silence stays at the floor.
    """
    magnitude = (torch.exp(mel) - floor).clamp(min=0.0)
    return torch.log(magnitude * torch.exp(curves)[:, None, :] + floor)


@dataclass
class FramewiseSettings:
    steps: int = 4000
    batch_size: int = 8
    window_frames: int = 200  # 3.2 s at a 16 ms hop
    learning_rate: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 3.0
    positive_weight: float = 4.0  # onset and offset positives in the loss
    quiet_weight: float = 0.0  # onset positives weighted further by 1 + q (1 - velocity / 127)
    timbre_db: float = 0.0  # each window's spectrum through a random smooth EQ of about +- this many dB (0: none)
    pitch_shift: int = 0  # each window transposed by a whole number of semitones up to this many, audio resampled (0: none)
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    max_minutes: float | None = None  # time box of the whole run, across resumes
    leg_steps: int | None = None  # end this leg (with a checkpoint) after this many steps; resuming continues
    precision: str = "auto"  # bf16 autocast on CUDA and on CPUs with AMX, else float32 (symbolic.device)


def save_framewise(directory: str | os.PathLike, model: FramewiseTranscriber, info: dict, half: bool = False) -> Path:
    """directory/config.json ({"kind": "framewise", "model", "tokenizer", "info"}) + model.safetensors."""
    from safetensors.torch import save_file

    from cadenza.data.atomic import atomic_path, write_text_atomic
    from cadenza.tokenizers.mt3 import MT3Tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    config = {"kind": "framewise", "model": model.config.to_dict(),
              "tokenizer": MT3Tokenizer(num_velocity_bins=127).to_dict(),
              "decode": asdict(getattr(model, "decode_settings", None) or DecodeSettings()), "info": info}
    write_text_atomic(directory / "config.json", json.dumps(config, indent=2))
    return directory


def train_framewise(model: FramewiseTranscriber, sampler: FrameWindowSampler, out_dir: str | os.PathLike,
                    settings: FramewiseSettings, device: torch.device | str = "cpu", resume: bool = True,
                    progress: bool = True, info: dict | None = None, half: bool = False) -> dict:
    """Train and checkpoint into ``out_dir``; returns a summary (steps, losses, seconds)."""
    from tqdm import tqdm

    from cadenza.symbolic import kit
    from cadenza.symbolic.device import autocast_context, training_precision

    dist = kit.init_distributed(str(device))
    device = torch.device(device)
    precision = training_precision(device, settings.precision)
    model.to(device)
    optimizer = kit.adamw(model, lr=settings.learning_rate, weight_decay=settings.weight_decay, betas=(0.9, 0.98),
                          device=device)
    out = Path(out_dir)
    kit.remove_stale_temporaries(out)
    step, elapsed, history = 0, 0.0, []
    torch.manual_seed(settings.seed + dist.rank)
    sampler.rng = np.random.default_rng(settings.seed * 1000 + dist.rank)
    state = kit.resume_window_run(out, model, optimizer, sampler, dist, settings.seed, device) if resume else None
    if state is not None:
        step, elapsed, history = int(state["step"]), float(state["elapsed"]), list(state["history"])
    clock = kit.RunClock(settings.max_minutes * 60 if settings.max_minutes else None, elapsed)
    net = kit.wrap_ddp(model, dist, device)
    model.train()
    recent: list[dict] = []
    leg_end = step + settings.leg_steps if settings.leg_steps else None

    def checkpoint() -> None:
        summary = {**(info or {}), "precision": precision, "step": step, "train_seconds": round(clock.elapsed(), 1), "history": history}
        sampler_state = sampler.rng.bit_generator.state
        state = {"step": step, "elapsed": clock.elapsed(), "history": history, "settings": asdict(settings),
                 "sampler_rng": sampler_state}
        kit.write_checkpoint(out, lambda tmp: save_framewise(tmp, model, summary, half=False), optimizer, state)

    bar = tqdm(total=settings.steps, initial=step, desc="training", unit="step", disable=not progress or not dist.is_main)
    while step < settings.steps:
        elapsed = clock.elapsed_agreed(dist, device) if clock.budget_seconds else None  # one clock for all ranks
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * clock.multiplier(step, warmup=settings.warmup, total=settings.steps,
                                                                    elapsed=elapsed)
        audio, targets = sampler.batch(settings.batch_size, pitch_shift=settings.pitch_shift)
        audio = audio.to(device)
        targets = {k: v.to(device) for k, v in targets.items()}
        with torch.no_grad():
            mel = model.features(audio)[:, : settings.window_frames]
            if settings.timbre_db:
                curves = sampler.timbre_curves(len(mel), mel.shape[-1], settings.timbre_db).to(device)
                mel = colour_spectrum(mel, curves)
        with autocast_context(device, precision):
            loss, parts = framewise_loss(net(mel), targets, settings.positive_weight, settings.quiet_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        step += 1
        recent.append(parts)
        bar.update(1)
        if step % settings.log_every == 0:
            mean = {k: round(float(np.mean([r[k] for r in recent])), 4) for k in recent[0]}
            history.append({"step": step, **mean, "seconds": round(clock.elapsed(), 1)})
            recent.clear()
            bar.set_postfix(onset=f"{mean['onset']:.4f}", frame=f"{mean['frame']:.4f}")
        out_of_time = kit.agree(clock.out_of_time(), dist, device) if clock.budget_seconds else False
        out_of_time = out_of_time or step == leg_end
        if dist.is_main and (step % settings.save_every == 0 or step == settings.steps or out_of_time):
            checkpoint()
        if out_of_time:
            break
    bar.close()
    if half and dist.is_main:
        save_framewise(out, model, {**(info or {}), "step": step, "train_seconds": round(clock.elapsed(), 1),
                                    "history": history}, half=True)
    return {"steps": step, "seconds": clock.elapsed(), "history": history, "rank": dist.rank,
            "world_size": dist.world_size, "last": history[-1] if history else None}


def new_framewise(size: str = "cpu") -> FramewiseTranscriber:
    """A fresh framewise transcriber of a named size: cpu, medium, large (GPU) or debug."""
    config = {"cpu": FramewiseConfig.cpu, "medium": FramewiseConfig.medium, "large": FramewiseConfig.large,
              "debug": FramewiseConfig.debug}[size]()
    return FramewiseTranscriber(config)


def decode_label(settings: DecodeSettings) -> str:
    """onset/frame/offset thresholds, then the confirmed-onset pair and the release run where they are on."""
    label = f"{settings.onset_threshold}/{settings.frame_threshold}/{settings.offset_threshold}"
    if settings.confirmed_onset_threshold < settings.onset_threshold:
        label += f" confirmed {settings.confirmed_onset_threshold}/{settings.confirm_frame_threshold}"
    if settings.release_frames > 1:
        label += f" release {settings.release_frames}"
    return label


def tune_decoding(model: FramewiseTranscriber, pairs: list[tuple[Path, Path]],
                  onset_thresholds=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), frame_thresholds=(0.3, 0.4, 0.5, 0.6),
                  offset_thresholds=(0.5, 0.7, 1.0), confirmed_thresholds=(0.3, 0.45, 0.6),
                  confirm_frame_thresholds=(0.5, 0.7, 0.85), release_frames=(2, 3, 5, 8)) -> tuple[DecodeSettings, dict]:
    """The decoding thresholds that give the best mean onset F1 + onset+offset F1 on ``pairs``
    (a valid split: never the test split), with every setting's figures, keyed by
    :func:`decode_label`. Activations are computed once per piece; only the decoding is
    repeated: first the onset/frame/offset grid, then, from its best point, the confirmed-onset
    rule's pairs (a weaker onset peak where the frame head starts to sound), then the release
    runs (a note ends after that many frames below the frame threshold), each kept only where
    it scores higher."""
    import dataclasses
    import itertools

    import symusic

    from cadenza.tokenizers.mt3 import notes_to_score

    from .inference import framewise_probabilities, transcription_scores

    model.eval()
    pieces = []
    for audio_path, midi_path in pairs:
        chunks = list(framewise_probabilities(str(audio_path), model))
        probabilities = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        pieces.append((probabilities, symusic.Score(str(midi_path))))
    table: dict[str, dict] = {}

    def score(settings: DecodeSettings) -> float:
        scores = []
        for probabilities, reference in pieces:
            notes = decode_notes(probabilities, model.config.frame_seconds, settings)
            scores.append(transcription_scores(reference, notes_to_score([(a, b, p, v, 0, False) for a, b, p, v in notes])))
        mean = {k: float(np.mean([s[k] for s in scores])) for k in ("onset_f1", "onset_offset_f1")}
        table[decode_label(settings)] = mean
        return mean["onset_f1"] + mean["onset_offset_f1"]

    best, best_value = DecodeSettings(), -1.0

    def keep_best(candidates: list[DecodeSettings]) -> None:
        nonlocal best, best_value
        for settings in candidates:
            value = score(settings)
            if value > best_value:
                best, best_value = settings, value

    keep_best([DecodeSettings(onset_threshold=onset, frame_threshold=frame, offset_threshold=offset)
               for onset, frame, offset in itertools.product(onset_thresholds, frame_thresholds, offset_thresholds)])
    grid = best
    keep_best([dataclasses.replace(grid, confirmed_onset_threshold=confirmed, confirm_frame_threshold=confirm_frame)
               for confirmed, confirm_frame in itertools.product(confirmed_thresholds, confirm_frame_thresholds)
               if confirmed < grid.onset_threshold])
    confirmed_best = best
    keep_best([dataclasses.replace(confirmed_best, release_frames=frames) for frames in release_frames])
    return best, table


def ship_framewise(run_dir: str | os.PathLike, name: str, *, command: str, figures: dict | None = None,
                   models_dir: str | os.PathLike | None = None) -> Path:
    """Copy a framewise run into the shipped models as float16 weights, its config (with the tuned
    decoding) and ``info`` naming the exact commands and the measured figures."""
    from cadenza.symbolic.registry import MODELS_DIR

    from .inference import load_transcriber

    run = Path(run_dir)
    model, _, info = load_transcriber(run)
    info = {k: v for k, v in info.items() if k != "history"}
    info.update(training_command=command, **(figures or {}))
    return save_framewise(Path(models_dir or MODELS_DIR) / name, model, info, half=True)
