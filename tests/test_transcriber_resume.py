"""The sequence transcriber's trainer on the shared kit: a run stopped (by its step count or by
SIGTERM) and resumed ends bit-identical to one that never stopped, and a resumed time-boxed run
continues its budget instead of getting a fresh one."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import soundfile
import torch

from cadenza.symbolic import kit
from cadenza.tokenizers.mt3 import MT3Tokenizer, notes_to_score

SR = 16000


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    t = np.arange(int(SR * 3.0)) / SR
    notes = [(0.1 + 0.4 * i, 0.5 + 0.4 * i, 60 + (i * 5) % 12) for i in range(6)]
    audio = sum(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) * ((t >= s) & (t < e)) for s, e, p in notes)
    soundfile.write(root / "x.flac", (0.2 * audio).astype(np.float32), SR)
    notes_to_score([(s, e, p, 90, 0, False) for s, e, p in notes]).dump_midi(str(root / "x.mid"))
    return root / "x.flac", root / "x.mid"


def _run(out, pair, steps, *, stop_at_batch=None, **settings):
    """Train a fresh debug model (same initial weights every time) or resume the one in ``out``."""
    from cadenza.transcription.seq2seq_train import TrainSettings, WindowSampler, new_model, train

    tok = MT3Tokenizer()
    torch.manual_seed(0)
    model = new_model(tok, "debug")
    sampler = WindowSampler([pair], tok, model.config.segment_frames, 64)
    if stop_at_batch is not None:
        draw, calls = sampler.batch, []

        def batch_then_signal(size):
            calls.append(size)
            if len(calls) == stop_at_batch:  # SIGTERM arrives in the middle of a step
                os.kill(os.getpid(), signal.SIGTERM)
            return draw(size)

        sampler.batch = batch_then_signal
    values = dict(steps=steps, batch_size=2, warmup=2, log_every=1, save_every=100, seed=3)
    values.update(settings)
    return train(model, tok, sampler, out, TrainSettings(**values), progress=False)


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(out):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads((out / "training_state.json").read_text())["history"]]


def test_stopped_and_resumed_runs_end_bit_identical(tmp_path, pair):
    whole = _run(tmp_path / "whole", pair, 5)
    assert whole["steps"] == 5
    assert _run(tmp_path / "parts", pair, 2)["steps"] == 2
    assert _run(tmp_path / "parts", pair, 5)["steps"] == 5  # resumes at 2
    with pytest.raises(kit.TrainingInterrupted) as stopped:
        _run(tmp_path / "signalled", pair, 5, stop_at_batch=3)
    assert stopped.value.step == 3 and stopped.value.exit_status == 143  # the step under way was finished
    assert json.loads((tmp_path / "signalled/training_state.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    _run(tmp_path / "signalled", pair, 5)
    expected = _tensors(tmp_path / "whole/model.safetensors")
    for run in ("parts", "signalled"):
        assert _same(_tensors(tmp_path / run / "model.safetensors"), expected)
        assert _same(_tensors(tmp_path / run / "training_state.safetensors"),
                     _tensors(tmp_path / "whole/training_state.safetensors"))
        assert _history(tmp_path / run) == _history(tmp_path / "whole")
        assert not [p for p in (tmp_path / run).iterdir() if p.name.startswith(".")]
    config = json.loads((tmp_path / "parts/config.json").read_text())
    assert config["info"]["step"] == config["info"]["steps"] == 5
    # a different run would not have matched
    _run(tmp_path / "other", pair, 5, seed=4)
    assert not _same(_tensors(tmp_path / "other/model.safetensors"), expected)


def test_a_resumed_time_boxed_run_continues_its_budget(tmp_path, pair):
    out = tmp_path / "run"
    _run(out, pair, 2, max_minutes=1.0)
    state_path = out / "training_state.json"
    state = json.loads(state_path.read_text())
    assert 0 < state["elapsed_seconds"] < 60
    state["elapsed_seconds"] = 60.0  # the whole minute is spent
    state_path.write_text(json.dumps(state))
    assert _run(out, pair, 10, max_minutes=1.0)["steps"] == 2  # no fresh budget: nothing more to do
    state["elapsed_seconds"] = 1.0
    state_path.write_text(json.dumps(state))
    summary = _run(out, pair, 3, max_minutes=1.0)
    assert summary["steps"] == 3 and summary["seconds"] > 1.0  # the first leg's second counts
    assert json.loads(state_path.read_text())["elapsed_seconds"] > 1.0


def test_options_are_checked_and_an_old_format_run_is_not_overwritten(tmp_path, pair):
    from cadenza.data.errors import CadenzaError

    with pytest.raises(CadenzaError, match=r"^--lr must be a finite number, got nan$"):
        _run(tmp_path / "a", pair, 2, learning_rate=float("nan"))
    with pytest.raises(CadenzaError, match=r"^--batch-size must be at least 1, got 0$"):
        _run(tmp_path / "a", pair, 2, batch_size=0)
    old = tmp_path / "old"
    old.mkdir()
    (old / "train_state.json").write_text('{"step": 7}')
    with pytest.raises(CadenzaError, match="old transcriber state format"):
        _run(old, pair, 2)
    assert sorted(p.name for p in old.iterdir()) == ["train_state.json"]
