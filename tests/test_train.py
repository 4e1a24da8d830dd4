"""Training: schedule, crops, augmentation, likelihood maths, pickle-free state, exact resume, CLI."""

from __future__ import annotations

import contextlib
import json
import math
import shutil

import numpy as np
import pytest
import symusic
import torch

from cadenza.data.augment import augment_score, stretch_time, transpose
from cadenza.data.datasets import IGNORE_INDEX, ArrayPieces, CropBatchSampler, RandomCrops, open_pieces
from cadenza.data.errors import CadenzaError
from cadenza.symbolic.evaluate import evaluate_pieces, piece_windows
from cadenza.symbolic.schedule import lr_multiplier
from cadenza.symbolic.train_state import load_optimizer_state, optimizer_state_flat
from cadenza.tokenizers import get_tokenizer

from conftest import run_cli


# -- schedule ------------------------------------------------------------------------------
def test_warmup_is_linear_then_cosine_reaches_the_floor():
    f = [lr_multiplier(s, warmup=10, total=110, min_ratio=0.1) for s in range(130)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert f[110] == pytest.approx(0.1) and f[129] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # never rises after warmup


# -- windows and likelihood ----------------------------------------------------------------
@pytest.mark.parametrize("n_targets,context,stride", [(5, 8, 4), (8, 8, 4), (9, 8, 4), (100, 8, 3), (100, 16, 16),
                                                      (1, 4, 1), (37, 5, 1)])
def test_windows_score_every_target_once_with_enough_context(n_targets, context, stride):
    counts = np.zeros(n_targets, dtype=int)
    for w in piece_windows(n_targets, context, stride):
        assert 0 <= w.start <= w.count_from < w.stop <= n_targets and w.stop - w.start <= context
        counts[w.count_from:w.stop] += 1
        # a counted target t sees inputs start..t: all of them, or at least context - stride
        assert w.count_from == 0 or w.count_from - w.start >= context - stride
    assert counts.tolist() == [1] * n_targets


class _Vocab:
    """The special ids a dataset needs, for a 10-id scheme."""

    base_vocab_size = 10
    pad_id, bos_id, eos_id, vocab_size = 10, 11, 12, 13


class _Bigram(torch.nn.Module):
    """A model whose next-token distribution depends on the current token only."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(1)))

    def forward(self, ids, targets=None):
        return self.table[ids], None


class _Uniform(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, targets=None):
        return torch.zeros(*ids.shape, self.vocab_size) + 0 * self.dummy, None


def _array_source():
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 10, size=n) for n in (3, 17, 40, 1)]
    return ArrayPieces(_Vocab(), arrays, notes=[2, 9, 21, 1], seconds=[1.5, 4.0, 10.0, 0.5])


def test_uniform_model_costs_log_vocab_per_token_and_bits_per_note_divide_the_total():
    source = _array_source()
    result = evaluate_pieces(_Uniform(13), source, context=8, batch_size=3, device="cpu")
    n_predicted = (3 + 1) + (17 + 1) + (40 + 1) + (1 + 1)  # every id and each EOS; BOS is given
    assert result.tokens == n_predicted and result.pieces == 4
    assert result.nll_per_token == pytest.approx(math.log(13))
    assert result.bits_per_note == pytest.approx(n_predicted * math.log2(13) / 33)
    assert result.bits_per_second == pytest.approx(n_predicted * math.log2(13) / 16.0)


def test_windowed_evaluation_equals_full_context_when_context_does_not_matter():
    source = _array_source()
    model = _Bigram(13)
    short = evaluate_pieces(model, source, context=4, stride=3, batch_size=2, device="cpu")
    full = evaluate_pieces(model, source, context=1000, batch_size=8, device="cpu")
    # the exact sum, computed directly
    logp = torch.log_softmax(model.table.detach().double(), dim=-1)
    expected = 0.0
    for i in range(len(source)):
        seq = [11, *source.ids(i).tolist(), 12]
        expected -= sum(float(logp[a, b]) for a, b in zip(seq[:-1], seq[1:]))
    assert short.tokens == full.tokens == 65
    assert short.nats == pytest.approx(expected, rel=1e-6) and full.nats == pytest.approx(expected, rel=1e-6)


# -- crops -----------------------------------------------------------------------------------
def test_crops_are_a_function_of_seed_and_index_and_frame_pieces():
    source = _array_source()
    crops = RandomCrops(source, 8, seed=3, augment=False)
    x1, y1, c1 = crops.example(5)
    x2, y2, c2 = crops.example(5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and c1 == c2
    assert not all(np.array_equal(crops.example(n)[0], x1) for n in range(6, 12))
    for n in range(200):
        x, y, crop = crops.example(n)
        seq = np.concatenate([[11], source.ids(crop.piece), [12]])
        valid = y != IGNORE_INDEX
        k = int(valid.sum())
        assert np.array_equal(x[:k], seq[crop.start:crop.start + k])
        assert np.array_equal(y[:k], seq[crop.start + 1:crop.start + k + 1])
        assert np.all(x[k:] == 10) and not valid[k:].any()  # padding only after the piece ends
        if len(seq) > 8:
            assert k == 8
        else:
            assert crop.start == 0 and k == len(seq) - 1


def test_pieces_are_drawn_in_proportion_to_their_length():
    source = ArrayPieces(_Vocab(), [np.zeros(8, dtype=np.int64), np.ones(88, dtype=np.int64)], [1, 1], [1.0, 1.0])
    crops = RandomCrops(source, 4, seed=0, augment=False)
    share = np.mean([crops.example(n)[2].piece == 0 for n in range(4000)])
    assert share == pytest.approx(10 / 100, abs=0.02)


def test_ranks_read_disjoint_examples_and_a_later_start_resumes_the_stream():
    ranks = [CropBatchSampler(3, rank=r, world_size=2) for r in range(2)]
    seen = [[i for _, batch in zip(range(5), iter(s)) for i in batch] for s in ranks]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(30))
    resumed = CropBatchSampler(3, rank=1, world_size=2, start=2)
    fresh = iter(ranks[1])
    third = [next(fresh) for _ in range(3)][-1]
    assert next(iter(resumed)) == third == ranks[1].indices(2)


def test_anticipatory_training_sequences_are_the_reference_packing(bach_pieces):
    from cadenza.data.datasets import PackedSequences, frame_piece
    from cadenza.tokenizers.anticipation_ops import AUTOREGRESS, NOTE_OFFSET, REST, SEPARATOR

    tok = get_tokenizer("anticipatory")
    scores = [symusic.Score(str(p.path)) for p in bach_pieces[:2]]
    source = ArrayPieces(tok, [tok.encode(s) for s in scores], [s.note_num() for s in scores], [1.0, 1.0])
    packed = PackedSequences(source, 62, seed=1, augment=False)  # 62 -> 20 whole triples after the flag
    assert packed.seq_len == 60 and packed.sequences.shape[1] == 61
    assert set(packed.sequences[:, 0].tolist()) == {AUTOREGRESS}
    count = len(packed.sequences)
    first_epoch = sorted(packed.example(n)[2] for n in range(count))
    assert first_epoch == list(range(count))  # every sequence once per epoch
    inputs, targets, index = packed.example(count + 3)
    assert np.array_equal(inputs[1:], targets[:-1]) and np.array_equal(targets, packed.sequences[index, 1:])
    # every note of both pieces is in exactly one sequence, except the unfilled tail of the stream
    notes = sum(int(((s >= NOTE_OFFSET) & (s < REST)).sum()) for s in packed.sequences[:, 1:].reshape(-1, 3)[:, 2:])
    assert sum(source.notes) - 20 <= notes <= sum(source.notes)
    framed = frame_piece(source.ids(0), tok)
    assert framed[:4].tolist() == [AUTOREGRESS] + [SEPARATOR] * 3 and framed[-3:].tolist() == [SEPARATOR] * 3


# -- augmentation ----------------------------------------------------------------------------
def _small_score() -> symusic.Score:
    score = symusic.Score(480)
    piano = symusic.Track(program=0)
    for i, pitch in enumerate((60, 64, 67, 126)):
        piano.notes.append(symusic.Note(i * 480, 480, pitch, 80))
    drums = symusic.Track(program=0, is_drum=True)
    drums.notes.append(symusic.Note(0, 120, 36, 100))
    score.tracks.extend([piano, drums])
    score.tempos.append(symusic.Tempo(0, 100.0))
    return score


def test_transposition_moves_pitched_notes_keeps_drums_and_drops_what_leaves_midi_range():
    up = transpose(_small_score(), 3)
    assert [n.pitch for n in up.tracks[0].notes] == [63, 67, 70]
    assert [n.pitch for n in up.tracks[1].notes] == [36]
    down = transpose(_small_score(), -3)
    assert [n.pitch for n in down.tracks[0].notes] == [57, 61, 64, 123]


def test_time_stretch_scales_seconds_not_beats():
    score = _small_score()
    longer = stretch_time(score, 1.05)
    assert longer.to("second").end() == pytest.approx(score.to("second").end() * 1.05, rel=1e-6)
    assert [n.time for n in longer.tracks[0].notes] == [n.time for n in score.tracks[0].notes]
    no_tempo = symusic.Score(480)
    no_tempo.tracks.append(symusic.Track())
    no_tempo.tracks[0].notes.append(symusic.Note(0, 960, 60, 80))
    assert stretch_time(no_tempo, 0.95).to("second").end() == pytest.approx(1.0 * 0.95, rel=1e-6)


def test_augmented_event_ids_are_the_encoding_of_the_augmented_score(tmp_path, bach_pieces):
    tok = get_tokenizer("event")
    for piece in bach_pieces[:2]:
        shutil.copy(piece.path, tmp_path / piece.path.name)
    source = open_pieces(split="train", corpus=tmp_path, tokenizer=tok)
    plain = source.ids(0)
    up = source.ids(0, semitones=2, stretch=1.0)
    # the event scheme's NOTE_ON / NOTE_OFF ids move with the pitch, everything else stays
    pitched = plain < 256
    assert np.array_equal(up[pitched], plain[pitched] + 2) and np.array_equal(up[~pitched], plain[~pitched])
    slower = source.ids(0, semitones=0, stretch=1.05)
    assert np.array_equal(slower, tok.encode(augment_score(symusic.Score(str(source.paths[0])), 0, 1.05)))
    shifts = lambda ids: int(sum(i - 255 for i in ids if 256 <= i < 356))  # noqa: E731  total 10 ms steps
    assert shifts(slower) == pytest.approx(shifts(plain) * 1.05, rel=0.01)


def _onset_steps(ids):
    ids = np.asarray(ids)
    steps = np.cumsum(np.where((ids >= 256) & (ids < 356), ids - 255, 0))
    return steps[ids < 128], ids[ids < 128]


def test_event_ids_are_augmented_exactly_without_a_score(bach_scores):
    from cadenza.data.augment import event_augment_ids

    tok = get_tokenizer("event")
    for score in bach_scores[:4]:
        ids = tok.encode(score)
        assert np.array_equal(event_augment_ids(tok, ids, 0, 1.0), ids)
        for semitones in (-3, 2):
            assert np.array_equal(event_augment_ids(tok, ids, semitones, 1.0), tok.encode(transpose(score, semitones)))
        for stretch in (0.95, 1.05):
            on_ids, on_score = _onset_steps(event_augment_ids(tok, ids, 1, stretch)), _onset_steps(
                tok.encode(augment_score(score, 1, stretch)))
            # the same notes in the same order, each onset within one 10 ms step of the re-encoded one
            assert np.array_equal(on_ids[1], on_score[1])
            assert np.abs(on_ids[0] - on_score[0]).max() <= 1
    # a pitch pushed out of range takes its NOTE_ON and NOTE_OFF with it, and its now useless VELOCITY
    narrow = get_tokenizer("event", pitch_range=[60, 64])
    ids = np.array([narrow.velocity_offset + 3, 4, narrow.time_shift_offset + 9, 9,
                    narrow.velocity_offset + 5, 0, narrow.time_shift_offset, 5])
    assert event_augment_ids(narrow, ids, 1, 1.0).tolist() == [narrow.time_shift_offset + 9,
                                                              narrow.velocity_offset + 5, 1,
                                                              narrow.time_shift_offset, narrow.note_off_offset + 1]


# -- pickle-free optimizer state ---------------------------------------------------------------
def test_optimizer_state_survives_the_flat_round_trip():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    for _ in range(3):
        model(torch.randn(5, 4)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, meta = optimizer_state_flat(opt)
    json.dumps(meta)  # all of it is JSON
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    twin.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(twin.parameters(), lr=5.0)
    load_optimizer_state(opt2, tensors, meta)
    batch = torch.randn(5, 4)
    for m, o in ((model, opt), (twin, opt2)):
        m(batch).square().sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


# -- training runs ---------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models on a shared 2-core machine run many times faster on one thread (no OpenMP
    spinning against the other test worker); subprocesses inherit it through the environment."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chorale_dir(tmp_path_factory, bach_pieces, bach_valid_piece):
    """Four training chorales and a validation chorale."""
    root = tmp_path_factory.mktemp("chorales")
    chosen = [p for p in bach_pieces if p.split == "train"][:4] + [bach_valid_piece]
    assert len(chosen) == 5
    for piece in chosen:
        shutil.copy(piece.path, root / piece.path.name)
    return root


def _settings(out, corpus, **overrides):
    from cadenza.symbolic.train import TrainSettings

    values = dict(out=str(out), corpus=str(corpus), scheme="event", config="debug", steps=6, seq_len=32, batch_size=2,
                  grad_accum=2, warmup=2, eval_every=3, progress=False, device="cpu", seed=7)
    values.update(overrides)
    return TrainSettings(**values)


def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, chorale_dir):
    from safetensors.torch import load_file

    from cadenza.symbolic.train import train

    whole = train(_settings(tmp_path / "whole", chorale_dir))
    first = train(_settings(tmp_path / "parts", chorale_dir, stop_after=2))
    assert first["step"] == 2
    with pytest.raises(CadenzaError, match="--resume"):
        train(_settings(tmp_path / "parts", chorale_dir))
    second = train(_settings(tmp_path / "parts", chorale_dir, resume=True))
    assert whole["step"] == second["step"] == 6
    # Ctrl-C in the middle of step 4's accumulation: the checkpoint keeps 3 whole steps
    def interrupt(step, micro, inputs, targets):
        if (step, micro) == (3, 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_settings(tmp_path / "stopped", chorale_dir), on_batch=interrupt)
    assert json.loads((tmp_path / "stopped/training_state.json").read_text())["step"] == 3
    train(_settings(tmp_path / "stopped", chorale_dir, resume=True))
    a = load_file(str(tmp_path / "whole/model.safetensors"))
    for run in ("parts", "stopped"):
        b = load_file(str(tmp_path / run / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = load_file(str(tmp_path / "whole/training_state.safetensors"))
    sb = load_file(str(tmp_path / "parts/training_state.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the logs read the same, evaluations included
    logs = [[json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("whole", "parts")]
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in recs]  # noqa: E731
    assert strip(logs[0]) == strip(logs[1])
    assert [r["step"] for r in logs[0] if r["kind"] == "eval"] == [3, 6]
    assert whole["metrics"] == second["metrics"]
    config = json.loads((tmp_path / "whole/config.json").read_text())
    assert config["info"]["step"] == 6 and config["info"]["metrics"] == whole["metrics"]
    assert config["tokenizer"]["scheme"] == "event" and config["model"]["vocab_size"] == 391
    assert (tmp_path / "whole/loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_anticipatory_scheme_trains_and_evaluates_on_its_own_sequences(tmp_path, chorale_dir):
    from cadenza.symbolic.train import train

    summary = train(_settings(tmp_path / "run", chorale_dir, scheme="anticipatory", steps=2, seq_len=30,
                              grad_accum=1, eval_every=0))
    assert summary["step"] == 2 and summary["tokens"] == 2 * 2 * 30
    assert 0 < summary["metrics"]["nll_per_token"] < 2 * math.log(55031)
    assert json.loads((tmp_path / "run/config.json").read_text())["tokenizer"]["scheme"] == "anticipatory"


def test_a_checkpoint_torn_between_steps_is_refused(tmp_path, chorale_dir):
    from cadenza.symbolic.train import train
    from cadenza.symbolic.train_state import read_training_state

    train(_settings(tmp_path / "run", chorale_dir, steps=1, eval_every=0))
    state_path = tmp_path / "run/training_state.json"
    state = json.loads(state_path.read_text())
    state["step"] = 5
    state_path.write_text(json.dumps(state))
    with pytest.raises(CadenzaError, match="disagree"):
        read_training_state(tmp_path / "run")


def test_cli_trains_on_chorales_then_evaluates(tmp_path, chorale_dir, capsys):
    out = tmp_path / "run"
    proc = run_cli("train", "--corpus", chorale_dir, "--scheme", "event", "--out", out, "--config", "debug",
                   "--steps", "3", "--seq-len", "32", "--batch-size", "2", "--device", "cpu", "--quiet")
    assert "trained to step 3" in proc.stdout and "bits/note" in proc.stdout
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    final = [r for r in records if r["kind"] == "eval"][-1]
    assert (out / "loss.png").exists() and (out / "model.safetensors").exists()

    # evaluate through the same command-line entry point, in this process (torch is loaded already)
    from cadenza.cli.main import main

    assert main(["evaluate", "--checkpoint", str(out), "--split", "valid", "--json", "--quiet", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 3 and result["pieces"] == 1
    # the same model on the same split: the figures the run logged at its end
    for key in ("nll_per_token", "bits_per_note", "bits_per_second", "tokens", "notes"):
        assert result[key] == pytest.approx(final[key], rel=1e-5)
    assert result["bits_per_note"] == pytest.approx(result["nats"] / math.log(2) / result["notes"])
    assert 0 < result["nll_per_token"] < 2 * math.log(391)

    # --resume needs nothing but the directory; --steps extends the run
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--quiet", "--device", "cpu"]) == 0
    assert "trained to step 4" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]

    assert main(["evaluate", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


# -- never losing work -------------------------------------------------------------------------
FAULT_STEPS = 40


def _cli_train_args(out, corpus, *extra):
    return ["train", "--corpus", str(corpus), "--scheme", "event", "--out", str(out), "--size", "debug",
            "--steps", str(FAULT_STEPS), "--seq-len", "32", "--batch-size", "2", "--device", "cpu", "--seed", "7",
            "--quiet", *extra]


def _start_cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "cadenza.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(predicate, proc, timeout=120.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not get under way"
        time.sleep(0.01)


def _logged_steps(out) -> int:
    log = out / "log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum('"kind": "train"' in line for line in lines)


def _saved_step(out) -> int:
    try:
        return json.loads((out / "training_state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@contextlib.contextmanager
def _single_thread():
    """One torch thread for a module fixture (the per-test fixture is not active yet)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, chorale_dir):
    """Weights of the fault tests' run when nothing stops it (one thread, like the subprocesses)."""
    from safetensors.torch import load_file

    from cadenza.cli.main import main

    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    with _single_thread():
        assert main(_cli_train_args(out, chorale_dir)) == 0
    return load_file(str(out / "model.safetensors"))


