"""Causal relative self-attention (Shaw et al. 2018; Huang et al. 2019, Music Transformer).

One function, three interchangeable implementations with the semantics of tensor2tensor's
``dot_product_self_attention_relative_v2`` (masked, keys to the left only):

    logit[i, j] = (q_i · k_j + q_i · rel_emb[h, i - j]) / sqrt(head_dim)   for 0 <= i - j < M
    logit[i, j] = (q_i · k_j) / sqrt(head_dim)                              for i - j >= M
    j > i is masked.

``rel_emb[h, d]`` embeds the distance ``d`` (``d = 0`` is the diagonal) and ``M`` is
``rel_emb.shape[1]`` (the maximum relative position). Distances past ``M`` get no relative
term, exactly as tensor2tensor pads its relative embeddings with zeros on the left.

- ``impl="naive"`` materializes the (L, L, head_dim) relative tensor of Shaw et al.: the
  reference in tests.
- ``impl="skew"`` is the Music Transformer's skewing trick: O(L²) memory per head.
- ``impl="chunked"`` processes queries in chunks and computes only the band of relative
  logits each chunk needs; a custom autograd function keeps just the output and the
  log-sum-exp per query and recomputes the chunk's probabilities in backward, so peak memory
  grows linearly with L.
- :func:`relative_attention_incremental` serves decoding with a KV cache: queries at
  positions ``offset .. offset + T - 1`` against all cached keys, equal to the full
  computation restricted to those rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("naive", "skew", "chunked")


def relative_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_emb: torch.Tensor,
    *,
    impl: str = "chunked",
    chunk_size: int = 512,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Causal self-attention with learned relative position embeddings.

    q, k, v: (batch, heads, length, head_dim); rel_emb: (heads, max_relative_position, head_dim).
    Returns (batch, heads, length, head_dim). ``dropout_p`` drops attention probabilities.
    """
    _check_shapes(q, k, v, rel_emb)
    if impl == "naive":
        return _naive(q, k, v, rel_emb, dropout_p)
    if impl == "skew":
        return _skew(q, k, v, rel_emb, dropout_p)
    if impl == "chunked":
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
        if torch.is_autocast_enabled(q.device.type):
            # Its in-place softmax and recomputed backward want one dtype: float32, outside autocast.
            with torch.autocast(device_type=q.device.type, enabled=False):
                return _ChunkedRelativeAttention.apply(q.float(), k.float(), v.float(), rel_emb.float(),
                                                       chunk_size, dropout_p, seed)
        return _ChunkedRelativeAttention.apply(q, k, v, rel_emb, chunk_size, dropout_p, seed)
    raise ValueError(f"unknown relative attention implementation {impl!r}; choose from {IMPLEMENTATIONS}")


def _check_shapes(q, k, v, rel_emb) -> None:
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must share a (batch, heads, length, head_dim) shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if rel_emb.dim() != 3 or rel_emb.shape[0] != q.shape[1] or rel_emb.shape[2] != q.shape[3]:
        raise ValueError(f"rel_emb must be (heads={q.shape[1]}, max_relative_position, head_dim={q.shape[3]}), "
                         f"got {tuple(rel_emb.shape)}")


# --------------------------------------------------------------------------------------------
# naive: Shaw et al., the (L, L, head_dim) relative tensor
# --------------------------------------------------------------------------------------------
def _naive(q, k, v, rel_emb, dropout_p):
    heads, max_rel, head_dim = rel_emb.shape
    length = q.shape[2]
    positions = torch.arange(length, device=q.device)
    distance = positions[:, None] - positions[None, :]
    # Index max_rel selects an appended zero row: no relative term (and j > i is masked anyway).
    index = torch.where((distance >= 0) & (distance < max_rel), distance, torch.full_like(distance, max_rel))
    padded = torch.cat([rel_emb, rel_emb.new_zeros(heads, 1, head_dim)], dim=1)
    relative = padded[:, index]                                  # (heads, L, L, head_dim)
    logits = q @ k.transpose(-1, -2) + torch.einsum("bhid,hijd->bhij", q, relative)
    logits = logits / math.sqrt(head_dim)
    logits = logits.masked_fill(distance < 0, float("-inf"))
    probs = F.dropout(torch.softmax(logits, dim=-1), p=dropout_p, training=dropout_p > 0)
    return probs @ v


