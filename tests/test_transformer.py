"""The Music Transformer, its checkpoints and device choice."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cadenza.data.errors import CadenzaError
from cadenza.symbolic.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cadenza.symbolic.device import autocast_context, resolve_device
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig

VOCAB = 50



def _model(seed=0, **overrides) -> MusicTransformer:
    torch.manual_seed(seed)
    return MusicTransformer(MusicTransformerConfig.debug(VOCAB, **overrides)).eval()


def _ids(batch=2, length=40, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_loss_is_mean_cross_entropy_over_non_ignored_targets():
    model, ids = _model(), _ids()
    targets = ids.roll(-1, 1)
    targets[:, -5:] = -100
    targets[0, :3] = -100
    logits, loss = model(ids, targets)
    assert logits.shape == (2, 40, VOCAB)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(loss, expected)
    assert model(ids)[1] is None
    # An untrained model is close to uniform.
    assert abs(loss.item() - torch.log(torch.tensor(float(VOCAB))).item()) < 0.3


def test_model_is_causal():
    model, ids = _model(), _ids(1, 30)
    changed = ids.clone()
    changed[0, 20:] = (changed[0, 20:] + 7) % VOCAB
    for attention in ("relative", "absolute"):
        model = _model(attention=attention)
        a, b = model(ids)[0], model(changed)[0]
        assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6)
        assert not torch.allclose(a[:, 20:], b[:, 20:], atol=1e-3)


def test_attention_implementations_give_the_same_model():
    ids = _ids(2, 45)
    reference = _model(attention_impl="naive")(ids)[0]
    for impl in ("skew", "chunked"):
        model = _model(attention_impl=impl)
        assert torch.allclose(model(ids)[0], reference, atol=1e-5), impl


@pytest.mark.parametrize("attention", ["relative", "absolute"])
def test_cached_decoding_equals_the_full_forward(attention):
    model, ids = _model(attention=attention, max_relative_position=8), _ids(2, 30)
    full = model(ids)[0]
    with torch.no_grad():
        cache = model.new_cache(batch=2, capacity=30)
        pieces = [model(ids[:, :12], cache=cache)[0]]          # the prompt in one go
        for position in range(12, 30):                          # then one token at a time
            pieces.append(model(ids[:, position:position + 1], cache=cache)[0])
    assert cache.length == 30
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)


def _decode_one_by_one(model, ids, window, prompt=4):
    with torch.no_grad():
        cache = model.new_cache(batch=ids.shape[0], capacity=ids.shape[1], window=window)
        pieces = [model(ids[:, :prompt], cache=cache)[0]]
        for position in range(prompt, ids.shape[1]):
            pieces.append(model(ids[:, position:position + 1], cache=cache)[0])
    return torch.cat(pieces, 1)


def test_a_sliding_window_sees_what_a_crop_of_that_length_sees():
    model, ids, window = _model(n_layer=1, max_relative_position=8), _ids(2, 30), 10
    windowed = _decode_one_by_one(model, ids, window)
    for t in range(window, 30):  # one layer: position t sees exactly the crop ending at t
        crop = model(ids[:, t - window + 1:t + 1])[0][:, -1]
        assert torch.allclose(windowed[:, t], crop, atol=1e-5), t
    assert torch.allclose(windowed[:, :window], model(ids)[0][:, :window], atol=1e-5)


def test_a_sliding_window_bounds_what_deeper_layers_can_reach():
    model, ids, window = _model(max_relative_position=8), _ids(1, 40), 6  # two layers
    assert torch.allclose(_decode_one_by_one(model, ids, 40), model(ids)[0], atol=1e-5)  # wide: the same
    changed = ids.clone()
    changed[0, :5] = (changed[0, :5] + 3) % VOCAB
    reach = 4 + model.config.n_layer * (window - 1)  # the last changed position, then (W-1) per layer
    a, b = _decode_one_by_one(model, ids, window), _decode_one_by_one(model, changed, window)
    assert torch.allclose(a[:, reach + 1:], b[:, reach + 1:], atol=1e-6)
    assert not torch.allclose(a[:, reach - 2:reach + 1], b[:, reach - 2:reach + 1], atol=1e-4)
    unbounded = _decode_one_by_one(model, changed, None)
    assert not torch.allclose(unbounded[:, reach + 1:], _decode_one_by_one(model, ids, None)[:, reach + 1:], atol=1e-4)


def test_relative_and_absolute_models_differ_in_parameters():
    relative, absolute = _model(attention="relative"), _model(attention="absolute")
    cfg = relative.config
    assert relative.num_parameters() - absolute.num_parameters() == cfg.n_layer * cfg.n_head * \
        cfg.max_relative_position * cfg.head_dim


def test_a_few_steps_of_training_learn_a_repeating_pattern():
    model = _model().train()
    pattern = torch.arange(8).repeat(8)[None]                  # 0..7 over and over
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        _, loss = model(pattern[:, :-1], pattern[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    logits, loss = model(pattern[:, :-1], pattern[:, 1:])
    assert loss.item() < 0.5
    assert torch.equal(logits[0, 8:].argmax(-1), pattern[0, 9:])


def test_config_validation():
    with pytest.raises(ValueError):
        MusicTransformerConfig.debug(VOCAB, attention="rotary")
    with pytest.raises(ValueError):
        MusicTransformerConfig.debug(VOCAB, d_model=30, n_head=4)


def test_checkpoint_round_trip(tmp_path):
    from cadenza.tokenizers import get_tokenizer

    tokenizer = get_tokenizer("event")
    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig.debug(tokenizer.vocab_size))
    ids = torch.randint(0, tokenizer.vocab_size, (1, 20))
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"step": 7, "corpus": "bach-chorales"})
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["vocab_size"] == tokenizer.vocab_size and config["info"]["step"] == 7
    assert config["tokenizer"]["scheme"] == "event"
    assert not any(p.name.startswith(".") for p in path.iterdir())   # no temporary files left
    loaded, loaded_tokenizer, info = load_checkpoint(path)
    assert info == {"step": 7, "corpus": "bach-chorales"}
    assert loaded_tokenizer.to_dict() == tokenizer.to_dict()
    model.eval()
    assert torch.equal(loaded(ids)[0], model(ids)[0])
    # Half-precision weights: half the bytes, nearly the same logits once loaded as float32.
    half = save_checkpoint(tmp_path / "half", model, tokenizer, {}, dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (path / "model.safetensors").stat().st_size
    loaded_half, _, _ = load_checkpoint(half)
    assert next(loaded_half.parameters()).dtype == torch.float32
    assert torch.allclose(loaded_half(ids)[0], model(ids)[0], atol=1e-2)


def test_bad_checkpoints_fail_with_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    model = _model()
    save_checkpoint(tmp_path / "c", model, None, {})
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["model"]["d_model"] = 64
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="token_embedding.weight has shape .*the config asks for"):
        load_checkpoint(tmp_path / "c")


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CadenzaError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CadenzaError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with autocast_context(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
