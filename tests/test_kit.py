"""The shared training kit: time-boxed schedule, run clock, option checks, stale temporaries,
stop signals, optimizer groups and the generic checkpoint writer."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from cadenza.data.errors import CadenzaError
from cadenza.symbolic import kit


def test_a_time_box_decays_by_whichever_of_steps_and_time_is_further_along():
    plain = kit.lr_multiplier(20, warmup=10, total=110)
    assert kit.lr_multiplier(20, warmup=10, total=110, elapsed=5.0, budget=100.0) == pytest.approx(plain)
    # half the time gone at a tenth of the steps: the cosine is halfway
    assert kit.lr_multiplier(20, warmup=10, total=110, elapsed=50.0, budget=100.0) == pytest.approx(0.1 + 0.9 * 0.5)
    assert kit.lr_multiplier(20, warmup=10, total=110, elapsed=500.0, budget=100.0) == pytest.approx(0.1)
    assert kit.lr_multiplier(3, warmup=10, total=110, elapsed=500.0, budget=100.0) == pytest.approx(0.4)  # warmup first


def test_the_run_clock_counts_earlier_legs_against_the_budget():
    fresh = kit.RunClock(budget_seconds=60.0)
    assert not fresh.out_of_time() and fresh.elapsed() < 1.0
    resumed = kit.RunClock(budget_seconds=60.0, elapsed=59.999)
    assert resumed.elapsed() >= 59.999 and resumed.leg() < 1.0
    assert kit.RunClock(budget_seconds=60.0, elapsed=60.0).out_of_time()
    assert not kit.RunClock(None, elapsed=1e9).out_of_time()
    assert resumed.multiplier(20, warmup=10, total=1000) == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("value,bounds,message", [
    (math.nan, {}, "lr must be a finite number, got nan"),
    (math.inf, {"minimum": 0}, "lr must be a finite number, got inf"),
    ("3", {}, "lr must be a finite number, got '3'"),
    (True, {}, "lr must be a finite number, got True"),
    (-1.0, {"above": 0}, "lr must be above 0, got -1"),
    (0.0, {"above": 0}, "lr must be above 0, got 0"),
    (1.5, {"below": 1}, "lr must be below 1, got 1.5"),
    (7, {"maximum": 5}, "lr must be at most 5, got 7"),
    (2.5, {"integer": True}, "lr must be a whole number, got 2.5"),
])
def test_bad_numbers_are_refused_in_one_line_naming_the_option(value, bounds, message):
    with pytest.raises(CadenzaError) as caught:
        kit.check_number("lr", value, **bounds)
    assert str(caught.value) == message


def test_good_numbers_pass():
    kit.check_number("steps", 3, minimum=1, integer=True)
    kit.check_number("dropout", 0.0, minimum=0, below=1)
    import numpy as np

    kit.check_number("steps", np.int64(4), minimum=1, integer=True)


def test_what_killed_writes_leave_is_removed_and_nothing_else(tmp_path):
    (tmp_path / ".checkpoint-abc123").mkdir()
    (tmp_path / ".checkpoint-abc123" / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / ".model.safetensors.k2j3.safetensors").write_bytes(b"x")
    (tmp_path / ".log.jsonl.zz.jsonl").write_bytes(b"x")
    (tmp_path / ".extra.bin.q.bin").write_bytes(b"x")
    keep = ["model.safetensors", "log.jsonl", ".hidden-of-someone-else", "notes.txt"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    removed = kit.remove_stale_temporaries(tmp_path, names=["extra.bin"])
    assert len(removed) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert kit.remove_stale_temporaries(tmp_path / "missing") == []


def test_the_first_signal_is_a_request_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with kit.StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    with kit.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # the second one acts at once
            os.kill(os.getpid(), signal.SIGINT)
    stopped = kit.TrainingInterrupted(signal.SIGTERM, 12, "runs/x")
    assert isinstance(stopped, KeyboardInterrupt) and stopped.exit_status == 143
    assert str(stopped) == "stopped by SIGTERM at step 12; the checkpoint in runs/x resumes with --resume"
    assert kit.TrainingInterrupted(signal.SIGINT, 1, "o").exit_status == 130


def test_decay_applies_to_matrices_only():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    decay, no_decay = kit.parameter_groups(model, 0.1)
    assert [tuple(p.shape) for p in decay["params"]] == [(3, 4)] and decay["weight_decay"] == 0.1
    assert [tuple(p.shape) for p in no_decay["params"]] == [(3,), (3,), (3,)] and no_decay["weight_decay"] == 0.0
    optimizer = kit.adamw(model, lr=1e-3, weight_decay=0.1, device="cpu")
    assert optimizer.defaults["betas"] == (0.9, 0.98) and not optimizer.defaults.get("fused")


def test_any_model_checkpoints_through_the_kit_and_comes_back(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = kit.adamw(model, lr=1e-2, weight_decay=0.0)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()

    def write_model(directory):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps({"info": {"step": 1}}))

    extra = {"sampler.position": torch.tensor([5])}
    kit.write_checkpoint(tmp_path, write_model, optimizer, {"step": 1, "elapsed_seconds": 12.5}, tensors=extra)
    assert kit.has_training_state(tmp_path) and not list(tmp_path.glob(".*"))
    tensors, state = kit.read_training_state(tmp_path)
    assert state["step"] == 1 and state["elapsed_seconds"] == 12.5
    assert torch.equal(tensors["sampler.position"], extra["sampler.position"]) and "rng.cpu" in tensors
    twin = kit.adamw(model, lr=5.0, weight_decay=0.0)
    kit.load_optimizer_state(twin, tensors, state["optimizer"])
    assert twin.param_groups[0]["lr"] == 1e-2

    def failing(directory):
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        kit.write_checkpoint(tmp_path, failing, optimizer, {"step": 2})
    assert not list(tmp_path.glob(".*")) and kit.read_training_state(tmp_path)[1]["step"] == 1


def test_fingerprints_are_stable_and_tell_contents_apart():
    a = kit.fingerprint([["bwv1", 100], ["bwv2", 80]])
    assert a == kit.fingerprint([["bwv1", 100], ["bwv2", 80]]) and len(a) == 16
    assert a != kit.fingerprint([["bwv1", 100], ["bwv2", 81]])


def _linear_checkpoint(out, model, optimizer, step):
    from safetensors.torch import save_file

    def write_model(directory):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps({"info": {"step": step}}))

    kit.write_checkpoint(out, write_model, optimizer, {"step": step})


@pytest.mark.parametrize("cut_at", [1, 2, 3, 4, 5])
def test_a_write_cut_short_anywhere_leaves_a_whole_checkpoint(tmp_path, monkeypatch, cut_at):
    """A kill between any two renames of a checkpoint write: the previous step's checkpoint, or the
    new one rolled forward, never a mixture."""
    from cadenza.symbolic import train_state

    model = torch.nn.Linear(3, 2)
    optimizer = kit.adamw(model, lr=1e-2, weight_decay=0.0)
    _linear_checkpoint(tmp_path, model, optimizer, step=1)
    real_replace, calls = os.replace, []

    def killed_replace(src, dst):
        calls.append(src)
        if len(calls) == cut_at:
            raise SystemExit("killed")
        real_replace(src, dst)

    monkeypatch.setattr(train_state.os, "replace", killed_replace)
    with pytest.raises(SystemExit):
        _linear_checkpoint(tmp_path, model, optimizer, step=2)
    monkeypatch.setattr(train_state.os, "replace", real_replace)
    assert kit.has_training_state(tmp_path)
    _, state = kit.read_training_state(tmp_path)
    assert state["step"] == (1 if cut_at == 1 else 2)  # cut before the pending rename: the old one
    kit.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kit.CHECKPOINT_FILES)