# --------------------------------------------------------------------------------------------
# skew: the Music Transformer's pad-reshape-slice
# --------------------------------------------------------------------------------------------
def _skew(q, k, v, rel_emb, dropout_p):
    heads, max_rel, head_dim = rel_emb.shape
    batch, _, length, _ = q.shape
    used = min(max_rel, length)
    # Distances length-1 .. 0 from left to right; distances >= max_rel embed as zeros.
    by_distance = torch.cat([rel_emb[:, :used], rel_emb.new_zeros(heads, length - used, head_dim)], dim=1)
    left_embeddings = by_distance.flip(1)                        # column c holds distance L-1-c
    rel_logits = q @ left_embeddings.unsqueeze(0).transpose(-1, -2)   # (B, H, L, L)
    # Pad one column on the left, view as (L+1, L), drop the first row: row i shifts by L-1-i,
    # so entry [i, j] becomes the logit for distance i - j.
    rel_logits = F.pad(rel_logits, (1, 0)).reshape(batch, heads, length + 1, length)[:, :, 1:]
    logits = (q @ k.transpose(-1, -2) + rel_logits) / math.sqrt(head_dim)
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
    logits = logits.masked_fill(causal, float("-inf"))
    probs = F.dropout(torch.softmax(logits, dim=-1), p=dropout_p, training=dropout_p > 0)
    return probs @ v


# --------------------------------------------------------------------------------------------
# chunked: query chunks, banded relative logits, recomputation in backward
# --------------------------------------------------------------------------------------------
def _band_index(q_start: int, n_queries: int, key_start: int, n_keys: int, n_distances: int, device) -> torch.Tensor:
    """For queries at q_start.. and keys at key_start.., the distance index of each pair;
    pairs outside 0 <= distance < n_distances point at the zero column ``n_distances``."""
    distance = (torch.arange(q_start, q_start + n_queries, device=device)[:, None]
                - torch.arange(key_start, key_start + n_keys, device=device)[None, :])
    return torch.where((distance >= 0) & (distance < n_distances), distance,
                       torch.full_like(distance, n_distances))


def _chunk_logits(q_chunk, k, rel_emb, q_start: int):
    """Scaled, causally masked logits of queries at q_start.. against keys 0 .. q_start+C-1.

    Returns (logits, band) where band = (key_start, distance_index, n_distances) locates the
    relative terms, which only touch keys within ``max_relative_position`` of each query."""
    n_queries = q_chunk.shape[2]
    key_stop = q_start + n_queries
    head_dim = q_chunk.shape[-1]
    n_distances = min(rel_emb.shape[1], key_stop)                # no distance can exceed key_stop - 1
    key_start = max(0, q_start - n_distances + 1)
    logits = q_chunk @ k[:, :, :key_stop].transpose(-1, -2)      # (B, H, C, key_stop)
    by_distance = q_chunk @ rel_emb[:, :n_distances].transpose(-1, -2).unsqueeze(0)   # (B, H, C, D)
    by_distance = F.pad(by_distance, (0, 1))                     # zero column for "no relative term"
    index = _band_index(q_start, n_queries, key_start, key_stop - key_start, n_distances, q_chunk.device)
    gathered = torch.gather(by_distance, -1, index.expand(*by_distance.shape[:2], *index.shape))
    logits[..., key_start:] += gathered
    logits.mul_(1.0 / math.sqrt(head_dim))
    if n_queries > 1:
        future = torch.arange(n_queries, device=q_chunk.device)[:, None] < torch.arange(
            n_queries, device=q_chunk.device)[None, :]
        logits[..., q_start:].masked_fill_(future, float("-inf"))
    return logits, (key_start, index, n_distances)


def _dropout_mask(shape, dropout_p, generator, device, dtype):
    keep = torch.rand(shape, generator=generator, device=device) >= dropout_p
    return keep.to(dtype) / (1.0 - dropout_p)


