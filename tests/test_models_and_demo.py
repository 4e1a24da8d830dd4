"""Shipped models (listing, loading by name, shipping a run) and the demo end to end."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli


def test_shipped_models_are_listed_with_their_figures():
    from cadenza.symbolic.registry import list_models

    entries = {e.name: e for e in list_models()}
    assert {"classical-event", "bach-event", "bach-remi", "bach-anticipatory", "transcriber-piano"} <= set(entries)
    corpora = {"classical-event": "bach-chorales+classical", "bach-event": "bach-chorales",
               "bach-remi": "bach-chorales", "bach-anticipatory": "bach-chorales"}
    for name, corpus in corpora.items():
        entry = entries[name]
        assert entry.kind == "music-transformer" and entry.size_mb <= 25
        assert entry.info["corpus"] == corpus
        assert entry.info["valid_bits_per_note"] > 0 and entry.info["step"] > 0
        assert entry.info["training_command"].startswith("cadenza train")
    assert entries["transcriber-piano"].kind == "transcription"
    listing = json.loads(run_cli("models", "--json").stdout)
    assert {m["name"] for m in listing} >= set(corpora)


def test_the_default_model_is_the_best_event_model_on_the_split_by_tune():
    from cadenza.symbolic.registry import DEFAULT_MODEL, list_models

    entries = {e.name: e for e in list_models()}
    assert DEFAULT_MODEL == "bach-event" and entries[DEFAULT_MODEL].scheme == "event"
    # trained on the split by tune, so its valid chorales' tunes were never in its training data
    assert entries[DEFAULT_MODEL].info["settings"]["transpose"] == "keys"
    assert entries[DEFAULT_MODEL].info["valid_bits_per_note"] < 3.0


def test_shipped_event_model_loads_by_name_and_is_fp16_on_disk():
    from safetensors import safe_open

    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.registry import resolve_model

    path = resolve_model("bach-event")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    model, tokenizer, info = load_checkpoint(path)
    assert tokenizer.name == "event" and model.config.vocab_size == tokenizer.vocab_size == 391
    assert next(model.parameters()).dtype == torch.float32


def test_ship_model_from_a_training_run(tmp_path, bach_pieces, bach_valid_piece):
    from cadenza.data.errors import CadenzaError
    from cadenza.symbolic.registry import resolve_model
    from cadenza.symbolic.shipping import ship_model

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for piece in [*bach_pieces[:11], bach_valid_piece]:   # the first chorales are all training pieces
        (corpus / f"{piece.id}.mid").write_bytes(piece.path.read_bytes())
    run_cli("train", "--corpus", corpus, "--scheme", "event", "--config", "debug", "--steps", "3",
            "--out", tmp_path / "run", "--quiet", "--device", "cpu")
    models = tmp_path / "models"
    target = ship_model(tmp_path / "run", "tiny", command="cadenza train ...", models_dir=models)
    config = json.loads((target / "config.json").read_text())
    assert config["info"]["valid_bits_per_note"] > 0 and config["info"]["step"] == 3
    assert config["tokenizer"]["scheme"] == "event"
    with pytest.raises(CadenzaError, match="over the"):
        ship_model(tmp_path / "run", "too-big", command="x", models_dir=models, max_mb=0.001)
    assert not (models / "too-big").exists()
    with pytest.raises(CadenzaError, match="not a shipped model"):
        resolve_model("no-such-model")


def test_demo_runs_the_whole_loop(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", out, "--seconds", "4", "--prompt-bars", "2", timeout=900)
    for suffix in ("-continued.mid", "-continued.musicxml", "-continued.wav", "-continued.html", "-prompt.mid"):
        assert any(p.name.endswith(suffix) for p in out.iterdir()), suffix
    assert "onset F1" in proc.stdout
    html = next(out.glob("*.html")).read_text()
    assert "<audio" in html and "<svg" in html


def test_continue_with_the_default_model_writes_every_format(tmp_path, bach_pieces):
    out = tmp_path / "c.mid"
    proc = run_cli("continue", bach_pieces[2].path, "-o", out, "--seconds", "2", "--num-samples", "2",
                   "--musicxml", "--wav", "--sheet", tmp_path / "sheet.html", "--seed", "3")
    for name in ("c-1.mid", "c-2.mid", "c-1.musicxml", "c-2.wav", "sheet.html"):
        assert (tmp_path / name).exists(), name
    assert "event tokens" in proc.stdout
    import symusic

    first, second = (symusic.Score(str(tmp_path / f"c-{i}.mid")) for i in (1, 2))
    original = symusic.Score(str(bach_pieces[2].path))
    assert first.to("second").end() > original.to("second").end() + 1.0
    assert [n.pitch for t in first.tracks for n in t.notes] != [n.pitch for t in second.tracks for n in t.notes]
    html = (tmp_path / "sheet.html").read_text()
    assert html.count("<audio") == 3
