"""Training the transcriber on cached audio/MIDI pairs: random 2.048 s windows, teacher forcing.

Each step draws random windows (anywhere in a random example, weighted by length), computes
their log-mel frames and MT3 targets (tie section + events + EOS) on the fly, and takes an
AdamW step. The schedule, DDP set-up, optimizer groups, run clock, signals and checkpoint format
come from the shared training kit (``cadenza.symbolic.kit``): the run directory is a loadable
checkpoint plus the training state, so a run resumes bit-exactly where it stopped, its time box
included. Under ``torchrun`` each process trains on its own windows and the gradients are
averaged with DDP (gloo on the CPU, NCCL on GPUs).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cadenza.data.datasets import IGNORE_INDEX
from cadenza.symbolic.kit import LoopSettings
from cadenza.tokenizers.mt3 import MT3Tokenizer, NoteEvent

from .seq2seq import HOP, SAMPLE_RATE, Transcriber, TranscriberConfig


class WindowSampler:
    """Examples held in memory (int16 audio + note events) and random training windows."""

    def __init__(self, pairs: list[tuple[Path, Path]], tokenizer: MT3Tokenizer, segment_frames: int,
                 max_target_len: int, seed: int = 0):
        import soundfile
        import symusic

        from .inference import load_audio

        if not pairs:
            raise ValueError("no training examples")
        self.tokenizer = tokenizer
        self.window_samples = segment_frames * HOP
        self.max_target_len = max_target_len
        self.audio: list[np.ndarray] = []
        self.events: list[list[NoteEvent]] = []
        for audio_path, midi_path in pairs:
            info = soundfile.info(str(audio_path))
            audio = load_audio(audio_path) if info.samplerate != SAMPLE_RATE else soundfile.read(
                str(audio_path), dtype="float32", always_2d=True)[0].mean(axis=1)
            self.audio.append((np.clip(audio, -1, 1) * 32767).astype(np.int16))
            self.events.append(tokenizer.note_events(symusic.Score(str(midi_path))))
        lengths = np.array([max(1, len(a) - self.window_samples // 2) for a in self.audio], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.rng = np.random.default_rng(seed)

    def seconds(self) -> float:
        return sum(len(a) for a in self.audio) / SAMPLE_RATE

    def window(self, index: int, start_sample: int) -> tuple[np.ndarray, np.ndarray]:
        """Audio (window_samples,) float32 and target ids (+EOS) of one window."""
        audio = self.audio[index][start_sample: start_sample + self.window_samples].astype(np.float32) / 32767
        if len(audio) < self.window_samples:
            audio = np.pad(audio, (0, self.window_samples - len(audio)))
        start = start_sample / SAMPLE_RATE
        ids = self.tokenizer.encode_window(self.events[index], start, self.window_samples / SAMPLE_RATE)
        ids = np.append(ids[: self.max_target_len - 1], self.tokenizer.eos_id)
        return audio, ids

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(audio (B, samples), decoder input (B, L), targets (B, L) with -100 padding)."""
        audios, targets = [], []
        for _ in range(size):
            index = int(self.rng.choice(len(self.audio), p=self.weights))
            # start on a frame boundary, so a window's frames are frames of the whole file
            last = max(0, len(self.audio[index]) - self.window_samples // 2)
            start = int(self.rng.integers(0, last // HOP + 1)) * HOP
            audio, ids = self.window(index, start)
            audios.append(audio)
            targets.append(ids)
        return collate(audios, targets, self.tokenizer)


def collate(audios, targets, tokenizer: MT3Tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(t) for t in targets)
    decoder_input = torch.full((len(targets), length), tokenizer.pad_id, dtype=torch.long)
    target = torch.full((len(targets), length), IGNORE_INDEX, dtype=torch.long)
    for row, ids in enumerate(targets):
        ids = torch.as_tensor(ids, dtype=torch.long)
        target[row, : len(ids)] = ids
        decoder_input[row, 0] = tokenizer.bos_id
        decoder_input[row, 1: len(ids)] = ids[:-1]
    return torch.as_tensor(np.stack(audios)), decoder_input, target


@dataclass
class TrainSettings(LoopSettings):
    """The sequence transcriber's loop settings: the kit's, with its defaults."""


def train(model: Transcriber, tokenizer: MT3Tokenizer, sampler: WindowSampler, out_dir: str | os.PathLike,
          settings: TrainSettings, device: torch.device | str = "cpu", resume: bool = True,
          progress: bool = True, info: dict | None = None, handle_signals: bool = True) -> dict:
    """Train and checkpoint into ``out_dir``; returns a summary (steps, loss, seconds).

    Schedule, DDP, optimizer groups, clock and checkpoint format are the training kit's
    (:mod:`cadenza.symbolic.kit`). A resume restores the weights, the optimizer moments, torch's
    and the window sampler's generators and the elapsed time, so a run stopped at step k and
    resumed ends bit-identical to one that never stopped, and a time-boxed run continues its
    budget. SIGINT/SIGTERM finish the step, checkpoint and raise ``kit.TrainingInterrupted``.
    """
    from tqdm import tqdm

    from cadenza.data.errors import CadenzaError
    from cadenza.symbolic import kit

    from .inference import save_transcriber

    settings.validate()
    dist = kit.init_distributed(str(device))
    device = torch.device(device)
    torch.manual_seed(settings.seed + dist.rank)
    sampler.rng = np.random.default_rng(settings.seed * 1000 + dist.rank)
    model.to(device)
    optimizer = kit.adamw(model, lr=settings.learning_rate, weight_decay=settings.weight_decay, betas=(0.9, 0.98),
                          device=device)
    out = Path(out_dir)
    if dist.is_main:
        kit.remove_stale_temporaries(out)
    step, elapsed, history, losses = 0, 0.0, [], []
    state = kit.resume_window_run(out, model, optimizer, sampler, dist, settings.seed, device,
                                  strict=False) if resume else None
    if state is not None:
        step, elapsed = int(state["step"]), float(state["elapsed_seconds"])
        history, losses = list(state["history"]), list(state["recent_losses"])
    elif resume and (out / "train_state.json").exists():
        raise CadenzaError(f"{out}: a run in the old transcriber state format (train_state.*); continue its weights "
                           f"in a new run with --init {out} --out ANOTHER_DIR")
    clock = kit.RunClock(settings.max_minutes * 60 if settings.max_minutes else None, elapsed)
    net = kit.wrap_ddp(model, dist, device)
    model.train()

    def mean_loss() -> float | None:
        return float(np.mean(losses[-settings.log_every:])) if losses else None

    def checkpoint() -> None:
        summary = {**(info or {}), "step": step, "steps": step, "loss": mean_loss(),
                   "train_seconds": round(clock.elapsed(), 1), "history": history}
        state = {"step": step, "elapsed_seconds": clock.elapsed(), "history": history,
                 "recent_losses": losses[-settings.log_every:], "sampler_rng": sampler.rng.bit_generator.state,
                 "settings": asdict(settings), "world_size": dist.world_size}
        kit.write_checkpoint(out, lambda tmp: save_transcriber(tmp, model, tokenizer, summary), optimizer, state)

    signals = kit.StopSignals()
    bar = tqdm(total=settings.steps, initial=step, desc="training", unit="step", disable=not progress or not dist.is_main)
    with signals if handle_signals else contextlib.nullcontext(signals):
        spent = kit.agree(clock.out_of_time(), dist, device)
        while step < settings.steps and not spent:
            elapsed = clock.elapsed_agreed(dist, device) if clock.budget_seconds else None
            for group in optimizer.param_groups:
                group["lr"] = settings.learning_rate * clock.multiplier(step, warmup=settings.warmup,
                                                                        total=settings.steps, elapsed=elapsed)
            audio, decoder_input, targets = sampler.batch(settings.batch_size)
            audio, decoder_input, targets = audio.to(device), decoder_input.to(device), targets.to(device)
            with torch.no_grad():
                mel = model.frontend(audio)[:, : model.config.segment_frames]
            _, loss = net(mel, decoder_input, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            step += 1
            losses = (losses + [float(loss.detach())])[-settings.log_every:]
            bar.update(1)
            if step % settings.log_every == 0:
                history.append({"step": step, "loss": mean_loss(), "seconds": round(clock.elapsed(), 1)})
                bar.set_postfix(loss=f"{mean_loss():.3f}")
            stop_now, spent = kit.agree_all([signals.requested, clock.out_of_time()], dist, device)
            if dist.is_main and (step % settings.save_every == 0 or step == settings.steps or spent or stop_now):
                checkpoint()
            if stop_now:
                raise kit.TrainingInterrupted(signals.signum or signal.SIGTERM, step, out)
    bar.close()
    return {"steps": step, "loss": mean_loss(), "seconds": clock.elapsed(), "history": history, "rank": dist.rank,
            "world_size": dist.world_size}


def new_model(tokenizer: MT3Tokenizer, size: str = "cpu", n_mels: int | None = None) -> Transcriber:
    """A fresh transcriber of a named size: cpu (shipped), t5-small (MT3) or debug."""
    config = {"cpu": TranscriberConfig.cpu, "t5-small": TranscriberConfig.t5_small,
              "debug": TranscriberConfig.debug}[size](tokenizer.vocab_size)
    if n_mels:
        config.n_mels = n_mels
    return Transcriber(config)
