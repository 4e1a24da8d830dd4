"""The framewise piano transcriber (the Onsets and Frames family): activations per frame and key.

Front end: the log-mel spectrogram of ``cadenza.transcription.seq2seq.LogMel`` (16 kHz, 2048-point
Hann window) at a hop of 320 samples (20 ms), normalized per mel bin by a BatchNorm. Acoustic
model: a small convolutional stack over (time, mel) with pooling along frequency, a dense layer
per frame and a temporal convolution for context; optionally a dilated temporal stack that
sees seconds either side (:class:`DilatedContext`) and a bidirectional GRU. Four heads give
per-frame, per-key (88 keys, A0..C8) logits: onset, offset, frame (sounding) and velocity. The
frame head sees the onset and offset predictions (detached, as in Onsets and Frames), so a key's
frame activity is conditioned on its onsets. ``forward(mel) -> dict of (batch, frames, 88)``.

Decoding (:class:`NoteDecoder`) turns activations into notes: an onset is a local peak of the
onset probability above a threshold (its time refined to a fraction of a frame by a parabola
through the peak), the note sounds while the frame probability stays above its threshold and
ends at the first frame below it, at the next onset of its key, or at an offset peak; velocity
is read off the velocity head at the onset. It runs chunk by chunk with its open notes as state,
so a file of any length is transcribed in bounded memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .seq2seq import SAMPLE_RATE, LogMel

MIN_PITCH = 21  # A0
KEYS = 88
HEADS = ("onset", "offset", "frame", "velocity")


@dataclass
class FramewiseConfig:
    """Sizes of the front end and the acoustic model; ``cpu()`` is the shipped piano model."""

    n_mels: int = 229
    hop: int = 320
    channels: tuple[int, int] = (8, 16)
    hidden: int = 192
    context_kernel: int = 3  # temporal convolution over the dense features (1 = none)
    rnn: int | None = None  # a bidirectional GRU of this size per direction after the temporal convolution
    frame_kernel: int = 5  # temporal width of the frame head over [features, onset, offset]
    dropout: float = 0.1
    long_context: int = 0  # channels of a dilated temporal stack after the context (0 = none)
    long_layers: int = 7  # its layers, dilations 1, 2, 4, ...: 2 ** layers - 1 frames either side

    @classmethod
    def cpu(cls) -> "FramewiseConfig":
        return cls()

    @classmethod
    def medium(cls) -> "FramewiseConfig":
        """Three times the convolution channels and twice the dense width of ``cpu()``
        (1.8 M parameters): about 0.6 s a training step of 8 x 3.2 s on one thread with bf16,
        about 100x real time to transcribe."""
        return cls(channels=(24, 48), hidden=384)

    @classmethod
    def large(cls) -> "FramewiseConfig":
        """A GPU-sized configuration (Onsets and Frames' acoustic model widths, a GRU)."""
        return cls(channels=(48, 96), hidden=768, context_kernel=5, rnn=256, frame_kernel=5, dropout=0.25)

    @classmethod
    def debug(cls) -> "FramewiseConfig":
        """A tiny model for tests."""
        return cls(n_mels=64, channels=(4, 8), hidden=32, context_kernel=3, rnn=None, frame_kernel=3, dropout=0.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FramewiseConfig":
        values = dict(values)
        values["channels"] = tuple(values.get("channels", cls.channels))
        return cls(**values)

    @property
    def frame_seconds(self) -> float:
        return self.hop / SAMPLE_RATE

    @property
    def receptive_frames(self) -> int:
        """Frames of context either side that change a frame's output (the STFT window included)."""
        conv = 3 + (self.context_kernel // 2) + (self.frame_kernel // 2)
        long = 2 ** self.long_layers - 1 if self.long_context else 0
        return conv + long + -(-1024 // self.hop) + (10_000 if self.rnn else 0)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DilatedContext(nn.Module):
    """Seconds of temporal context at little cost: the features are projected down to
    ``channels``, pass residual convolutions of kernel 3 and dilations 1, 2, 4, ... (each frame
    then sees ``2 ** layers - 1`` frames either side: 2.5 s at 7 layers of 20 ms frames), and
    are projected back and added. The last projection starts at zero, so a model grown by this
    block computes exactly what it did before it and learns to use the context from there."""

    def __init__(self, features: int, channels: int, layers: int):
        super().__init__()
        self.down = nn.Linear(features, channels)
        self.layers = nn.ModuleList(nn.Conv1d(channels, channels, 3, padding=2 ** i, dilation=2 ** i)
                                    for i in range(layers))
        self.up = nn.Linear(channels, features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.down(x)).transpose(1, 2)
        for layer in self.layers:
            h = h + F.relu(layer(h))
        return x + self.up(h.transpose(1, 2))


class FramewiseTranscriber(nn.Module):
    """Log-mel (batch, frames, n_mels) -> onset/offset/frame/velocity logits (batch, frames, 88)."""

    def __init__(self, config: FramewiseConfig):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.frontend = LogMel(config.n_mels, hop=config.hop)
        self.input_norm = nn.BatchNorm1d(config.n_mels)
        self.convs = nn.Sequential(ConvBlock(1, c1), ConvBlock(c1, c1), nn.MaxPool2d((1, 2)),
                                   ConvBlock(c1, c2), nn.MaxPool2d((1, 2)))
        self.dense = nn.Linear(c2 * (config.n_mels // 4), config.hidden)
        self.context = nn.Conv1d(config.hidden, config.hidden, config.context_kernel,
                                 padding=config.context_kernel // 2) if config.context_kernel > 1 else None
        self.long_context = (DilatedContext(config.hidden, config.long_context, config.long_layers)
                             if config.long_context else None)
        self.rnn = nn.GRU(config.hidden, config.rnn, batch_first=True, bidirectional=True) if config.rnn else None
        features = 2 * config.rnn if config.rnn else config.hidden
        self.dropout = nn.Dropout(config.dropout)
        self.onset = nn.Linear(features, KEYS)
        self.offset = nn.Linear(features, KEYS)
        self.velocity = nn.Linear(features, KEYS)
        self.frame_features = nn.Linear(features, KEYS)
        self.frame = nn.Conv1d(3 * KEYS, KEYS, config.frame_kernel, padding=config.frame_kernel // 2)
        with torch.no_grad():  # start at the labels' priors (about 1 % onsets, 5 % sounding), not at 0.5
            for head, prior in ((self.onset, 0.01), (self.offset, 0.01), (self.frame, 0.05)):
                head.bias.fill_(math.log(prior / (1 - prior)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (batch, samples) at 16 kHz -> log-mel (batch, samples // hop + 1, n_mels)."""
        return self.frontend(audio)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, frames, _ = mel.shape
        x = self.input_norm(mel.transpose(1, 2)).transpose(1, 2)
        x = self.convs(x.unsqueeze(1))  # (batch, channels, frames, n_mels // 4)
        x = x.permute(0, 2, 1, 3).reshape(batch, frames, -1)
        x = self.dropout(F.relu(self.dense(x)))
        if self.context is not None:
            x = x + F.relu(self.context(x.transpose(1, 2))).transpose(1, 2)
        if self.long_context is not None:
            x = self.long_context(x)
        if self.rnn is not None:
            x, _ = self.rnn(x)
        x = self.dropout(x)
        onset, offset = self.onset(x), self.offset(x)
        stacked = torch.cat([self.frame_features(x), torch.sigmoid(onset).detach(), torch.sigmoid(offset).detach()], -1)
        frame = self.frame(stacked.transpose(1, 2)).transpose(1, 2)
        return {"onset": onset, "offset": offset, "frame": frame, "velocity": self.velocity(x)}


def grow_long_context(model: FramewiseTranscriber, channels: int, layers: int = 7) -> FramewiseTranscriber:
    """``model`` with a :class:`DilatedContext` of ``channels`` added (its other weights, and so its
    outputs, unchanged: the block's last projection starts at zero); a model that has one already
    is returned as it is."""
    import dataclasses

    if model.config.long_context:
        return model
    grown = FramewiseTranscriber(dataclasses.replace(model.config, long_context=channels, long_layers=layers))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("long_context.") for k in missing), (missing, unexpected)
    if hasattr(model, "decode_settings"):
        grown.decode_settings = model.decode_settings
    return grown.to(next(model.parameters()).device)


# -- labels ------------------------------------------------------------------------------------
def note_rolls(notes, frames: int, hop_seconds: float) -> dict[str, np.ndarray]:
    """Targets (frames, 88) of (start, end, pitch, velocity) notes: onset and offset frames,
    sounding frames, and velocity / 127 at onset frames (``velocity_mask`` marks those)."""
    rolls = {name: np.zeros((frames, KEYS), dtype=np.float32) for name in (*HEADS, "velocity_mask")}
    for start, end, pitch, velocity in notes:
        key = int(pitch) - MIN_PITCH
        if not 0 <= key < KEYS:
            continue
        on = int(round(start / hop_seconds))
        off = max(on + 1, int(round(end / hop_seconds)))
        if on >= frames or off <= 0:
            continue
        rolls["frame"][max(0, on): min(frames, off), key] = 1.0
        if on >= 0:
            rolls["onset"][on, key] = 1.0
            rolls["velocity"][on, key] = max(rolls["velocity"][on, key], velocity / 127.0)
            rolls["velocity_mask"][on, key] = 1.0
        if off < frames:
            rolls["offset"][off, key] = 1.0
    return rolls


def framewise_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                   positive_weight: float = 1.0, quiet_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Binary cross-entropy for onset, offset and frame (onset and offset positives weighted by
    ``positive_weight``: one frame in a thousand is an onset, and a short run learns them sooner
    so weighted; decoding thresholds are tuned afterwards); squared error of sigmoid(velocity)
    at onset frames. ``quiet_weight`` q weights each onset positive further by 1 + q (1 - v),
    v = velocity / 127, so a quiet note's missed onset costs more than a loud one's (quiet notes
    are the transcriber's largest error source). Returns (total, {name: value})."""
    weight = torch.tensor(float(positive_weight), device=targets["onset"].device)
    parts = {name: F.binary_cross_entropy_with_logits(outputs[name].float(), targets[name],
                                                      pos_weight=weight if name != "frame" else None)
             for name in ("offset", "frame")}
    if quiet_weight:
        onset_target = targets["onset"]
        scale = 1.0 + float(quiet_weight) * (1.0 - targets["velocity"]) * targets["velocity_mask"]
        # pos_weight p on positives: the element weight is p * scale there, 1 elsewhere
        element = torch.where(onset_target > 0, weight * scale, torch.ones_like(scale))
        parts["onset"] = F.binary_cross_entropy_with_logits(outputs["onset"].float(), onset_target, weight=element)
    else:
        parts["onset"] = F.binary_cross_entropy_with_logits(outputs["onset"].float(), targets["onset"],
                                                            pos_weight=weight)
    parts = {name: parts[name] for name in ("onset", "offset", "frame")}
    mask = targets["velocity_mask"]
    error = (torch.sigmoid(outputs["velocity"].float()) - targets["velocity"]) ** 2
    parts["velocity"] = (error * mask).sum() / mask.sum().clamp(min=1.0)
    return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}


# -- decoding ----------------------------------------------------------------------------------
@dataclass
class DecodeSettings:
    onset_threshold: float = 0.5
    frame_threshold: float = 0.5
    offset_threshold: float = 0.7  # an offset peak above this ends a note (1.0: never)
    min_frames: int = 2  # a note sounds at least this many frames before the frame head may end it
    confirmed_onset_threshold: float = 1.0  # a weaker onset peak counts where the frame head confirms it (1.0: never)
    confirm_frame_threshold: float = 0.7  # ... by rising from below frame_threshold to at least this on the next frame
    release_frames: int = 1  # the frame head ends a note once it stays below frame_threshold this many frames running


class NoteDecoder:
    """Streaming onset-conditioned decoding of probabilities (frames, 88) into notes.

    ``feed(probabilities)`` takes the next frames of sigmoid activations (a dict with onset,
    offset, frame and velocity); ``finish()`` closes what is still sounding. Notes accumulate
    in ``notes`` as (start seconds, end seconds, MIDI pitch, velocity 1-127). The last fed frame
    is held back until the next one arrives (a peak needs its right neighbour), so any chunking
    gives the same notes.
    """

    def __init__(self, hop_seconds: float, settings: DecodeSettings | None = None):
        self.hop = hop_seconds
        self.settings = settings or DecodeSettings()
        self.notes: list[tuple[float, float, int, int]] = []
        self.open: dict[int, tuple[float, int, int]] = {}  # key -> (onset seconds, velocity, onset frame)
        self.pending: dict[str, np.ndarray] | None = None  # frames not yet decided, with one frame before
        self.first = 0  # global index of pending's first row

    def feed(self, probabilities: dict[str, np.ndarray]) -> None:
        rows = {k: np.asarray(probabilities[k], dtype=np.float32) for k in HEADS}
        if self.pending is None:
            pad = {k: np.zeros((1, KEYS), dtype=np.float32) for k in HEADS}  # a silent frame before the first
            self.pending = {k: np.concatenate([pad[k], rows[k]]) for k in HEADS}
            self.first = -1
        else:
            self.pending = {k: np.concatenate([self.pending[k], rows[k]]) for k in HEADS}
        self._decode(final=False)

    def finish(self) -> list[tuple[float, float, int, int]]:
        if self.pending is not None:
            silent = {k: np.zeros((self._lookahead, KEYS), dtype=np.float32) for k in HEADS}
            self.pending = {k: np.concatenate([self.pending[k], silent[k]]) for k in HEADS}
            self._decode(final=True)
        end = (self.first + 1) * self.hop
        for key, (start, velocity, _) in sorted(self.open.items()):
            self.notes.append((start, max(end, start + self.hop), key + MIN_PITCH, velocity))
        self.open.clear()
        self.notes.sort()
        return self.notes

    def _decode(self, final: bool) -> None:
        """Decide rows 1 .. D of pending, D = len - 1 - lookahead (each has the frames after it that
        its decision needs), and keep rows D onwards (row D as the previous frame of the next call)."""
        p = self.pending
        count = len(p["onset"])
        ahead = self._lookahead
        decided = count - 1 - ahead  # D
        if decided < 1:
            return
        s = self.settings
        onset, frame, offset = p["onset"], p["frame"], p["offset"]
        middle = slice(1, decided + 1)
        before, after = slice(0, decided), slice(2, decided + 2)
        strong = onset[middle] >= s.onset_threshold
        if s.confirmed_onset_threshold < s.onset_threshold:  # a key that was silent and starts to sound
            strong |= ((onset[middle] >= s.confirmed_onset_threshold) & (frame[before] < s.frame_threshold)
                       & (frame[after] >= s.confirm_frame_threshold))
        peaks = strong & (onset[middle] >= onset[before]) & (onset[middle] > onset[after])
        offset_peaks = ((offset[middle] >= s.offset_threshold) & (offset[middle] >= offset[before])
                        & (offset[middle] > offset[after]))
        quiet = frame < s.frame_threshold
        below = np.ones((decided, KEYS), dtype=bool)
        for lag in range(max(1, s.release_frames)):  # below the threshold this many frames running
            below &= quiet[1 + lag: decided + 1 + lag]
        base = self.first + 1  # global frame of row 1
        rows, keys = np.nonzero(peaks)
        onsets_by_key: dict[int, list[int]] = {}
        for r, k in zip(rows.tolist(), keys.tolist()):
            onsets_by_key.setdefault(k, []).append(r)
        for key in sorted(set(onsets_by_key) | set(self.open)):
            ends = np.flatnonzero(below[:, key] | offset_peaks[:, key])
            for r in [None] + onsets_by_key.get(key, []):
                if r is not None:  # a new onset ends the key's open note and opens its own
                    if key in self.open:
                        start, velocity, _ = self.open.pop(key)
                        self.notes.append((start, max((base + r) * self.hop, start + self.hop), key + MIN_PITCH,
                                           velocity))
                    self.open[key] = (self._onset_time(onset[:, key], r + 1), self._velocity(p["velocity"], r + 1, key),
                                      base + r)
                if key not in self.open:
                    continue
                start, velocity, onset_frame = self.open[key]
                earliest = onset_frame + s.min_frames - base  # first row that may end it
                following = [o for o in onsets_by_key.get(key, []) if o > (r if r is not None else -1)]
                limit = following[0] if following else decided
                candidates = ends[(ends >= earliest) & (ends < limit)]
                if len(candidates):
                    end_row = int(candidates[0])
                    self.open.pop(key)
                    self.notes.append((start, (base + end_row) * self.hop, key + MIN_PITCH, velocity))
        keep = count - decided if not final else ahead  # final: the pending rows are the silent padding
        self.first += count - keep
        self.pending = {k: v[count - keep:] for k, v in p.items()}

    @property
    def _lookahead(self) -> int:
        """Frames after a row that deciding it needs: its right neighbour, or a release run."""
        return max(1, self.settings.release_frames)

    def _onset_time(self, column: np.ndarray, row: int) -> float:
        """Seconds of the peak at pending row ``row``, refined by a parabola through its neighbours."""
        left, centre, right = float(column[row - 1]), float(column[row]), float(column[row + 1])
        curvature = left - 2 * centre + right
        shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        return max(0.0, (self.first + row + float(np.clip(shift, -0.5, 0.5))) * self.hop)

    @staticmethod
    def _velocity(velocity: np.ndarray, row: int, key: int) -> int:
        return int(np.clip(round(127 * float(velocity[row, key])), 1, 127))


def decode_notes(probabilities: dict[str, np.ndarray], hop_seconds: float,
                 settings: DecodeSettings | None = None) -> list[tuple[float, float, int, int]]:
    """Notes of whole-file probabilities (frames, 88) in one call."""
    decoder = NoteDecoder(hop_seconds, settings)
    decoder.feed(probabilities)
    return decoder.finish()
