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
            window = getattr(cache, "window", None)
            if cfg.attention == "relative" and window is not None and length == 1 and k.shape[2] > window:
                start = k.shape[2] - window  # the query and the window - 1 positions before it
                y = relative_attention_incremental(q, k[:, :, start:], v[:, :, start:], self.rel_emb, offset - start)
            elif cfg.attention == "relative":
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


class OutputGroups:
    """A tokenizer's output groups (``Tokenizer.output_groups``) as the model uses them: the id
    ranges of each group and, per group, every id's index within it (-1 outside).

    The output matrix is split once per forward at every range edge, and each group's logits are
    computed from its pieces: the backward pass then assembles the matrix's gradient in one
    concatenation (a slice per range would fill a zero gradient of the whole matrix per slice)."""

    def __init__(self, groups: list[list[tuple[int, int]]], vocab_size: int):
        self.ranges = [[(int(start), int(stop)) for start, stop in group] for group in groups]
        self.vocab_size = vocab_size
        edges = sorted({0, vocab_size, *(edge for group in self.ranges for r in group for edge in r)})
        self.split_sizes = [stop - start for start, stop in zip(edges[:-1], edges[1:])]
        self.pieces = [[i for i, (start, stop) in enumerate(zip(edges[:-1], edges[1:]))
                        if any(a <= start and stop <= b for a, b in group)] for group in self.ranges]
        self.local = torch.full((len(groups), vocab_size), -1, dtype=torch.long)
        for g, group in enumerate(self.ranges):
            ids = torch.cat([torch.arange(start, stop) for start, stop in group])
            self.local[g, ids] = torch.arange(len(ids))
        self._local_on: dict[torch.device, torch.Tensor] = {}

    def local_index(self, group: int, targets: torch.Tensor) -> torch.Tensor:
        """Each target's index within ``group`` (-1 for a target outside it)."""
        if targets.device not in self._local_on:
            self._local_on[targets.device] = self.local.to(targets.device)
        return self._local_on[targets.device][group, targets]

    def split(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The output matrix (vocab, d) in pieces at every range edge, for ``logits``."""
        return weight.split(self.split_sizes)

    def logits(self, hidden: torch.Tensor, pieces: tuple[torch.Tensor, ...], group: int) -> torch.Tensor:
        """``hidden @ weight[group].T`` (n, size of the group), one matmul per piece of the group."""
        parts = [F.linear(hidden, pieces[i]) for i in self.pieces[group]]
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def vocabulary_logits(self, hidden: torch.Tensor, weight: torch.Tensor, group: int) -> torch.Tensor:
        """The group's logits placed in a (n, vocab) tensor that is -inf at every other id."""
        out = hidden.new_full((hidden.shape[0], self.vocab_size), float("-inf"))
        for start, stop in self.ranges[group]:
            out[:, start:stop] = F.linear(hidden, weight[start:stop])
        return out


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

    def use_output_groups(self, tokenizer) -> None:
        """Restrict outputs to the tokenizer's output groups where a caller passes ``next_group``
        (nothing changes for a scheme without groups). Not part of the weights or config: the
        groups slice the one output matrix, so any checkpoint of the scheme works with them."""
        groups = tokenizer.output_groups() if tokenizer is not None else None
        self.output_groups = OutputGroups(groups, self.config.vocab_size) if groups else None
        self._next_group = tokenizer.next_group if groups else None

    def next_group(self, ids: torch.Tensor) -> torch.Tensor | None:
        """The output group of the next id at every position of ids (batch, T), which must start
        at a sequence start; None when the model has no output groups."""
        if getattr(self, "_next_group", None) is None:
            return None
        return torch.from_numpy(self._next_group(ids.detach().cpu().numpy())).to(self.output_weight().device)

    def _restricted(self, hidden: torch.Tensor, next_group: torch.Tensor, targets: torch.Tensor | None,
                    reduction: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits and loss when each position's next id is known to lie in one output group.

        The log-softmax of each position runs over its group only (group -1: over every id), so
        probabilities are those of the full softmax restricted to the group. With targets, only
        the positions with a target are computed and no full-vocabulary logits are returned."""
        groups, weight = self.output_groups, self.output_weight()
        flat_hidden = hidden.reshape(-1, hidden.shape[-1])
        flat_group = next_group.reshape(-1)
        if targets is None:
            logits = flat_hidden.new_full((flat_hidden.shape[0], self.config.vocab_size), float("-inf"))
            for g in range(len(groups.ranges)):
                rows = (flat_group == g).nonzero().squeeze(1)
                if rows.numel():
                    logits[rows] = groups.vocabulary_logits(flat_hidden[rows], weight, g)
            rows = (flat_group < 0).nonzero().squeeze(1)
            if rows.numel():
                logits[rows] = F.linear(flat_hidden[rows], weight)
            return logits.view(*hidden.shape[:-1], -1), None
        flat_targets = targets.reshape(-1)
        pieces = groups.split(weight)
        scored = flat_targets != IGNORE_INDEX
        total = flat_hidden.new_zeros((), dtype=torch.float32 if flat_hidden.dtype != torch.float64 else None)
        count = torch.zeros((), dtype=torch.long, device=hidden.device)
        for g in range(-1, len(groups.ranges)):
            rows = (scored & (flat_group == g) if g >= 0 else scored & (flat_group < 0)).nonzero().squeeze(1)
            if not rows.numel():
                continue
            if g < 0:
                logits, local = F.linear(flat_hidden[rows], weight), flat_targets[rows]
            else:
                local = groups.local_index(g, flat_targets[rows])
                inside = local >= 0                     # a target outside its group is not scored
                rows, local = rows[inside], local[inside]
                logits = groups.logits(flat_hidden[rows], pieces, g)
            log_probs = torch.log_softmax(logits.to(total.dtype), -1)
            total = total - log_probs.gather(1, local[:, None]).sum()
            count += local.numel()
        if reduction == "sum":
            return None, total
        return None, total / count.clamp(min=1)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False, next_group: torch.Tensor | None = None,
                reduction: str = "mean") -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits (batch, length, vocab) for every position and, with targets, the mean (or, with
        ``reduction="sum"``, summed) cross-entropy over targets that are not -100. With ``cache``,
        ``ids`` are the new positions only; their keys and values are appended to the cache.
        ``last_only`` computes the logits of the last position only (batch, 1, vocab), as sampling needs.

        ``next_group`` (the shape of ``ids``, or of the last position with ``last_only``; from
        ``next_group(ids)``) restricts each position's softmax to its output group (see
        ``use_output_groups``): logits outside the group are -inf, and with targets only the loss
        is computed (logits None)."""
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
            if targets is not None:
                targets = targets[:, -1:]
        if next_group is not None and getattr(self, "output_groups", None) is not None:
            return self._restricted(self.ln_final(x), next_group.reshape(x.shape[:2]), targets, reduction)
        logits = F.linear(self.ln_final(x), self.output_weight())
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction=reduction)
        return logits, loss

    def new_cache(self, batch: int, capacity: int, window: int | None = None) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``capacity`` positions; with
        ``window``, each new position attends to at most ``window`` positions (itself included)
        when it is read one at a time, as sampling does (relative attention only: absolute
        positions past the trained length are unlike anything seen anyway)."""
        parameter = next(self.parameters())
        cfg = self.config
        return KVCache(cfg.n_layer, batch, cfg.n_head, cfg.head_dim, capacity, parameter.device, parameter.dtype,
                       window=window)
