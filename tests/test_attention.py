"""Relative attention: the three implementations and the incremental path agree exactly."""

from __future__ import annotations

import math

import pytest
import torch

from cadenza.symbolic.attention import relative_attention, relative_attention_incremental



# (batch, heads, length, head_dim, max_relative_position, chunk_size): max_rel below, equal to
# and above the length; chunks that divide the length and chunks that do not.
CASES = [(2, 3, 37, 8, 10, 8), (1, 2, 20, 4, 50, 7), (2, 2, 33, 8, 33, 32), (1, 1, 5, 4, 1, 2), (1, 2, 16, 8, 6, 64)]


def _inputs(batch, heads, length, head_dim, max_rel, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, length, head_dim, generator=generator, dtype=dtype).requires_grad_()
               for _ in range(3))
    rel_emb = torch.randn(heads, max_rel, head_dim, generator=generator, dtype=dtype).requires_grad_()
    return q, k, v, rel_emb


def _written_out(q, k, v, rel_emb):
    """The definition, one logit at a time (float64): an independent reference for the naive path."""
    batch, heads, length, head_dim = q.shape
    out = torch.zeros_like(q)
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                logits = []
                for j in range(i + 1):
                    logit = q[b, h, i] @ k[b, h, j]
                    if i - j < rel_emb.shape[1]:
                        logit = logit + q[b, h, i] @ rel_emb[h, i - j]
                    logits.append(logit / math.sqrt(head_dim))
                weights = torch.softmax(torch.stack(logits), 0)
                out[b, h, i] = weights @ v[b, h, : i + 1]
    return out


def test_naive_matches_the_definition_written_out():
    q, k, v, rel_emb = _inputs(1, 2, 9, 4, 5, torch.float64)
    expected = _written_out(q.detach(), k.detach(), v.detach(), rel_emb.detach())
    got = relative_attention(q, k, v, rel_emb, impl="naive")
    assert torch.allclose(got, expected, atol=1e-12)


def test_relative_term_changes_the_output():
    q, k, v, rel_emb = _inputs(1, 2, 12, 4, 6, torch.float64)
    with_rel = relative_attention(q, k, v, rel_emb, impl="chunked", chunk_size=4)
    without = relative_attention(q, k, v, torch.zeros_like(rel_emb), impl="chunked", chunk_size=4)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(without, plain, atol=1e-12)
    assert (with_rel - plain).abs().max() > 1e-2


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("case", CASES)
def test_implementations_agree_in_outputs_and_gradients(case, dtype, tolerance):
    batch, heads, length, head_dim, max_rel, chunk = case
    q, k, v, rel_emb = _inputs(batch, heads, length, head_dim, max_rel, dtype)
    upstream = torch.randn(batch, heads, length, head_dim, dtype=dtype, generator=torch.Generator().manual_seed(1))
    results = {}
    for impl in ("naive", "skew", "chunked"):
        out = relative_attention(q, k, v, rel_emb, impl=impl, chunk_size=chunk)
        results[impl] = (out, torch.autograd.grad((out * upstream).sum(), (q, k, v, rel_emb)))
    reference_out, reference_grads = results["naive"]
    for impl in ("skew", "chunked"):
        out, grads = results[impl]
        assert (out - reference_out).abs().max() <= tolerance, impl
        for name, grad, reference in zip("qkvr", grads, reference_grads):
            assert (grad - reference).abs().max() <= tolerance, (impl, name)


def test_distances_beyond_max_relative_position_get_no_relative_term():
    # Changing embeddings only changes logits of pairs within max_rel: with max_rel = 1 the
    # off-diagonal logits are plain dot products, so the rows' weights follow that formula.
    q, k, v, rel_emb = _inputs(1, 1, 6, 4, 1, torch.float64)
    bigger = torch.cat([rel_emb, torch.zeros(1, 5, 4, dtype=torch.float64)], dim=1)
    for impl in ("naive", "skew", "chunked"):
        assert torch.allclose(relative_attention(q, k, v, rel_emb, impl=impl, chunk_size=4),
                              relative_attention(q, k, v, bigger, impl=impl, chunk_size=4), atol=1e-12)


def test_chunked_gradcheck_with_dropout():
    # Without dropout the gradients equal the naive path's (above); with dropout, finite differences.
    q, k, v, rel_emb = _inputs(1, 2, 7, 2, 3, torch.float64)

    def dropped(*tensors):
        torch.manual_seed(3)  # the same dropout mask on every evaluation
        return relative_attention(*tensors, chunk_size=4, dropout_p=0.3)

    assert torch.autograd.gradcheck(dropped, (q, k, v, rel_emb))


def test_chunked_dropout_is_seeded_and_unbiased():
    q, k, v, rel_emb = _inputs(1, 2, 40, 8, 16, torch.float32)
    torch.manual_seed(1)
    first = relative_attention(q, k, v, rel_emb, chunk_size=8, dropout_p=0.3)
    torch.manual_seed(1)
    again = relative_attention(q, k, v, rel_emb, chunk_size=8, dropout_p=0.3)
    clean = relative_attention(q, k, v, rel_emb, chunk_size=8)
    assert torch.equal(first, again)
    assert (first - clean).abs().max() > 1e-3
    # Each row's first query attends only to itself: dropout keeps it or zeros it, times 1/(1-p).
    row0 = first[:, :, 0] / clean[:, :, 0]
    assert all(torch.allclose(r, torch.zeros_like(r)) or torch.allclose(r, torch.full_like(r, 1 / 0.7))
               for r in row0.reshape(-1, 8))


@pytest.mark.parametrize("max_rel", [3, 12, 40])
def test_incremental_equals_full_computation(max_rel):
    q, k, v, rel_emb = _inputs(2, 2, 21, 4, max_rel, torch.float64)
    q, k, v, rel_emb = (t.detach() for t in (q, k, v, rel_emb))
    full = relative_attention(q, k, v, rel_emb, impl="naive")
    for position in (0, 1, 2, 11, 20):  # one new query at a time
        step = relative_attention_incremental(q[:, :, position:position + 1], k[:, :, :position + 1],
                                              v[:, :, :position + 1], rel_emb, position)
        assert torch.allclose(step, full[:, :, position:position + 1], atol=1e-12)
    block = relative_attention_incremental(q[:, :, 5:], k, v, rel_emb, 5)  # a prompt after a prefix
    assert torch.allclose(block, full[:, :, 5:], atol=1e-12)


def test_bad_shapes_and_impl_are_rejected():
    q, k, v, rel_emb = _inputs(1, 2, 4, 4, 3, torch.float32)
    with pytest.raises(ValueError):
        relative_attention(q, k, v, rel_emb[:1])
    with pytest.raises(ValueError):
        relative_attention(q, k, v, rel_emb, impl="flash")
