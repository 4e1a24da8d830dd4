"""The Music Transformer (Huang et al. 2019): a decoder-only transformer over token ids.

One readable file in the manner of nanoGPT: a config dataclass, pre-LayerNorm decoder blocks,
``forward(ids, targets=None) -> (logits, loss)``. Each layer has its own per-head relative
position embeddings (``attention="relative"``, the paper's model); ``attention="absolute"``
adds sinusoidal positions to the input and uses plain causal ``scaled_dot_product_attention``
(the paper's baseline), so the relative-vs-absolute ablation runs on the same code.

For generation, ``forward(ids, cache=KVCache)`` takes only the new ids, appends their keys and
values to the cache and attends over everything cached (see :mod:`cadenza.symbolic.decoding`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cadenza.data.datasets import IGNORE_INDEX  # noqa: F401  (the one definition; targets are padded with it)

from .attention import IMPLEMENTATIONS, relative_attention, relative_attention_incremental
from .decoding import KVCache


@dataclass
class MusicTransformerConfig:
    """Model hyperparameters; stored in a checkpoint's config.json as ``asdict(config)``."""

    vocab_size: int
    n_layer: int = 6
    n_head: int = 8
    d_model: int = 512
    d_ff: int = 2048
    max_relative_position: int = 1024
    dropout: float = 0.1
    attention: str = "relative"          # "relative" | "absolute"
    attention_impl: str = "chunked"      # "naive" | "skew" | "chunked" (relative only)
    chunk_size: int = 512
    tie_weights: bool = True             # the output projection reuses the token embedding

    def __post_init__(self) -> None:
        if self.attention not in ("relative", "absolute"):
            raise ValueError(f"attention must be 'relative' or 'absolute', got {self.attention!r}")
        if self.attention_impl not in IMPLEMENTATIONS:
            raise ValueError(f"attention_impl must be one of {IMPLEMENTATIONS}, got {self.attention_impl!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def debug(cls, vocab_size: int, **overrides) -> "MusicTransformerConfig":
        """A tiny model for tests: 2 layers, 2 heads, width 32."""
        fields = dict(vocab_size=vocab_size, n_layer=2, n_head=2, d_model=32, d_ff=64,
                      max_relative_position=64, dropout=0.0, chunk_size=16)
        fields.update(overrides)
        return cls(**fields)

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_positions(length: int, d_model: int, offset: int = 0, device=None) -> torch.Tensor:
    """The sinusoidal position encodings of Vaswani et al., positions offset .. offset+length-1."""
    positions = torch.arange(offset, offset + length, device=device, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
                            * (-math.log(10000.0) / d_model))
    encoding = torch.zeros(length, d_model, device=device)
    encoding[:, 0::2] = torch.sin(positions * frequencies)
    encoding[:, 1::2] = torch.cos(positions * frequencies[: d_model // 2])
    return encoding


class SelfAttention(nn.Module):
    """Multi-head causal self-attention, relative (per-head embeddings) or absolute."""

    def __init__(self, config: MusicTransformerConfig):
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        if config.attention == "relative":
            self.rel_emb = nn.Parameter(
                torch.randn(config.n_head, config.max_relative_position, config.head_dim) * config.head_dim ** -0.5)

    def forward(self, x: torch.Tensor, layer: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        cfg = self.config
        q, k, v = self.qkv(x).view(batch, length, 3, cfg.n_head, cfg.head_dim).permute(2, 0, 3, 1, 4)
        dropout_p = cfg.dropout if self.training else 0.0
        if cache is not None:
            offset = cache.length
            k, v = cache.append(layer, k, v)
            if cfg.attention == "relative":
                y = relative_attention_incremental(q, k, v, self.rel_emb, offset)
            elif offset == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                visible = (torch.arange(k.shape[2], device=x.device)[None, :]
                           <= torch.arange(offset, offset + length, device=x.device)[:, None])
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        elif cfg.attention == "relative":
            y = relative_attention(q, k, v, self.rel_emb, impl=cfg.attention_impl,
                                   chunk_size=cfg.chunk_size, dropout_p=dropout_p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(batch, length, cfg.d_model)
        return self.dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: MusicTransformerConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff)
        self.down = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """Pre-LayerNorm decoder block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, config: MusicTransformerConfig):
        super().__init__()
        self.ln_attention = nn.LayerNorm(config.d_model)
        self.attention = SelfAttention(config)
        self.ln_feedforward = nn.LayerNorm(config.d_model)
        self.feedforward = FeedForward(config)

    def forward(self, x: torch.Tensor, layer: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attention(self.ln_attention(x), layer, cache)
        return x + self.feedforward(self.ln_feedforward(x))


class MusicTransformer(nn.Module):
    """Decoder-only transformer: ``forward(ids, targets=None) -> (logits, loss)``."""

    def __init__(self, config: MusicTransformerConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_final = nn.LayerNorm(config.d_model)
        if not config.tie_weights:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance flat.
        for name, parameter in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        # Scaled by sqrt(d_model) as in Vaswani et al., so sinusoids do not drown the tokens.
        x = self.token_embedding(ids) * math.sqrt(self.config.d_model)
        if self.config.attention == "absolute":
            x = x + sinusoidal_positions(ids.shape[1], self.config.d_model, offset, ids.device).to(x.dtype)
        return self.dropout(x)

    def output_weight(self) -> torch.Tensor:
        return self.token_embedding.weight if self.config.tie_weights else self.lm_head.weight

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (batch, length, vocab) for every position and, with targets, the mean
        cross-entropy over targets that are not -100. With ``cache``, ``ids`` are the new
        positions only; their keys and values are appended to the cache. ``last_only`` computes
        the logits of the last position only (batch, 1, vocab), as sampling needs."""
        if ids.dim() != 2:
            raise ValueError(f"ids must be (batch, length), got shape {tuple(ids.shape)}")
        offset = cache.length if cache is not None else 0
        x = self.embed(ids, offset)
        for layer, block in enumerate(self.blocks):
            x = block(x, layer, cache)
        if cache is not None:
            cache.length += ids.shape[1]
        if last_only:
            x = x[:, -1:]
        logits = F.linear(self.ln_final(x), self.output_weight())
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return logits, loss

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``capacity`` positions."""
        parameter = next(self.parameters())
        cfg = self.config
        return KVCache(cfg.n_layer, batch, cfg.n_head, cfg.head_dim, capacity, parameter.device, parameter.dtype)