def _assert_same_weights(out, expected):
    from safetensors.torch import load_file

    got = load_file(str(out / "model.safetensors"))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


@pytest.mark.parametrize("signum,status,name", [(2, 130, "SIGINT"), (15, 143, "SIGTERM")])
def test_a_signal_checkpoints_and_the_resumed_run_ends_bit_identical(tmp_path, chorale_dir, uninterrupted,
                                                                      signum, status, name):
    out = tmp_path / "run"
    proc = _start_cli(*_cli_train_args(out, chorale_dir, "--checkpoint-every", "0", "--checkpoint-minutes", "0"))
    _wait_for(lambda: _logged_steps(out) >= 3, proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    stopped_at = _saved_step(out)
    assert 3 <= stopped_at < FAULT_STEPS  # the only checkpoint is the one the signal asked for
    assert stderr.strip().splitlines() == [f"cadenza: stopped by {name} at step {stopped_at}; the checkpoint in "
                                           f"{out} resumes with --resume"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    from cadenza.cli.main import main

    assert main(["train", "--out", str(out), "--resume", "--quiet", "--device", "cpu"]) == 0
    assert _saved_step(out) == FAULT_STEPS
    _assert_same_weights(out, uninterrupted)


def test_sigkill_leaves_the_last_periodic_checkpoint_which_resumes_and_cleans_up(tmp_path, chorale_dir, uninterrupted):
    import signal

    out = tmp_path / "run"
    proc = _start_cli(*_cli_train_args(out, chorale_dir, "--checkpoint-every", "4"))
    _wait_for(lambda: _saved_step(out) >= 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _saved_step(out)
    assert killed_at % 4 == 0 and 8 <= killed_at < FAULT_STEPS
    # what a write cut by the kill would have left: a whole temporary checkpoint and an atomic temporary
    (out / ".checkpoint-cut").mkdir(exist_ok=True)
    (out / ".checkpoint-cut" / "model.safetensors").write_bytes(b"\0" * 4096)
    (out / ".log.jsonl.abcd.jsonl").write_text("{")
    from cadenza.cli.main import main

    assert main(["train", "--out", str(out), "--resume", "--quiet", "--device", "cpu"]) == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, FAULT_STEPS + 1))
    _assert_same_weights(out, uninterrupted)


def test_a_resume_with_other_data_or_tokenization_is_refused(tmp_path, chorale_dir, capsys):
    from cadenza.cli.main import main

    corpus = tmp_path / "corpus"
    shutil.copytree(chorale_dir, corpus)
    out = tmp_path / "run"
    assert main(_cli_train_args(out, corpus, "--steps", "2")) == 0
    capsys.readouterr()
    before = (out / "training_state.json").read_text()

    def refused(*args) -> str:
        assert main(["train", "--out", str(out), "--resume", "--quiet", "--device", "cpu", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        return err[0]

    assert refused("--scheme", "remi") == (f"cadenza: error: {out}: cannot resume with --scheme 'remi': the run was "
                                           f"started with 'event' (resume without --scheme, or train into another --out)")
    assert "--corpus 'bach-chorales'" in refused("--corpus", "bach-chorales")
    assert "--seq-len 64" in refused("--seq-len", "64")
    assert "--size 'cpu'" in refused("--size", "cpu")
    extra = next(p for p in sorted(corpus.iterdir()))
    shutil.copy(extra, corpus / f"{'a' * 3}{extra.name}")  # one piece more (in whichever split its name falls)
    (corpus / extra.name).unlink()
    assert "the corpus changed" in refused()
    assert (out / "training_state.json").read_text() == before
    # the same corpus given again, relative or absolute, is no change
    shutil.rmtree(corpus)
    shutil.copytree(chorale_dir, corpus)
    assert main(["train", "--out", str(out), "--resume", "--corpus", str(corpus), "--scheme", "event", "--steps", "3",
                 "--quiet", "--device", "cpu"]) == 0


@pytest.mark.parametrize("option,value,message", [
    ("--lr", "nan", "--lr must be a finite number, got nan"),
    ("--lr", "-0.1", "--lr must be above 0, got -0.1"),
    ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("--seq-len", "1000000000", "--seq-len must be at most 131072, got 1e+09"),
    ("--dropout", "1", "--dropout must be below 1, got 1"),
    ("--warmup", "-5", "--warmup must be at least 0, got -5"),
    ("--clip", "inf", "--clip must be a finite number, got inf"),
    ("--max-minutes", "-1", "--max-minutes must be above 0, got -1"),
])
def test_training_options_are_checked_before_anything_is_read(tmp_path, capsys, option, value, message):
    from cadenza.cli.main import main

    assert main(["train", "--corpus", str(tmp_path / "nowhere"), "--scheme", "event", "--out", str(tmp_path / "o"),
                 option, value]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"cadenza: error: {message}"]
    assert not (tmp_path / "o").exists()


def test_a_directory_corpus_reads_score_formats_and_reports_what_it_skipped(tmp_path, chorale_dir, capsys):
    from cadenza.cli.main import main
    from cadenza.data.corpora import _music21_corpus_dir, split_of
    from cadenza.symbolic.train import set_up

    corpus = tmp_path / "mixed"
    shutil.copytree(chorale_dir, corpus)
    music21 = _music21_corpus_dir()
    assert [split_of(f"mixed-{i}") for i in (0, 1, 2, 4, 5)] == ["train"] * 5
    shutil.copy(music21 / "palestrina/Credo_67_c.krn", corpus / "mixed-0.krn")
    shutil.copy(music21 / "essenFolksong/teste.abc", corpus / "mixed-1.abc")
    shutil.copy(music21 / "bach/bwv165.6.mxl", corpus / "mixed-2.mxl")
    (corpus / "mixed-4.mid").write_bytes(b"MThd garbage")
    (corpus / "mixed-5.xml").write_text("<score-partwise><part>")
    run = set_up(_settings(tmp_path / "run", corpus, steps=1))
    train_ids = run.sources["train"].piece_ids
    assert {"mixed-0", "mixed-1", "mixed-2"} <= set(train_ids) and len(train_ids) == 4 + 3
    assert sorted(piece for _, piece, _ in run.skipped) == ["mixed-4", "mixed-5"]
    assert main(_cli_train_args(tmp_path / "cli", corpus, "--steps", "1")) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped 2 unreadable pieces: mixed-4, mixed-5 (first: ")


def test_a_time_box_spans_resumes_and_a_changed_tokenizer_config_is_refused(tmp_path, chorale_dir):
    from cadenza.symbolic.train import train

    out = tmp_path / "run"
    first = train(_settings(out, chorale_dir, max_minutes=1.0, stop_after=2, eval_every=0))
    assert first["step"] == 2 and 0 < first["elapsed_seconds"] < 60
    state_path = out / "training_state.json"
    state = json.loads(state_path.read_text())
    assert 0 < state["elapsed_seconds"] <= first["elapsed_seconds"]  # the time up to the checkpoint
    state["elapsed_seconds"] = 60.0  # the minute is spent: a resume has nothing left to do
    state_path.write_text(json.dumps(state))
    assert train(_settings(out, chorale_dir, resume=True))["step"] == 2
    state["elapsed_seconds"] = 1.0
    state_path.write_text(json.dumps(state))
    again = train(_settings(out, chorale_dir, resume=True))
    assert again["step"] == 6 and again["elapsed_seconds"] > 1.0 + again["seconds"] - 0.5
    with pytest.raises(CadenzaError, match="cannot resume with the tokenizer config"):
        train(_settings(out, chorale_dir, resume=True, steps=8, tokenizer_config={"time_shift_ms": 20}))


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory, chorale_dir):
    from cadenza.symbolic.train import train

    out = tmp_path_factory.mktemp("one-step") / "run"
    with _single_thread():
        train(_settings(out, chorale_dir, steps=1, eval_every=0))
    return out


def _edit_state(edit):
    def damage(out):
        path = out / "training_state.json"
        state = json.loads(path.read_text())
        edit(state)
        path.write_text(json.dumps(state))
    return damage


@pytest.mark.parametrize("damage,message", [
    (lambda out: (out / "training_state.json").write_text("{garbage"), r"training_state.json: not valid JSON"),
    (lambda out: (out / "training_state.json").write_text('{"step": 1}'), r"training_state.json: not a training state"),
    (lambda out: (out / "training_state.safetensors").write_bytes(b"\x10\x00"),
     r"training_state.safetensors: unreadable training state"),
    (lambda out: (out / "config.json").write_text("[]"), r"disagree on the step"),
    (_edit_state(lambda s: s["optimizer"]["param_groups"].pop()), r"the training state does not fit the model"),
    (_edit_state(lambda s: s["settings"].update(clip=-1)), r"the saved run settings do not check: --clip must be at "
                                                          r"least 0, got -1"),
    (_edit_state(lambda s: s.update(settings=[1])), r"the training state holds no run settings"),
])
def test_a_damaged_training_state_is_refused_in_one_line(tmp_path, one_step_run, chorale_dir, damage, message):
    from cadenza.symbolic.train import train

    out = tmp_path / "run"
    shutil.copytree(one_step_run, out)
    damage(out)
    with pytest.raises(CadenzaError, match=message) as caught:
        train(_settings(out, chorale_dir, resume=True, steps=2))
    assert "\n" not in str(caught.value) and str(out) in str(caught.value)


def test_precision_is_bf16_autocast_where_the_hardware_has_it_and_checkpoints_stay_float32(tmp_path, chorale_dir):
    from safetensors.torch import load_file

    from cadenza.symbolic.device import autocast_context, cpu_has_fast_bf16, training_precision
    from cadenza.symbolic.train import train

    cpu = torch.device("cpu")
    assert training_precision(cpu, "fp32") == "fp32" and training_precision(cpu, "bf16") == "bf16"
    assert training_precision(cpu, "auto") == ("bf16" if cpu_has_fast_bf16() else "fp32")
    with pytest.raises(CadenzaError, match="unknown precision"):
        training_precision(cpu, "fp16")
    a, b = torch.ones(2, 2), torch.ones(2, 2)
    with autocast_context(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast_context(cpu):  # evaluations on the CPU stay float32
        assert (a @ b).dtype == torch.float32
    runs = {p: train(_settings(tmp_path / p, chorale_dir, precision=p, eval_every=0)) for p in ("fp32", "bf16")}
    for p in runs:
        assert json.loads((tmp_path / p / "config.json").read_text())["info"]["precision"] == p
        assert all(t.dtype == torch.float32 for t in load_file(str(tmp_path / p / "training_state.safetensors")).values()
                   if t.is_floating_point())
    losses = {p: [json.loads(line)["loss"] for line in (tmp_path / p / "log.jsonl").read_text().splitlines()
                  if json.loads(line)["kind"] == "train"] for p in runs}
    assert abs(losses["fp32"][0] - losses["bf16"][0]) < 0.05  # the same first step, to bf16's precision
    assert runs["fp32"]["metrics"] != runs["bf16"]["metrics"]


def test_init_starts_a_new_run_from_trained_weights_and_counts_their_steps(tmp_path, chorale_dir, capsys):
    from safetensors.torch import load_file

    from cadenza.cli.main import main
    from cadenza.symbolic.shipping import ship_model
    from cadenza.symbolic.train import set_up, train

    first = train(_settings(tmp_path / "first", chorale_dir, steps=4, eval_every=0))
    assert first["step"] == 4
    # before its first step, the new run holds exactly the weights it starts from, in training mode
    a = load_file(str(tmp_path / "first/model.safetensors"))
    run = set_up(_settings(tmp_path / "untouched", chorale_dir, init=str(tmp_path / "first"), eval_every=0))
    b = run.model.state_dict()
    assert run.step == 0 and run.model.training and all(torch.equal(a[k], b[k]) for k in a)
    # the crop length and batch default to the weights' own run
    bare = set_up(_settings(tmp_path / "bare", chorale_dir, init=str(tmp_path / "first"), config=None, seq_len=None,
                            batch_size=None))
    assert (bare.settings.size, bare.settings.seq_len, bare.settings.batch_size) == ("debug", 32, 2)
    tuned = train(_settings(tmp_path / "tuned", chorale_dir, init=str(tmp_path / "first"), steps=3, eval_every=0))
    assert tuned["step"] == 3
    c = load_file(str(tmp_path / "tuned/model.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)  # it trained, with a fresh schedule of its own
    info = json.loads((tmp_path / "tuned/config.json").read_text())["info"]
    assert info["init"] == {"from": str(tmp_path / "first"), "steps": 4}
    shipped = ship_model(tmp_path / "tuned", "tuned", command="cadenza train ...", models_dir=tmp_path / "models")
    assert json.loads((shipped / "config.json").read_text())["info"]["total_steps"] == 7
    # a resumed fine-tuning run keeps its record; another tokenization than the weights' is refused
    train(_settings(tmp_path / "tuned", chorale_dir, steps=5, eval_every=0, resume=True))
    assert json.loads((tmp_path / "tuned/config.json").read_text())["info"]["init"]["steps"] == 4
    assert main(["train", "--corpus", str(chorale_dir), "--scheme", "remi", "--init", str(tmp_path / "first"),
                 "--out", str(tmp_path / "wrong"), "--steps", "1", "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer is not the one this run trains" in err[0]