class _ChunkedRelativeAttention(torch.autograd.Function):
    """Exact relative attention whose saved state is O(L): inputs, output and log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, rel_emb, chunk_size, dropout_p, seed):
        length = q.shape[2]
        out = torch.empty_like(q)
        logsumexp = q.new_empty(q.shape[:3])
        generator = _generator(q.device, seed) if dropout_p > 0 else None
        for q_start in range(0, length, chunk_size):
            q_stop = min(q_start + chunk_size, length)
            logits, _ = _chunk_logits(q[:, :, q_start:q_stop], k, rel_emb, q_start)
            # Softmax in place (every row sees its diagonal, so its maximum is finite).
            row_max = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(row_max).exp_()
            row_sum = probs.sum(dim=-1, keepdim=True)
            probs.div_(row_sum)
            chunk_lse = row_max + row_sum.log()
            if generator is not None:
                probs = probs * _dropout_mask(probs.shape, dropout_p, generator, q.device, q.dtype)
            out[:, :, q_start:q_stop] = probs @ v[:, :, :q_stop]
            logsumexp[:, :, q_start:q_stop] = chunk_lse.squeeze(-1)
        ctx.save_for_backward(q, k, v, rel_emb, out, logsumexp)
        ctx.chunk_size, ctx.dropout_p, ctx.seed = chunk_size, dropout_p, seed
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, rel_emb, out, logsumexp = ctx.saved_tensors
        chunk_size, dropout_p = ctx.chunk_size, ctx.dropout_p
        length, head_dim = q.shape[2], q.shape[3]
        scale = 1.0 / math.sqrt(head_dim)
        grad_q, grad_k, grad_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        grad_rel = torch.zeros_like(rel_emb)
        grad_out = grad_out.contiguous()
        # Per query: sum_j P_ij dP_ij = dO_i · O_i (holds with dropout as well).
        grad_dot_out = (grad_out * out).sum(-1, keepdim=True)
        generator = _generator(q.device, ctx.seed) if dropout_p > 0 else None
        for q_start in range(0, length, chunk_size):
            q_stop = min(q_start + chunk_size, length)
            q_chunk, do_chunk = q[:, :, q_start:q_stop], grad_out[:, :, q_start:q_stop]
            logits, (key_start, index, n_distances) = _chunk_logits(q_chunk, k, rel_emb, q_start)
            probs = logits.sub_(logsumexp[:, :, q_start:q_stop, None]).exp_()
            grad_probs = do_chunk @ v[:, :, :q_stop].transpose(-1, -2)
            if generator is not None:
                mask = _dropout_mask(probs.shape, dropout_p, generator, q.device, q.dtype)
                grad_v[:, :, :q_stop] += (probs * mask).transpose(-1, -2) @ do_chunk
                grad_probs.mul_(mask)
                del mask
            else:
                grad_v[:, :, :q_stop] += probs.transpose(-1, -2) @ do_chunk
            # Softmax backward, then the 1/sqrt(d) scale: gradient of the unscaled logits.
            grad_logits = probs.mul_(grad_probs.sub_(grad_dot_out[:, :, q_start:q_stop])).mul_(scale)
            del grad_probs
            grad_q[:, :, q_start:q_stop] += grad_logits @ k[:, :, :q_stop]
            grad_k[:, :, :q_stop] += grad_logits.transpose(-1, -2) @ q_chunk
            # Relative terms: scatter the band's gradients back onto distances.
            band = grad_logits[..., key_start:]
            grad_by_distance = band.new_zeros(*band.shape[:3], n_distances + 1)
            grad_by_distance.scatter_add_(-1, index.expand(*band.shape[:2], *index.shape), band)
            grad_by_distance = grad_by_distance[..., :n_distances]
            grad_q[:, :, q_start:q_stop] += grad_by_distance @ rel_emb[:, :n_distances].unsqueeze(0)
            grad_rel[:, :n_distances] += torch.einsum("bhcm,bhcd->hmd", grad_by_distance, q_chunk)
        return grad_q, grad_k, grad_v, grad_rel, None, None, None


def _generator(device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


# --------------------------------------------------------------------------------------------
# incremental: decoding with a KV cache
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def relative_attention_incremental(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_emb: torch.Tensor, offset: int
) -> torch.Tensor:
    """Attention of new queries at positions ``offset .. offset + T - 1`` over cached keys.

    q: (batch, heads, T, head_dim); k, v: (batch, heads, offset + T, head_dim) holding every
    key and value so far, the new ones last. Equal to rows ``offset ..`` of
    :func:`relative_attention` over the whole sequence. Inference only (no autograd).
    """
    n_queries = q.shape[2]
    if k.shape[2] != offset + n_queries or v.shape[2] != k.shape[2]:
        raise ValueError(f"cache holds {k.shape[2]} keys; expected offset + queries = {offset + n_queries}")
    if n_queries == 1:
        # One query: the relative terms are a reversed slice, no gather needed.
        head_dim = q.shape[-1]
        n_distances = min(rel_emb.shape[1], offset + 1)
        logits = q @ k.transpose(-1, -2)
        by_distance = q @ rel_emb[:, :n_distances].transpose(-1, -2).unsqueeze(0)
        logits[..., offset + 1 - n_distances:] += by_distance.flip(-1)
        probs = torch.softmax(logits * (1.0 / math.sqrt(head_dim)), dim=-1)
        return probs @ v
    logits, _ = _chunk_logits(q, k, rel_emb, offset)
    return torch.softmax(logits, dim=-1) @ v
