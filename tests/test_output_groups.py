"""Restricted outputs: a tokenizer's output groups and the Music Transformer's softmax over them.

The anticipatory scheme knows the kind of the next id from its slot in the triple; the model then
computes logits over that group only. The probabilities must be exactly those of the full softmax
with every other id masked, in training (the loss and its gradient), evaluation and sampling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadenza.data.datasets import IGNORE_INDEX
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig
from cadenza.tokenizers import anticipation_ops as v
from cadenza.tokenizers import get_tokenizer

TOK = get_tokenizer("anticipatory")
PAD = TOK.pad_id


def _model(dtype=torch.float32, groups=True) -> MusicTransformer:
    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig.debug(TOK.vocab_size)).to(dtype).eval()
    model.use_output_groups(TOK if groups else None)
    return model


def _masked_full(model, ids, next_group):
    """The reference: full logits with every id outside each position's group set to -inf."""
    logits, _ = model(ids)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    for g, ranges in enumerate(TOK.output_groups()):
        for start, stop in ranges:
            keep[..., start:stop] |= (next_group == g)[..., None]
    keep |= (next_group < 0)[..., None]
    return logits.masked_fill(~keep, float("-inf"))


@pytest.fixture(scope="module")
def sequences(bach_pieces):
    """Packed training sequences (flag + 85 triples) of four chorales, with anticipated controls."""
    ids, rejected = TOK.pack_sequences([TOK.as_score(p.path) for p in bach_pieces[:4]], 256, seed=0)
    assert not rejected and len(ids) >= 4
    # Controls (ATIME, ADUR, ANOTE) and separators both occur, so every group is exercised.
    assert ((ids >= v.ATIME_OFFSET) & (ids < v.SEPARATOR)).any() and (ids == v.SEPARATOR).any()
    return torch.from_numpy(np.asarray(ids[:4], np.int64))


def test_next_group_follows_the_triple_slots():
    ids = np.array([v.AUTOREGRESS, v.SEPARATOR, v.SEPARATOR, v.SEPARATOR,
                    v.TIME_OFFSET + 5, v.DUR_OFFSET + 10, v.NOTE_OFFSET + 60,
                    v.ATIME_OFFSET + 7, v.ADUR_OFFSET + 3, v.ANOTE_OFFSET + 64,
                    v.TIME_OFFSET + 9, v.DUR_OFFSET, v.REST,
                    v.ANTICIPATE, v.ATIME_OFFSET, PAD])
    #                 flag  S  S  S  T  D  N  AT AD AN T  D  R  flag AT PAD
    expected = np.array([0, 5, 5, 0, 1, 2, 0, 3, 4, 0, 1, 2, 0, 0, 3, -1])
    assert TOK.next_group(ids).tolist() == expected.tolist()
    # Vectorized over a batch: each row counts its own triples.
    batch = np.stack([ids, np.concatenate([[v.AUTOREGRESS], ids[4:], [PAD, PAD, PAD]])])
    assert TOK.next_group(batch)[1].tolist() == [0, 1, 2, 0, 3, 4, 0, 1, 2, 0, 0, 3, -1, -1, -1, -1]
    # A duration where a time belongs fits no group: the model falls back to the full softmax.
    assert TOK.next_group([v.AUTOREGRESS, v.DUR_OFFSET]).tolist() == [0, -1]


def test_groups_cover_the_vocabulary_and_every_target(sequences):
    groups = TOK.output_groups()
    covered = np.zeros(TOK.vocab_size, bool)
    for ranges in groups:
        for start, stop in ranges:
            assert 0 <= start < stop <= TOK.base_vocab_size
            covered[start:stop] = True
    # Every scheme id a sequence can hold after its flag is in some group; flags and specials are not.
    assert covered[:v.AUTOREGRESS].all() and not covered[v.AUTOREGRESS:].any()
    # Every target of real training sequences lies in the group its position predicts.
    ids = sequences.numpy()
    next_group = TOK.next_group(ids[:, :-1])
    assert (next_group >= 0).all()
    for g, ranges in enumerate(groups):
        targets = ids[:, 1:][next_group == g]
        inside = np.zeros(targets.shape, bool)
        for start, stop in ranges:
            inside |= (targets >= start) & (targets < stop)
        assert inside.all(), g
    assert set(np.unique(next_group)) == set(range(len(groups)))
    # Schemes without groups say so, and their models keep the full softmax.
    event = get_tokenizer("event")
    assert event.output_groups() is None and event.next_group(ids) is None


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-10)])
def test_restricted_log_probs_and_loss_equal_the_masked_full_softmax(sequences, dtype, tolerance):
    model = _model(dtype)
    inputs, targets = sequences[:, :-1].clone(), sequences[:, 1:].clone()
    inputs[1, -6:] = PAD                       # padding: group -1 (full softmax), targets ignored
    targets[1, -6:] = IGNORE_INDEX
    targets[0, :5] = IGNORE_INDEX
    next_group = model.next_group(inputs)
    assert (next_group[1, -6:] == -1).all()

    reference = _masked_full(model, inputs, next_group)
    restricted, no_loss = model(inputs, next_group=next_group)
    assert no_loss is None and restricted.dtype == dtype
    expected, got = torch.log_softmax(reference, -1), torch.log_softmax(restricted, -1)
    assert torch.equal(torch.isinf(expected), torch.isinf(got))
    finite = torch.isfinite(expected)
    assert (got[finite] - expected[finite]).abs().max() < tolerance
    # The restriction matters: the full softmax gives the target less probability.
    full, _ = model(inputs)
    assert (torch.log_softmax(full, -1) < expected).logical_and(finite).sum() > finite.sum() // 2

    expected_loss = F.cross_entropy(reference.reshape(-1, reference.shape[-1]), targets.reshape(-1),
                                    ignore_index=IGNORE_INDEX)
    logits, loss = model(inputs, targets, next_group=next_group)
    assert logits is None and abs(float(loss.detach()) - float(expected_loss.detach())) < tolerance
    _, summed = model(inputs, targets, next_group=next_group, reduction="sum")
    counted = int((targets != IGNORE_INDEX).sum())
    assert abs(float(summed.detach()) / counted - float(expected_loss.detach())) < tolerance
    # Without groups the same call is the plain full cross-entropy.
    _, full_loss = _model(dtype, groups=False)(inputs, targets, next_group=next_group)
    assert float(full_loss.detach()) > float(loss.detach()) + 0.5


