"""Fitting the DDSP synth to a recording: a timbre (preset parameters) or per-note velocities.

Both are gradient descent (Adam) through ``cadenza.rendering.ddsp.synthesize`` under a
multi-resolution STFT loss (Engel et al. 2020). The recording's level is arbitrary (it is
usually peak-normalized), so a global gain is always fitted alongside, starting from the gain
that matches the loudness (RMS) of the recording.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import numpy as np

from cadenza.data.errors import CadenzaError

from .ddsp import NoteTable, Preset, load_preset, notes_from_score, preset_parameters, synthesize, torch_threads

if TYPE_CHECKING:
    import symusic
    import torch

FFT_SIZES = (2048, 1024, 512, 256, 128)
LOG_FLOOR = 1e-4  # log magnitudes are floored 80 dB below the reference's loudest bin


def multi_resolution_stft_loss(prediction: "torch.Tensor", target: "torch.Tensor",
                               fft_sizes: tuple[int, ...] = FFT_SIZES) -> "torch.Tensor":
    """Spectral distance at several resolutions, averaged over them.

    Per FFT size (Hann window, hop = size / 4): the L1 distance of magnitudes relative to the
    target's total magnitude, plus the mean L1 distance of log magnitudes (floored 80 dB below
    the target's loudest bin). The first term follows loud partials, the second quiet detail.
    Zero only when the magnitude spectrograms agree.
    """
    import torch

    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in length")
    total = prediction.new_zeros(())
    for size in fft_sizes:
        window = torch.hann_window(size, device=prediction.device)
        spectra = torch.stft(torch.stack([prediction, target]), size, hop_length=size // 4, window=window,
                             return_complex=True)
        magnitude = torch.sqrt(spectra.real ** 2 + spectra.imag ** 2 + 1e-12)
        predicted, wanted = magnitude[0], magnitude[1]
        floor = LOG_FLOOR * wanted.max().clamp_min(1e-8)
        linear = (predicted - wanted).abs().sum() / wanted.sum().clamp_min(1e-8)
        logarithmic = (torch.log(predicted + floor) - torch.log(wanted + floor)).abs().mean()
        total = total + linear + logarithmic
    return total / len(fft_sizes)


def _as_reference(audio: np.ndarray) -> "torch.Tensor":
    import torch

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1 or len(audio) < max(FFT_SIZES):
        raise CadenzaError(f"reference audio must be mono and at least {max(FFT_SIZES)} samples long")
    if not np.isfinite(audio).all() or not np.any(audio):
        raise CadenzaError("reference audio is silent or not finite")
    return torch.from_numpy(audio.copy())


def _rms(x: "torch.Tensor") -> float:
    return float(x.detach().pow(2).mean().sqrt())


def _notes_or_error(score: "symusic.Score", until_seconds: float | None) -> NoteTable:
    notes = notes_from_score(score, until_seconds=until_seconds)
    if len(notes) == 0:
        raise CadenzaError("the score has no pitched notes to render")
    return notes


def fit_preset(reference_audio: np.ndarray, score: "symusic.Score", start_preset: "str | Preset" = "strings",
               steps: int = 200, *, sample_rate: int = 16000, learning_rate: float = 0.05, seed: int = 0,
               max_seconds: float | None = 12.0, progress: bool = False,
               threads: int | None = 1) -> tuple[Preset, float, float]:
    """Fit a preset's parameters so the synth playing ``score`` sounds like ``reference_audio``.

    ``reference_audio`` is a mono recording of the score at ``sample_rate`` (aligned: time 0 is
    the score's time 0). Only the first ``max_seconds`` are used (None: all), which keeps each
    step fast. Returns (fitted preset, loss before, loss after): the loss of the start preset at
    the gain that matches the recording's loudness, and that of the returned preset (the best
    seen) at its fitted gain.
    Vibrato is kept from the start preset; every other number is fitted. ``threads``: torch
    threads while fitting (see ``ddsp.torch_threads``).
    """
    with torch_threads(threads):
        return _fit_preset(reference_audio, score, start_preset, steps, sample_rate, learning_rate, seed,
                           max_seconds, progress)


def _fit_preset(reference_audio, score, start_preset, steps, sample_rate, learning_rate, seed, max_seconds, progress):
    import torch

    torch.manual_seed(seed)
    reference = _as_reference(reference_audio)
    if max_seconds is not None:
        reference = reference[:max(int(max_seconds * sample_rate), max(FFT_SIZES))]
    notes = _notes_or_error(score, until_seconds=len(reference) / sample_rate)
    params = preset_parameters(load_preset(start_preset))
    with torch.no_grad():
        start_audio = synthesize(notes, params, sample_rate, len(reference), seed=seed)
    log_gain = torch.nn.Parameter(torch.tensor(math.log(_rms(reference) / max(_rms(start_audio), 1e-8))))

    def loss_now() -> "torch.Tensor":
        audio = synthesize(notes, params, sample_rate, len(reference), seed=seed) * torch.exp(log_gain)
        return multi_resolution_stft_loss(audio, reference)

    optimizer = _Adam([*params.parameters(), log_gain], lr=learning_rate)
    best_loss, best_state = math.inf, None
    loss_before = None
    bar = _progress(steps, "fitting timbre", progress)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_now()
        value = float(loss.detach())
        if loss_before is None:
            loss_before = value
        if value < best_loss:
            best_loss, best_state = value, (copy.deepcopy(params.state_dict()), float(log_gain.detach()))
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{value:.4f}")
        bar.update()
    bar.close()
    with torch.no_grad():
        final = float(loss_now())
        if loss_before is None:
            loss_before = final
        if final < best_loss or best_state is None:
            best_loss = final
        else:
            params.load_state_dict(best_state[0])
            log_gain.fill_(best_state[1])
    return params.to_preset(), loss_before, best_loss


def estimate_velocities(reference_audio: np.ndarray, score: "symusic.Score", preset: "str | Preset" = "strings",
                        steps: int = 150, *, sample_rate: int = 16000, learning_rate: float = 0.1, seed: int = 0,
                        progress: bool = False, threads: int | None = 1) -> "symusic.Score":
    """Estimate each note's velocity from a recording of the score, by gradient descent (MIDI-DDSP's use).

    The preset is fixed; per-note velocities and a global gain are fitted so that the synth's
    rendering matches ``reference_audio`` (mono, at ``sample_rate``, aligned with the score).
    A recording's level says nothing about absolute velocity, so the mean velocity (in logit
    terms) of the input score is kept and the fit redistributes loudness between notes.
    Returns a copy of the score (in its own time unit) with the new velocities (1..127).
    ``threads``: torch threads while fitting (see ``ddsp.torch_threads``).
    """
    with torch_threads(threads):
        return _estimate_velocities(reference_audio, score, preset, steps, sample_rate, learning_rate, seed, progress)


def _estimate_velocities(reference_audio, score, preset, steps, sample_rate, learning_rate, seed, progress):
    import torch

    torch.manual_seed(seed)
    reference = _as_reference(reference_audio)
    notes = _notes_or_error(score, until_seconds=None)
    params = preset_parameters(load_preset(preset)).requires_grad_(False)
    start = torch.as_tensor(notes.velocity, dtype=torch.float32).clamp(1 / 127, 126.5 / 127)
    start_logits = torch.log(start / (1 - start))
    logits = torch.nn.Parameter(start_logits.clone())

    def velocities() -> "torch.Tensor":
        return torch.sigmoid(logits - logits.mean() + start_logits.mean())

    with torch.no_grad():
        start_audio = synthesize(_with_velocity(notes, velocities()), params, sample_rate, len(reference), seed=seed)
    log_gain = torch.nn.Parameter(torch.tensor(math.log(_rms(reference) / max(_rms(start_audio), 1e-8))))
    optimizer = _Adam([logits, log_gain], lr=learning_rate)
    bar = _progress(steps, "estimating velocities", progress)
    for _ in range(steps):
        optimizer.zero_grad()
        audio = synthesize(_with_velocity(notes, velocities()), params, sample_rate, len(reference), seed=seed)
        loss = multi_resolution_stft_loss(audio * torch.exp(log_gain), reference)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.update()
    bar.close()

    result = score.copy()
    estimated = np.clip(np.round(velocities().detach().numpy() * 127), 1, 127).astype(int)
    for (track_index, note_index), velocity in zip(notes.source, estimated):
        result.tracks[track_index].notes[note_index].velocity = int(velocity)
    return result


class _Adam:
    """Adam (Kingma and Ba 2015) over a few tensors; small enough to write out, and it spares
    the fit the seconds that importing ``torch.optim`` costs on a small machine."""

    def __init__(self, parameters, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        import torch

        self.parameters = [p for p in parameters if p.requires_grad]
        self.lr, self.betas, self.eps, self.steps = lr, betas, eps, 0
        self.first = [torch.zeros_like(p) for p in self.parameters]
        self.second = [torch.zeros_like(p) for p in self.parameters]

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    def step(self) -> None:
        import torch

        self.steps += 1
        beta1, beta2 = self.betas
        with torch.no_grad():
            for parameter, first, second in zip(self.parameters, self.first, self.second):
                if parameter.grad is None:
                    continue
                first.mul_(beta1).add_(parameter.grad, alpha=1 - beta1)
                second.mul_(beta2).addcmul_(parameter.grad, parameter.grad, value=1 - beta2)
                corrected_first = first / (1 - beta1 ** self.steps)
                corrected_second = second / (1 - beta2 ** self.steps)
                parameter.sub_(self.lr * corrected_first / (corrected_second.sqrt() + self.eps))


def _with_velocity(notes: NoteTable, velocity: "torch.Tensor") -> NoteTable:
    return NoteTable(notes.pitch, notes.start, notes.duration, velocity, notes.source)


def _progress(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False)
