"""A differentiable harmonic-plus-filtered-noise synthesizer (DDSP, Engel et al. 2020) for scores.

Each note is a harmonic oscillator bank at the note's f0 (with optional delayed vibrato)
plus filtered noise. The controls are computed at a frame rate of 250 Hz and upsampled to
audio rate by linear interpolation, as in DDSP:

- amplitude: an ADSR envelope shaped by the note's velocity and duration;
- harmonic distribution: the preset's harmonic weights, tilted towards the fundamental as
  the note settles (and for soft notes), with harmonics above Nyquist removed and the rest
  normalized to sum to one;
- noise: per-frame filter magnitudes (a frequency-sampling FIR design applied to white
  noise), a sustained component following the envelope plus an onset burst.

Everything is torch, so the audio is differentiable with respect to per-note velocities
and every continuous preset parameter (``ddsp_fit`` uses this to fit a timbre to a
recording and to estimate velocities). Rendering is vectorized: the frames of all notes are
synthesized as one batch and overlap-added into the output.

A preset is a small set of named numbers (``Preset``, in ``ddsp_presets``) saved and loaded as JSON.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .ddsp_presets import NOISE_BAND_HZ, PRESETS, Preset, load_preset, preset_parameters

__all__ = ["PRESETS", "Preset", "NoteTable", "additive_overlap_add", "filtered_noise", "load_preset",
           "notes_from_score", "preset_parameters", "render", "synthesize", "torch_threads"]

if TYPE_CHECKING:  # torch is imported where it is used, so importing this module stays cheap
    import symusic
    import torch

FRAME_RATE = 250  # control frames per second (DDSP's 4 ms hop)
MAX_TAIL_SECONDS = 4.0  # longest release tail rendered after a note-off


@dataclass
class NoteTable:
    """The pitched notes of a score as parallel arrays (seconds), ordered by onset then pitch.

    ``source`` holds (track index, note index) for each row so results (velocities) can be
    written back into the score. ``velocity`` is in (0, 1] and may be a tensor that requires grad.
    """

    pitch: np.ndarray
    start: np.ndarray
    duration: np.ndarray
    velocity: object  # np.ndarray or torch.Tensor
    source: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.pitch)


def notes_from_score(score: "symusic.Score", until_seconds: float | None = None) -> NoteTable:
    """Pitched notes of a Score (drum tracks skipped), optionally only those starting before a time."""
    timed = score.to("second")
    rows = []
    for t, track in enumerate(timed.tracks):
        if track.is_drum:
            continue
        for n, note in enumerate(track.notes):
            if until_seconds is not None and note.time >= until_seconds:
                continue
            rows.append((note.pitch, note.time, max(note.duration, 1e-3), max(note.velocity, 1) / 127.0, (t, n)))
    rows.sort(key=lambda r: (r[1], r[0]))
    return NoteTable(
        pitch=np.array([r[0] for r in rows], dtype=np.float64),
        start=np.array([r[1] for r in rows], dtype=np.float64),
        duration=np.array([r[2] for r in rows], dtype=np.float64),
        velocity=np.array([r[3] for r in rows], dtype=np.float32),
        source=[r[4] for r in rows],
    )


def frame_hop(sample_rate: int) -> int:
    """Samples per control frame at this sample rate."""
    return max(1, round(sample_rate / FRAME_RATE))


def tail_seconds(release: float) -> float:
    """How long a note is rendered after its note-off: until the release is 40 dB down (capped)."""
    return min(MAX_TAIL_SECONDS, 4.6 * release + 0.01)


def rendered_length(notes: NoteTable, release: float, sample_rate: int) -> int:
    """Samples needed to hold every note including its release tail."""
    if len(notes) == 0:
        return 0
    end = float(np.max(notes.start + notes.duration)) + tail_seconds(release)
    return int(math.ceil(end * sample_rate)) + 1


def _harmonic_basis(step_cycles, hop: int, n_harmonics: int):
    """(steps, 4K, hop) float32 rows cos(k w h), sin(k w h), (h/hop) cos(k w h), (h/hop) sin(k w h)."""
    import torch

    k = torch.arange(1, n_harmonics + 1, dtype=torch.float64)
    h = torch.arange(hop, dtype=torch.float64)
    angle = (2 * math.pi * torch.frac(step_cycles[:, None, None] * k[None, :, None] * h[None, None, :])).float()
    cos_part, sin_part = torch.cos(angle), torch.sin(angle)
    ramp = torch.arange(hop, dtype=torch.float32) / hop
    return torch.cat([cos_part, sin_part, cos_part * ramp, sin_part * ramp], 1)


def additive_overlap_add(first_sample, phase_cycles, step_cycles, amplitudes_start, amplitudes_end,
                         hop: int, n_samples: int, frames_per_chunk: int = 32768):
    """Additive synthesis of many frames, overlap-added into one signal of ``n_samples``.

    Frame i covers samples first_sample[i] + h, h < hop, and holds
    sum_k a_ik(h) sin(2 pi k (phase_cycles[i] + step_cycles[i] h)), k = 1..K, where a_ik(h)
    runs linearly from amplitudes_start[i, k] (at h = 0) towards amplitudes_end[i, k] (at h = hop).
    first_sample, phase_cycles, step_cycles: (frames,) numpy arrays; the fundamental's phase and
    frequency (cycles, and cycles per sample, float64), the frequency constant within a frame.
    Differentiable in the amplitudes (torch, (frames, K)).

    By the angle-sum identity sin(k phase + k w h) = sin(k phase) cos(k w h) + cos(k phase) sin(k w h),
    and writing a(h) = a_start + (h / hop)(a_end - a_start), a frame is a 4K coefficient vector
    times a (4K, hop) basis [cos(kwh); sin(kwh); (h/hop) cos(kwh); (h/hop) sin(kwh)]. Frames with
    the same frequency share the basis, so frames are sorted by frequency and each run of equal
    frequency is one matrix product: a few trigonometric values per frame and harmonic instead
    of one per sample and harmonic.
    """
    import torch

    n_harmonics = amplitudes_start.shape[1]
    step_cycles = np.asarray(step_cycles, dtype=np.float64)
    order = np.argsort(step_cycles, kind="stable")
    steps, run_starts = np.unique(step_cycles[order], return_index=True)
    basis = _harmonic_basis(torch.as_tensor(steps), hop, n_harmonics)  # (steps, 4K, hop)
    run_edges = [*run_starts.tolist(), len(order)]
    k = torch.arange(1, n_harmonics + 1, dtype=torch.float64)
    phase = torch.as_tensor(np.asarray(phase_cycles, dtype=np.float64)[order])
    first = torch.as_tensor(np.asarray(first_sample, dtype=np.int64)[order])
    index = torch.as_tensor(order)
    out = torch.zeros(n_samples + hop)
    run = 0
    for lo in range(0, len(order), frames_per_chunk):
        hi = min(lo + frames_per_chunk, len(order))
        start = amplitudes_start[index[lo:hi]]
        change = amplitudes_end[index[lo:hi]] - start
        angle = (2 * math.pi * torch.frac(phase[lo:hi, None] * k[None, :])).float()
        trig = torch.stack([torch.sin(angle), torch.cos(angle)], 1)  # (frames, 2, K)
        coefficients = (torch.stack([start, change], 1)[:, :, None, :] * trig[:, None, :, :]).flatten(1)
        positions = first[lo:hi, None] + torch.arange(hop)
        while run < len(steps) and run_edges[run] < hi:  # runs of one frequency within this chunk
            begin, end = max(run_edges[run], lo), min(run_edges[run + 1], hi)
            audio = coefficients[begin - lo:end - lo] @ basis[run]
            out.index_add_(0, positions[begin - lo:end - lo].flatten(), audio.flatten())
            if run_edges[run + 1] > hi:
                break
            run += 1
    return out[:n_samples]


def filtered_noise(magnitudes, hop: int, seed: int = 0):
    """White noise through a time-varying FIR filter designed by frequency sampling (DDSP).

    magnitudes: (frames, bins) linear filter magnitudes from 0 Hz to Nyquist per frame. Each
    frame's zero-phase impulse response (inverse real FFT) is centred, Hann-windowed, and
    convolved (by FFT) with that frame's block of uniform noise; the blocks are overlap-added
    and the filter's delay is removed. Returns (frames * hop,).
    """
    import torch

    frames, bins = magnitudes.shape
    ir_size = 2 * (bins - 1)
    impulse = torch.fft.irfft(magnitudes.to(torch.complex64), n=ir_size)
    impulse = torch.roll(impulse, ir_size // 2, -1) * torch.hann_window(ir_size, periodic=False, device=magnitudes.device)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(frames, hop, generator=generator).to(magnitudes.device) * 2 - 1
    conv_size = hop + ir_size - 1
    fft_size = 1 << (conv_size - 1).bit_length()
    blocks = torch.fft.irfft(torch.fft.rfft(noise, fft_size) * torch.fft.rfft(impulse, fft_size), fft_size)[:, :conv_size]
    out = torch.nn.functional.fold(
        blocks.T.unsqueeze(0), output_size=(1, (frames - 1) * hop + conv_size), kernel_size=(1, conv_size), stride=(1, hop),
    ).flatten()
    delay = ir_size // 2
    return out[delay:delay + frames * hop]


def _noise_band_matrix(sample_rate: int, bins: int):
    """Linear interpolation (in log frequency) from NOISE_BAND_HZ to the filter's FFT bins: (bands, bins)."""
    import torch

    bin_hz = np.linspace(0, sample_rate / 2, bins)
    log_bands = np.log(np.array(NOISE_BAND_HZ))
    log_bins = np.log(np.clip(bin_hz, NOISE_BAND_HZ[0], NOISE_BAND_HZ[-1]))
    matrix = np.zeros((len(NOISE_BAND_HZ), bins))
    upper = np.clip(np.searchsorted(log_bands, log_bins, side="right"), 1, len(log_bands) - 1)
    lower = upper - 1
    frac = np.clip((log_bins - log_bands[lower]) / (log_bands[upper] - log_bands[lower]), 0, 1)
    matrix[lower, np.arange(bins)] += 1 - frac
    matrix[upper, np.arange(bins)] += frac
    return torch.tensor(matrix, dtype=torch.float32)


