"""The transcription network: MT3's log-mel front end and a T5-style encoder-decoder.

Front end (MT3 / DDSP ``compute_logmel``): 16 kHz mono, STFT with a 2048-sample Hann window
and hop 128 (8 ms), magnitude, HTK mel filters from 20 Hz to Nyquist, ``log(max(x, 1e-5))``.
MT3 uses 512 mel bins; the CPU model uses fewer (``n_mels`` in the config). Frames are
centered on ``i * hop`` (MT3 pads only the end; centering puts a frame where its sound is).

Model (T5 v1.1 as in MT3): pre-norm RMSNorm blocks, gated-GELU feed-forward, no biases,
fixed sinusoidal positions added to the inputs (MT3 uses fixed position embeddings too), a
dense projection of mel frames into the encoder, and a decoder with cross-attention and a
key/value cache so greedy decoding costs one token per step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.symbolic.decoding import AllowedIds, KVCache, Sampler, StopAt, decode

from . import SAMPLE_RATE  # defined once, in the package
FFT_SIZE = 2048
HOP = 128
MEL_LOW_HZ = 20.0
SEGMENT_FRAMES = 256  # 2.048 s


@dataclass
class TranscriberConfig:
    """Sizes of the front end and the encoder-decoder. ``t5_small()`` is MT3's size."""

    vocab_size: int
    n_mels: int = 512
    d_model: int = 256
    n_head: int = 4
    encoder_layers: int = 4
    decoder_layers: int = 4
    d_ff: int = 640
    dropout: float = 0.1
    segment_frames: int = SEGMENT_FRAMES
    max_target_len: int = 512
    frame_stride: int = 1  # >1 stacks that many frames per encoder position (1 = MT3)

    @classmethod
    def cpu(cls, vocab_size: int) -> "TranscriberConfig":
        """The shipped piano model, sized for a shared 2-core CPU: about 1.7 M parameters,
        128 mel bins, pairs of frames stacked into one encoder position (16 ms)."""
        return cls(vocab_size=vocab_size, n_mels=128, d_model=128, n_head=4, encoder_layers=3,
                   decoder_layers=3, d_ff=320, dropout=0.1, frame_stride=2)

    @classmethod
    def t5_small(cls, vocab_size: int) -> "TranscriberConfig":
        """MT3's published size (T5-small: 8+8 layers, d_model 512, 6 heads, d_ff 1024)."""
        return cls(vocab_size=vocab_size, n_mels=512, d_model=512, n_head=6, encoder_layers=8,
                   decoder_layers=8, d_ff=1024, dropout=0.1, max_target_len=1024)

    @classmethod
    def debug(cls, vocab_size: int) -> "TranscriberConfig":
        """A tiny model for tests."""
        return cls(vocab_size=vocab_size, n_mels=32, d_model=64, n_head=2, encoder_layers=1,
                   decoder_layers=1, d_ff=128, dropout=0.0, segment_frames=64, max_target_len=128)

    def to_dict(self) -> dict:
        return asdict(self)


