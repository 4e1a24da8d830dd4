"""Training the transcriber on cached audio/MIDI pairs: random 2.048 s windows, teacher forcing.

Each step draws random windows (anywhere in a random example, weighted by length), computes
their log-mel frames and MT3 targets (tie section + events + EOS) on the fly, and takes an
AdamW step. Checkpoints hold the model plus an optimizer state, both as safetensors, so a run
resumes where it stopped. Under ``torchrun`` each process trains on its own windows and the
gradients are averaged with DDP (gloo on the CPU, NCCL on GPUs).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
    target = torch.full((len(targets), length), -100, dtype=torch.long)
    for row, ids in enumerate(targets):
        ids = torch.as_tensor(ids, dtype=torch.long)
        target[row, : len(ids)] = ids
        decoder_input[row, 0] = tokenizer.bos_id
        decoder_input[row, 1: len(ids)] = ids[:-1]
    return torch.as_tensor(np.stack(audios)), decoder_input, target


@dataclass
class TrainSettings:
    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    max_minutes: float | None = None  # stop early (and save) after this much wall time


def learning_rate(step: int, settings: TrainSettings, elapsed_seconds: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to a tenth; with ``max_minutes`` the decay follows
    whichever of steps and wall time is further along, so a time-boxed run still anneals."""
    if step < settings.warmup:
        return settings.learning_rate * (step + 1) / settings.warmup
    progress = min(1.0, (step - settings.warmup) / max(1, settings.steps - settings.warmup))
    if settings.max_minutes:
        progress = max(progress, min(1.0, elapsed_seconds / (settings.max_minutes * 60)))
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _agree(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when it is true on any: ranks stop at the same step, none is left waiting
    in an all-reduce its peers never join."""
    if world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def train(model: Transcriber, tokenizer: MT3Tokenizer, sampler: WindowSampler, out_dir: str | os.PathLike,
          settings: TrainSettings, device: torch.device | str = "cpu", resume: bool = True,
          progress: bool = True, info: dict | None = None) -> dict:
    """Train and checkpoint into ``out_dir``; returns a summary (steps, loss, seconds)."""
    from tqdm import tqdm

    from .inference import save_transcriber

    rank, world = _distributed()
    device = torch.device(device)
    torch.manual_seed(settings.seed + rank)
    sampler.rng = np.random.default_rng(settings.seed * 1000 + rank)
    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.learning_rate,
                                  betas=(0.9, 0.98))
    out = Path(out_dir)
    step = 0
    earlier_seconds, history = 0.0, []
    if resume and (out / "train_state.json").exists():
        step = load_train_state(out, model, optimizer)
        earlier = json.loads((out / "config.json").read_text()).get("info", {})
        earlier_seconds, history = float(earlier.get("train_seconds", 0.0)), list(earlier.get("history", []))
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()
    began = time.time()
    losses: list[float] = []
    bar = tqdm(total=settings.steps, initial=step, desc="training", unit="step", disable=not progress or rank != 0)
    while step < settings.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings, time.time() - began)
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
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % settings.log_every == 0:
            mean = float(np.mean(losses[-settings.log_every:]))
            history.append({"step": step, "loss": mean, "seconds": round(earlier_seconds + time.time() - began, 1)})
            bar.set_postfix(loss=f"{mean:.3f}")
        out_of_time = settings.max_minutes is not None and _agree(time.time() - began > settings.max_minutes * 60,
                                                                  world, device)
        if rank == 0 and (step % settings.save_every == 0 or step == settings.steps or out_of_time):
            summary = {**(info or {}), "steps": step, "loss": float(np.mean(losses[-settings.log_every:])),
                       "train_seconds": round(earlier_seconds + time.time() - began, 1), "history": history}
            save_transcriber(out, model, tokenizer, summary)
            save_train_state(out, model, optimizer, step)
        if out_of_time:
            break
    bar.close()
    return {"steps": step, "loss": float(np.mean(losses[-settings.log_every:])) if losses else None,
            "seconds": earlier_seconds + time.time() - began, "history": history, "rank": rank, "world_size": world}


def save_train_state(directory: Path, model: Transcriber, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Optimizer moments as safetensors plus the step, for resuming."""
    from safetensors.torch import save_file

    from cadenza.data.atomic import atomic_path, write_text_atomic

    tensors = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"{names[id(param)]}.{key}"] = state[key].detach().cpu().contiguous()
            if "step" in state:
                tensors[f"{names[id(param)]}.step"] = torch.as_tensor(state["step"]).reshape(1).float().cpu()
    with atomic_path(directory / "train_state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_text_atomic(directory / "train_state.json", json.dumps({"step": step}))


def load_train_state(directory: Path, model: Transcriber, optimizer: torch.optim.Optimizer) -> int:
    """Restore weights (from model.safetensors) and optimizer moments; returns the step."""
    from safetensors.torch import load_file

    weights = load_file(str(directory / "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    tensors = load_file(str(directory / "train_state.safetensors"))
    for name, param in model.named_parameters():
        if f"{name}.exp_avg" in tensors:
            optimizer.state[param] = {
                "exp_avg": tensors[f"{name}.exp_avg"].to(param.device),
                "exp_avg_sq": tensors[f"{name}.exp_avg_sq"].to(param.device),
                "step": torch.tensor(float(tensors[f"{name}.step"][0])),
            }
    return int(json.loads((directory / "train_state.json").read_text())["step"])


def new_model(tokenizer: MT3Tokenizer, size: str = "cpu", n_mels: int | None = None) -> Transcriber:
    """A fresh transcriber of a named size: cpu (shipped), t5-small (MT3) or debug."""
    config = {"cpu": TranscriberConfig.cpu, "t5-small": TranscriberConfig.t5_small,
              "debug": TranscriberConfig.debug}[size](tokenizer.vocab_size)
    if n_mels:
        config.n_mels = n_mels
    return Transcriber(config)