def test_restricted_loss_has_the_masked_full_gradient(sequences):
    inputs, targets = sequences[:2, :-1], sequences[:2, 1:]
    grads = []
    for restricted in (True, False):
        model = _model(torch.float64).train()
        next_group = model.next_group(inputs)
        if restricted:
            _, loss = model(inputs, targets, next_group=next_group)
        else:
            reference = _masked_full(model, inputs, next_group)
            loss = F.cross_entropy(reference.reshape(-1, reference.shape[-1]), targets.reshape(-1))
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-8, atol=1e-12)


def test_last_only_and_cached_logits_are_restricted(sequences):
    model = _model()
    ids = sequences[:2, :40]
    next_group = model.next_group(ids)
    reference = _masked_full(model, ids, next_group)[:, -1:]
    last, _ = model(ids, last_only=True, next_group=next_group[:, -1:])
    assert last.shape == (2, 1, TOK.vocab_size)
    assert torch.allclose(torch.log_softmax(last, -1).nan_to_num(neginf=0),
                          torch.log_softmax(reference, -1).nan_to_num(neginf=0), atol=1e-6)
    cache = model.new_cache(2, 64)
    model(ids[:, :-1], cache=cache, last_only=True)
    cached, _ = model(ids[:, -1:], cache=cache, last_only=True, next_group=next_group[:, -1:])
    assert torch.allclose(cached.nan_to_num(neginf=0), last.nan_to_num(neginf=0), atol=1e-5)


def test_sampling_with_groups_draws_the_same_ids():
    """The grammar allows a subset of each group, so restricted logits sample the very same ids."""
    from cadenza.symbolic.sampling import generate

    prompt = torch.tensor([[v.AUTOREGRESS, v.SEPARATOR, v.SEPARATOR, v.SEPARATOR,
                            v.TIME_OFFSET + 50, v.DUR_OFFSET + 50, v.NOTE_OFFSET + 60]])
    drawn = []
    for groups in (True, False):
        grammar = TOK.grammar()
        grammar.set_limits(tokens=45)
        drawn.append(generate(_model(groups=groups), prompt.repeat(2, 1), 48, seed=3, grammar=grammar))
    assert torch.equal(drawn[0], drawn[1])
    assert (drawn[0][:, 7:52] < v.CONTROL_OFFSET).all()


def test_shipped_model_loads_with_groups_and_accompanies_as_with_the_full_softmax(bach_pieces):
    """A checkpoint trained on the full softmax loads with output groups (they slice the same
    output matrix) and samples the same accompaniment as with the full softmax masked by the grammar."""
    from cadenza.symbolic.anticipation_tasks import accompany
    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.registry import resolve_model

    model, tokenizer, _ = load_checkpoint(resolve_model("bach-anticipatory"))
    assert model.output_groups is not None
    score = tokenizer.as_score(bach_pieces[0].path)
    outs = []
    for groups in (True, False):
        model.use_output_groups(tokenizer if groups else None)
        outs.append(accompany(model, tokenizer, score, melody_track=0, end=2.0, seed=1, top_p=0.95, progress=False))
    assert outs[0].generated_events == outs[1].generated_events > 0
    first, second = ([t.notes.numpy()["pitch"].tolist() for t in o.generated.tracks] for o in outs)
    assert first == second


def test_evaluation_scores_the_restricted_distribution(bach_pieces):
    """Bits per note with groups are those of the restricted softmax, window by window: a window
    that starts inside a triple takes its groups from the whole piece."""
    from cadenza.data.datasets import ArrayPieces
    from cadenza.symbolic.evaluate import evaluate_pieces, frame_piece

    arrays = [TOK.encode(p.path)[:150] for p in bach_pieces[:2]]
    source = ArrayPieces(TOK, arrays, notes=[len(a) // 3 for a in arrays], seconds=[10.0, 10.0])
    model = _model(torch.float64)
    grouped = evaluate_pieces(model, source, context=100, stride=50)
    full = evaluate_pieces(_model(torch.float64, groups=False), source, context=100, stride=50)
    assert grouped.tokens == full.tokens == sum(len(a) + 6 for a in arrays)
    assert grouped.nats < full.nats
    # The same figure by hand, each piece in one window: the masked full softmax.
    expected = 0.0
    for i in range(len(arrays)):
        seq = torch.from_numpy(np.asarray(frame_piece(source.ids(i), TOK), np.int64))[None]
        reference = _masked_full(model, seq[:, :-1], model.next_group(seq[:, :-1]))
        expected += float(F.cross_entropy(reference[0], seq[0, 1:], reduction="sum"))
    whole = evaluate_pieces(model, source, context=200, stride=200)
    assert abs(whole.nats - expected) < 1e-9 * expected
    # Windows that start mid-triple see less context but are scored in the same groups.
    assert grouped.nats > 0.9 * whole.nats