def mel_filterbank(n_mels: int, sample_rate: int = SAMPLE_RATE, fft_size: int = FFT_SIZE,
                   low_hz: float = MEL_LOW_HZ, high_hz: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters (n_fft // 2 + 1, n_mels), peak 1, as tf.signal builds them."""
    high_hz = high_hz or sample_rate / 2

    def hz_to_mel(hz):
        return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)

    bins = torch.linspace(0, sample_rate / 2, fft_size // 2 + 1, dtype=torch.float64)[1:]
    mels = hz_to_mel(bins)
    low_mel, high_mel = (1127.0 * math.log1p(hz / 700.0) for hz in (low_hz, high_hz))  # no .item(): builds on meta
    edges = torch.linspace(low_mel, high_mel, n_mels + 2, dtype=torch.float64)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (mels[:, None] - lower) / (center - lower)
    falling = (upper - mels[:, None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0)
    return F.pad(weights, (0, 0, 1, 0)).float()  # the DC bin gets no weight


class LogMel(nn.Module):
    """Audio (batch, samples) at 16 kHz -> log-mel (batch, frames, n_mels), frames = samples // hop + 1
    (hop 128 for the sequence model, 320 for the framewise one)."""

    def __init__(self, n_mels: int = 512, hop: int = HOP):
        super().__init__()
        self.hop = hop
        self.register_buffer("window", torch.hann_window(FFT_SIZE), persistent=False)
        self.register_buffer("filters", mel_filterbank(n_mels), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, FFT_SIZE, self.hop, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)
        mel = spec.abs().transpose(1, 2) @ self.filters
        return torch.log(torch.clamp(mel, min=1e-5))


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal position table (length, dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    scale = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale)
    return table


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Multi-head attention without biases; the caller provides keys/values (self or cross)."""

    def __init__(self, config: TranscriberConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.d_model // config.n_head
        inner = self.n_head * self.head_dim
        self.query = nn.Linear(config.d_model, inner, bias=False)
        self.key = nn.Linear(config.d_model, inner, bias=False)
        self.value = nn.Linear(config.d_model, inner, bias=False)
        self.out = nn.Linear(inner, config.d_model, bias=False)
        self.dropout = config.dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_head, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.key(x)), self.heads(self.value(x))

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, causal: bool = False,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.heads(self.query(x))
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        batch, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, length, -1))


class GatedFeedForward(nn.Module):
    """T5 v1.1 feed-forward: GELU(x W0) * (x W1), then W_out."""

    def __init__(self, config: TranscriberConfig):
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(F.gelu(self.gate(x), approximate="tanh") * self.up(x)))


class EncoderBlock(nn.Module):
    def __init__(self, config: TranscriberConfig):
        super().__init__()
        self.norm1, self.attn = RMSNorm(config.d_model), Attention(config)
        self.norm2, self.ff = RMSNorm(config.d_model), GatedFeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attn.attend(h, *self.attn.project_kv(h)))
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderBlock(nn.Module):
    def __init__(self, config: TranscriberConfig):
        super().__init__()
        self.norm1, self.self_attn = RMSNorm(config.d_model), Attention(config)
        self.norm2, self.cross_attn = RMSNorm(config.d_model), Attention(config)
        self.norm3, self.ff = RMSNorm(config.d_model), GatedFeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor],
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        h = self.norm1(x)
        keys, values = self.self_attn.project_kv(h)
        if cache is not None:  # incremental decoding: append this step's keys/values
            keys, values = cache.append(layer, keys, values)
            attended = self.self_attn.attend(h, keys, values, causal=False)
        else:
            attended = self.self_attn.attend(h, keys, values, causal=True)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.cross_attn.attend(self.norm2(x), *cross_kv))
        return x + self.dropout(self.ff(self.norm3(x)))


class Transcriber(nn.Module):
    """Log-mel frames -> event ids. ``forward(mel, decoder_input, targets) -> (logits, loss)``."""

    def __init__(self, config: TranscriberConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.frontend = LogMel(config.n_mels)
        self.input_proj = nn.Linear(config.n_mels * config.frame_stride, d, bias=False)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.encoder_layers))
        self.encoder_norm = RMSNorm(d)
        self.embed = nn.Embedding(config.vocab_size, d)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.decoder_norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.register_buffer("encoder_positions", sinusoids(config.segment_frames // config.frame_stride, d),
                             persistent=False)
        self.register_buffer("decoder_positions", sinusoids(config.max_target_len + 1, d), persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features ** -0.5)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mels) -> encoder states (batch, frames // frame_stride, d_model)."""
        batch, frames, n_mels = mel.shape
        stride = self.config.frame_stride
        mel = mel[:, : frames // stride * stride].reshape(batch, frames // stride, n_mels * stride)
        x = self.input_proj(mel) + self.encoder_positions[: mel.shape[1]]
        x = self.dropout(x)
        for block in self.encoder:
            x = block(x)
        return self.encoder_norm(x)

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [block.cross_attn.project_kv(memory) for block in self.decoder]

    def decode_step(self, tokens: torch.Tensor, cross: list, cache: KVCache | None, offset: int) -> torch.Tensor:
        """Logits for ``tokens`` (batch, length) placed at positions offset.. of the target; with
        ``cache``, their keys and values are appended to it (a list of per-layer dicts, the
        older face, holds one such cache in its first dict)."""
        if isinstance(cache, list):
            cache = cache[0].setdefault("kv", self.new_cache(tokens.shape[0], self.config.max_target_len + 1))
        x = self.embed(tokens) + self.decoder_positions[offset: offset + tokens.shape[1]]
        x = self.dropout(x)
        for i, block in enumerate(self.decoder):
            x = block(x, cross[i], cache, i)
        if cache is not None:
            cache.length += tokens.shape[1]
        return self.lm_head(self.decoder_norm(x))

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty self-attention KV cache of the decoder for ``batch`` targets of ``capacity`` ids."""
        cfg, parameter = self.config, next(self.parameters())
        return KVCache(cfg.decoder_layers, batch, cfg.n_head, cfg.d_model // cfg.n_head, capacity,
                       parameter.device, parameter.dtype)

    def forward(self, mel: torch.Tensor, decoder_input: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced logits; loss is mean cross-entropy over targets != -100."""
        memory = self.encode(mel)
        logits = self.decode_step(decoder_input, self.cross_kv(memory), None, 0)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(self, mel: torch.Tensor, bos_id: int, eos_id: int, max_len: int | None = None,
                 allowed: torch.Tensor | None = None) -> list[list[int]]:
        """Greedy decoding of a batch of segments with a key/value cache; ids before EOS.

        Finished rows leave the batch (their caches are dropped), so a batch costs what its
        longest segments cost only for those segments. ``allowed`` (vocab_size,) bool masks the
        ids that may be produced (e.g. no PAD/BOS)."""
        max_len = min(max_len or self.config.max_target_len, self.config.max_target_len)
        batch = mel.shape[0]
        processors = ([AllowedIds(allowed)] if allowed is not None else []) + [StopAt(eos_id, keep=False)]
        decoded = decode(_SegmentDecoder(self, mel, bos_id, max_len), processors,
                         Sampler(batch, 0, mel.device, greedy=True), batch=batch, max_steps=max_len,
                         fill_id=eos_id, device=mel.device)
        return [row[:length].tolist() for row, length in zip(decoded.ids, decoded.lengths.tolist())]


class _SegmentDecoder:
    """The transcriber's decoder over a batch of encoded segments, for the one sampling loop."""

    def __init__(self, model: Transcriber, mel: torch.Tensor, bos_id: int, capacity: int):
        self.model = model
        self.cross = model.cross_kv(model.encode(mel))
        self.cache = model.new_cache(mel.shape[0], capacity)
        bos = torch.full((mel.shape[0], 1), bos_id, dtype=torch.long, device=mel.device)
        self.next_logits = model.decode_step(bos, self.cross, self.cache, 0)[:, -1]

    def logits(self, state) -> torch.Tensor:
        return self.next_logits

    def feed(self, state, ids: torch.Tensor) -> None:
        self.next_logits = self.model.decode_step(ids[:, None], self.cross, self.cache, state.step)[:, -1]

    def select(self, keep: torch.Tensor) -> None:
        self.cross = [(k[keep], v[keep]) for k, v in self.cross]
        self.cache.select(keep)
        self.next_logits = self.next_logits[keep]