def _adsr(t, duration, attack, decay, sustain, release):
    """Envelope at times t (seconds from onset): linear attack, exponential decay to sustain,
    exponential release from the level reached at the note-off."""
    import torch

    held = torch.minimum(t, duration)
    rising = held / attack
    settled = sustain + (1 - sustain) * torch.exp(-(held - attack).clamp_min(0) / decay)
    level = torch.where(held < attack, rising, settled)
    return level * torch.exp(-(t - duration).clamp_min(0) / release)


def _phase_cycles(f0: np.ndarray, seconds: np.ndarray, vibrato_rate: float, vibrato_ratio: float,
                  vibrato_delay: float) -> np.ndarray:
    """Phase of the fundamental in cycles (float64) at times from the onset, with delayed vibrato."""
    cycles = f0 * seconds
    if vibrato_ratio:
        ramp = np.clip(seconds / max(vibrato_delay, 1e-3), 0, 1)
        wobble = (1 - np.cos(2 * math.pi * vibrato_rate * seconds)) / (2 * math.pi * vibrato_rate)
        cycles = cycles + ramp * f0 * vibrato_ratio * wobble
    return cycles


VIBRATO_LEVELS = 8  # frequency steps per side of the vibrato's swing (see synthesize)


def synthesize(notes: NoteTable, params, sample_rate: int = 16000, n_samples: int | None = None, *,
               seed: int = 0, output_gain: float = 0.25):
    """Render notes with a preset's parameters to a mono torch tensor (differentiable).

    ``params`` is a PresetParameters module (or a Preset / name, turned into one).
    Gradients flow to ``notes.velocity`` when it is a tensor that requires grad, and to
    the module's parameters. ``n_samples`` defaults to the end of the last release tail.

    Controls are computed at every frame boundary of every note, and all frames of all notes
    are synthesized as one batch (``additive_overlap_add``). Within a frame the frequency is
    constant and the phase is exact at every frame start. Under vibrato each frame's frequency
    is rounded to one of 2 * VIBRATO_LEVELS + 1 steps across the swing so frames can share a
    basis; the phase slip this leaves by the frame's end (reset at the next frame start) is
    about 0.006 rad per harmonic number for a 15-cent vibrato at A4.
    """
    import torch

    if not isinstance(params, torch.nn.Module):
        params = preset_parameters(params)
    c = params.controls()
    release_now = float(c["release"].detach())
    total = rendered_length(notes, release_now, sample_rate) if n_samples is None else int(n_samples)
    if len(notes) == 0 or total == 0:
        return torch.zeros(total)
    hop = frame_hop(sample_rate)
    nyquist = sample_rate / 2

    velocity = notes.velocity if torch.is_tensor(notes.velocity) else torch.as_tensor(notes.velocity, dtype=torch.float32)
    inside = np.round(notes.start * sample_rate) < total  # notes after the requested end are not rendered
    if not inside.all():
        keep = np.flatnonzero(inside)
        notes = NoteTable(notes.pitch[keep], notes.start[keep], notes.duration[keep], None,
                          [notes.source[i] for i in keep])
        velocity = velocity[torch.as_tensor(keep)]
        if len(notes) == 0:
            return torch.zeros(total)
    velocity = velocity.float().clamp(1e-3, 1.0)
    pitch = torch.as_tensor(notes.pitch, dtype=torch.float64)
    f0 = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
    start_sample = np.round(notes.start * sample_rate).astype(np.int64)
    duration = torch.as_tensor(notes.duration, dtype=torch.float32)
    length = np.minimum(notes.duration + tail_seconds(release_now), (total - start_sample) / sample_rate)
    n_frames = np.maximum(1, np.ceil(length * sample_rate / hop)).astype(np.int64)

    # per-note constants
    key = (pitch.float() - 60.0) / 12.0
    gain = velocity ** c["velocity_exponent"] * 10.0 ** (c["key_tracking_db"] * key / 20.0)
    decay = c["decay"] * 2.0 ** (-c["decay_key_scaling"] * key)
    vib_rate, vib_delay = c["vibrato_rate"], c["vibrato_delay"]
    vib_ratio = 2.0 ** (c["vibrato_depth_cents"] / 1200.0) - 1.0 if vib_rate > 0 else 0.0
    n_harmonics = c["harmonic_logits"].shape[0]
    harmonic_number = torch.arange(1, n_harmonics + 1, dtype=torch.float32)
    above_nyquist = (f0.float() * (1 + vib_ratio))[:, None] * harmonic_number[None, :] >= nyquist  # (notes, K)
    audible = ~above_nyquist.all(-1)  # a note whose fundamental is above Nyquist is silent
    removed = above_nyquist & audible[:, None]

    # frame-rate controls at every frame boundary of every note (n_frames + 1 per note)
    boundary_note = np.repeat(np.arange(len(notes)), n_frames + 1)
    first_boundary = np.cumsum(n_frames + 1) - (n_frames + 1)
    boundary_number = np.arange(len(boundary_note)) - first_boundary[boundary_note]
    b_note = torch.as_tensor(boundary_note)
    t = torch.as_tensor(boundary_number * (hop / sample_rate), dtype=torch.float32)
    end_time = torch.as_tensor(length, dtype=torch.float32)[b_note]
    fade = ((end_time - t) / 0.01).clamp(0, 1)  # no click where the tail is cut
    env = _adsr(t, duration[b_note], c["attack"], decay[b_note], c["sustain"], c["release"]) * fade * gain[b_note]
    tilt = (c["tilt_sustain"] + (c["tilt_attack"] - c["tilt_sustain"]) * torch.exp(-t / c["tilt_decay"])
            + c["velocity_tilt"] * (1 - velocity[b_note]))
    logits = c["harmonic_logits"][None, :] - tilt[:, None] * torch.log(harmonic_number)[None, :]
    distribution = torch.softmax(logits.masked_fill(removed[b_note], float("-inf")), -1) * audible[b_note, None]
    amplitudes = distribution * (env * output_gain)[:, None]  # (boundaries, K)

    # the harmonic part, frame by frame
    frame_note = np.repeat(np.arange(len(notes)), n_frames)
    frame_number = np.arange(len(frame_note)) - (np.cumsum(n_frames) - n_frames)[frame_note]
    start_row = torch.as_tensor(first_boundary[frame_note] + frame_number)
    seconds = frame_number * (hop / sample_rate)
    note_f0 = f0.numpy()[frame_note]
    phase = _phase_cycles(note_f0, seconds, vib_rate, vib_ratio, vib_delay)
    if vib_ratio:  # frame frequency = secant of the phase, rounded to a shared step
        phase_next = _phase_cycles(note_f0, seconds + hop / sample_rate, vib_rate, vib_ratio, vib_delay)
        quantum = note_f0 * vib_ratio / VIBRATO_LEVELS
        deviation = np.round(((phase_next - phase) * sample_rate / hop - note_f0) / quantum)
        step = (note_f0 + deviation * quantum) / sample_rate
    else:
        step = note_f0 / sample_rate
    first_sample = start_sample[frame_note] + frame_number * hop
    out = additive_overlap_add(first_sample, phase, step, amplitudes[start_row], amplitudes[start_row + 1], hop, total)

    # noise envelope per frame, summed as power over notes (independent noise sources)
    burst = torch.exp(-t / c["burst_decay"]) * c["burst_gain"] * gain[b_note] * fade
    noise_env = (c["noise_gain"] * env + burst) * output_gain
    noise_frame = torch.as_tensor((start_sample[boundary_note] + boundary_number * hop + hop // 2) // hop)
    noise_power = torch.zeros(total // hop + 2).index_add(0, noise_frame.clamp_max(total // hop + 1), noise_env ** 2)

    bins = max(17, 1 << (math.ceil(math.log2(sample_rate / 125.0)) - 1)) + 1  # filter resolution about 125 Hz
    shape = c["noise_bands"] @ _noise_band_matrix(sample_rate, bins)  # (bins,)
    magnitudes = torch.sqrt(noise_power + 1e-12)[:, None] * shape[None, :]
    noise = filtered_noise(magnitudes, hop, seed=seed)
    return out + noise[:total] * math.sqrt(3.0)  # uniform noise has RMS 1/sqrt(3)


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run torch with ``count`` intra-op threads inside the block (None: leave torch's setting).

    The synth's work is many medium-sized operations: they gain little from a second thread
    and lose several times over when the cores are shared with other processes (threads
    spin-wait for each other), so rendering and fitting default to one thread.
    """
    import torch

    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def render(score: "symusic.Score", *, preset: "str | Preset" = "strings", sample_rate: int = 16000,
           normalize: bool = True, seed: int = 0, threads: int | None = 1) -> np.ndarray:
    """Render a Score with the DDSP synth: float32 mono audio (peak-normalized with 1 dB headroom).

    ``preset`` is a name in PRESETS, a path to a preset JSON file (``cadenza ddsp-fit``), or a Preset.
    Drum tracks are skipped; a score without pitched notes renders as half a second of silence.
    ``threads``: torch threads while rendering (see ``torch_threads``).
    """
    import torch

    from cadenza.data.limits import check_score

    check_score(score, "the score to render")
    notes = notes_from_score(score)
    if len(notes) == 0:
        return np.zeros(sample_rate // 2, dtype=np.float32)
    params = preset_parameters(preset)
    with torch.no_grad(), torch_threads(threads):
        audio = synthesize(notes, params, sample_rate, seed=seed).numpy().astype(np.float32)
    if normalize:
        peak = float(np.max(np.abs(audio)))
        if peak > 0:
            audio *= np.float32(10 ** (-1 / 20) / peak)
    return audio
