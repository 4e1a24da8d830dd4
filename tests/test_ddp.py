"""DistributedDataParallel on the CPU: two gloo processes under torchrun read different crops
and finish with identical weights, equal to the checkpoint rank 0 wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent("""
    import json, os, sys
    from safetensors.torch import save_file
    from cadenza.symbolic.train import TrainSettings, train

    out, corpus, record_dir = sys.argv[1:4]
    seen = {}

    def on_batch(step, micro, inputs, targets):
        seen[f"step{step}.micro{micro}"] = inputs.clone()

    settings = TrainSettings(out=out, corpus=corpus, scheme="event", config="debug", steps=3, seq_len=32,
                             batch_size=2, grad_accum=2, warmup=1, eval_every=0, progress=False, device="cpu", seed=3,
                             max_minutes=60)  # a time box: the ranks' learning rates must read one clock
    summary = train(settings, on_batch=on_batch)
    rank = summary["rank"]
    assert summary["world_size"] == 2, summary
    save_file(seen, os.path.join(record_dir, f"batches{rank}.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in summary["model"].state_dict().items()},
              os.path.join(record_dir, f"weights{rank}.safetensors"))
    with open(os.path.join(record_dir, f"metrics{rank}.json"), "w") as handle:
        json.dump(summary["metrics"], handle)
""")


def test_two_gloo_ranks_see_different_data_and_end_with_identical_weights(tmp_path, bach_pieces, bach_valid_piece):
    from safetensors.torch import load_file

    corpus = tmp_path / "chorales"
    corpus.mkdir()
    chosen = [p for p in bach_pieces if p.split == "train"][:4] + [bach_valid_piece]
    for piece in chosen:
        shutil.copy(piece.path, corpus / piece.path.name)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    records = tmp_path / "records"
    records.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tmp_path / "run"), str(corpus), str(records)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    batches = [load_file(str(records / f"batches{r}.safetensors")) for r in range(2)]
    assert batches[0].keys() == batches[1].keys() and len(batches[0]) == 3 * 2
    assert all(not torch.equal(batches[0][k], batches[1][k]) for k in batches[0])

    # both ranks' evaluation figures were all-reduced to the same numbers
    metrics = [json.loads((records / f"metrics{r}.json").read_text()) for r in range(2)]
    assert metrics[0] == metrics[1] and metrics[0]["nll_per_token"] > 0

    # each rank's weights in memory, and the checkpoint rank 0 wrote
    a, b = (load_file(str(records / f"weights{r}.safetensors")) for r in range(2))
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], saved[k].to(a[k].dtype)) for k in saved)
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in line for line in log) == 3


TRANSCRIBER_WORKER = textwrap.dedent("""
    import os, sys
    import torch
    from safetensors.torch import save_file
    from cadenza.transcription.seq2seq_train import TrainSettings, WindowSampler, new_model, train
    from cadenza.tokenizers.mt3 import MT3Tokenizer

    audio_path, midi_path, out, record_dir = sys.argv[1:5]
    tok = MT3Tokenizer()
    torch.manual_seed(int(os.environ["RANK"]))  # ranks start apart: DDP must broadcast rank 0's weights
    model = new_model(tok, "debug")
    sampler = WindowSampler([(audio_path, midi_path)], tok, model.config.segment_frames, 128)
    seen = []
    draw = sampler.batch

    def recording_batch(size):
        audio, decoder_input, targets = draw(size)
        seen.append(audio.clone())
        return audio, decoder_input, targets

    sampler.batch = recording_batch
    # a time box makes the ranks agree on stopping at every step (an all-reduce each rank must join)
    settings = TrainSettings(steps=3, batch_size=2, warmup=1, log_every=1, max_minutes=60)
    summary = train(model, tok, sampler, out, settings, progress=False)
    assert summary["world_size"] == 2 and summary["steps"] == 3, summary
    rank = summary["rank"]
    save_file({f"batch{i}": a for i, a in enumerate(seen)}, os.path.join(record_dir, f"batches{rank}.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              os.path.join(record_dir, f"weights{rank}.safetensors"))
""")


def test_transcriber_trains_under_two_gloo_ranks(tmp_path):
    """The transcriber's DDP path: ranks draw different windows, start from rank 0's weights and end
    with identical weights, which rank 0 checkpoints."""
    import numpy as np
    import soundfile
    from safetensors.torch import load_file

    from cadenza.tokenizers.mt3 import notes_to_score

    rate, seconds = 16000, 6.0
    t = np.arange(int(rate * seconds)) / rate
    notes = [(0.2 + 0.5 * i, 0.6 + 0.5 * i, 60 + (i * 5) % 17) for i in range(11)]
    audio = sum(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) * ((t >= s) & (t < e)) for s, e, p in notes)
    soundfile.write(tmp_path / "x.flac", (0.2 * audio).astype(np.float32), rate)
    notes_to_score([(s, e, p, 90, 0, False) for s, e, p in notes]).dump_midi(str(tmp_path / "x.mid"))
    script = tmp_path / "worker.py"
    script.write_text(TRANSCRIBER_WORKER)
    records = tmp_path / "records"
    records.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tmp_path / "x.flac"), str(tmp_path / "x.mid"), str(tmp_path / "run"), str(records)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    batches = [load_file(str(records / f"batches{r}.safetensors")) for r in range(2)]
    assert len(batches[0]) == len(batches[1]) == 3
    assert all(not torch.equal(batches[0][k], batches[1][k]) for k in batches[0])
    a, b = (load_file(str(records / f"weights{r}.safetensors")) for r in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.allclose(a[k], saved[k].to(a[k].dtype)) for k in saved)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["info"]["steps"] == 3
