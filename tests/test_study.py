"""The tokenization study end to end on a tiny model and a handful of chorales."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import run_cli

# piece ids whose hash puts them in each split (see cadenza.data.split_of)
LAYOUT = {"chorale-1": "train", "chorale-2": "train", "chorale-4": "train", "chorale-5": "train",
          "chorale-3": "valid", "chorale-0": "test"}


@pytest.fixture()
def small_corpus(tmp_path, bach_pieces):
    from cadenza.data import split_of

    corpus = tmp_path / "chorales"
    corpus.mkdir()
    for (name, split), piece in zip(LAYOUT.items(), bach_pieces):
        assert split_of(name) == split
        shutil.copy(piece.path, corpus / f"{name}.mid")
    return corpus


def test_tokenization_figures_are_exact_for_a_lossless_scheme(bach_scores):
    from cadenza.apps.study import tokenization_figures
    from cadenza.tokenizers import get_tokenizer

    figures = tokenization_figures(get_tokenizer("event"), bach_scores[:3])
    assert figures["roundtrip_onset_f1"] > 0.99  # chorale onsets sit on the 10 ms grid at these tempi
    assert 2.0 < figures["tokens_per_note"] < 4.0  # ON + OFF per note, plus shifts shared by chords
    assert figures["tokens_per_second"] > 10


def test_compare_writes_a_report_for_each_scheme(tmp_path, small_corpus):
    out = tmp_path / "study"
    proc = run_cli("compare", "--corpus", small_corpus, "--schemes", "event", "--attention", "relative,absolute",
                   "--config", "debug",
                   "--budget-minutes", "0.05", "--seq-len", "64", "--batch-size", "2", "--samples", "1", "--sample-seconds", "2",
                   "--out", out, "--device", "cpu")
    assert "report" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    labels = [(r["scheme"], r["attention"]) for r in results["results"]]
    assert labels == [("event", "relative"), ("event", "absolute")]
    for r in results["results"]:
        assert r["steps"] >= 10
        assert r["valid"]["bits_per_note"] > 0 and math.isfinite(r["valid"]["bits_per_second"])
        assert r["vocab_size"] == 391 and r["roundtrip_onset_f1"] > 0.99
    assert results["reference_stats"]["polyphony"]["n"] == 1
    assert results["reference_stats"]["broken"] == {"mean": 0.0, "std": 0.0, "n": 1}  # Bach's own next 2 s
    assert all(r["sample_stats"]["broken"]["n"] == 1 and "key_kept" in r["sample_stats"] for r in results["results"])
    text = (out / "report.md").read_text()
    assert "bits/note" in text and "event/relative" in text and "event/absolute" in text
    assert "cadences_per_8_bars" in text and "parallel fifths" in text
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html


def test_compare_rejects_unknown_schemes(small_corpus, tmp_path):
    proc = run_cli("compare", "--corpus", small_corpus, "--schemes", "event,abc", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "unknown scheme 'abc'" in proc.stderr
