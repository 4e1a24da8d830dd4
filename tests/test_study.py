"""The tokenization study end to end on a tiny model and a handful of chorales."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from conftest import run_cli

# piece ids whose hash puts them in each split (see cadenza.data.split_of)
LAYOUT = {"chorale-1": "train", "chorale-2": "train", "chorale-4": "train", "chorale-5": "train",
          "chorale-3": "valid", "chorale-9": "valid", "chorale-0": "test"}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, bach_pieces):
    from cadenza.data import split_of

    corpus = tmp_path_factory.mktemp("study") / "chorales"
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


def test_intervals_match_their_definitions():
    from cadenza.apps.study import bootstrap_ratio, t_interval

    # mean 2, sample sd 1, n 3: t(0.975, 2) = 4.3027 -> half-width 4.3027 / sqrt(3)
    interval = t_interval([1.0, 2.0, 3.0, float("nan")])
    assert interval["mean"] == 2.0 and interval["n"] == 3
    assert interval["half_width"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(t_interval([5.0])["half_width"]) and t_interval([5.0])["mean"] == 5.0
    # identical per-piece ratios: every resample gives the same ratio
    same = bootstrap_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert same["value"] == 2.0 and same["half_width"] == pytest.approx(0.0, abs=1e-12)
    spread = bootstrap_ratio([1.0, 9.0, 2.0, 8.0], [1.0, 1.0, 1.0, 1.0], seed=3)
    assert spread["value"] == 5.0 and 1.0 < spread["half_width"] < 4.0 and spread["low"] < 5.0 < spread["high"]


def test_budget_and_context_parse_and_convert():
    from cadenza.apps.study import Budget, Context
    from cadenza.data.errors import CadenzaError

    assert Budget.parse("notes:1000").planned_steps(tokens_per_step=100, notes_per_token=0.5) == 20
    assert Budget.parse("tokens:250").planned_steps(100, 0.5) == 3
    assert Budget.parse("steps:7").planned_steps(100, 0.5) == 7
    assert Budget.parse("minutes:0.5").planned_steps(100, 0.5) is None
    assert Budget.parse("minutes:0.5").progress({"seconds": 15.0}) == 0.5
    # equal music: 12 s at 20.4 and 38.7 tokens/s; 30 notes at 2.36 tokens/note; tokens stay tokens
    assert [Context.parse("seconds:12").seq_len(r, 1.0) for r in (20.4, 38.7)] == [245, 464]
    assert Context.parse("notes:30").seq_len(20.4, 2.36) == 71
    assert Context.parse("tokens:200").seq_len(20.4, 2.36) == 200
    for bad in ("steps", "hours:3", "steps:2.5", "notes:-1", "tokens:x"):
        with pytest.raises(CadenzaError):
            Budget.parse(bad)
    with pytest.raises(CadenzaError):
        Context.parse("bars:4")


def test_expected_tokens_per_example_counts_the_targets_of_random_crops(bach_scores):
    from cadenza.apps.study import expected_tokens_per_example
    from cadenza.data.datasets import ArrayPieces, RandomCrops
    from cadenza.data.datasets import IGNORE_INDEX
    from cadenza.tokenizers import get_tokenizer

    tok = get_tokenizer("event")
    arrays = [tok.encode(s)[:n] for s, n in zip(bach_scores[:3], (30, 100, 400))]
    source = ArrayPieces(tok, arrays, [1, 1, 1], [1.0, 1.0, 1.0])
    expected = expected_tokens_per_example(source, 64)
    # weights 32, 102, 402; targets 31, 64, 64
    assert expected == pytest.approx((32 * 31 + 102 * 64 + 402 * 64) / 536)
    crops = RandomCrops(source, 64, seed=0, augment=False)
    measured = np.mean([(crops.example(n)[1] != IGNORE_INDEX).sum() for n in range(2000)])
    assert measured == pytest.approx(expected, rel=0.02)


def test_a_notes_budget_stops_at_the_first_step_past_it(tmp_path, small_corpus):
    from cadenza.apps.study import StudySettings, Task, run_task

    settings = StudySettings(corpus=str(small_corpus), out=str(tmp_path), schemes=("event",), seeds=(0,),
                             budget="notes:300", context="tokens:48", config="debug", batch_size=2, samples=0,
                             curve_points=2, curve_pieces=1, device="cpu")
    task = Task(settings, "event", "relative", 0, 48, notes_per_token=0.4, run_dir=str(tmp_path / "run"))
    result = run_task(task, log=lambda _: None)
    spent = result["spent"]
    per_step_max = 2 * 48 * 0.4
    assert spent["notes"] == pytest.approx(spent["tokens"] * 0.4)
    assert 300 <= spent["notes"] < 300 + per_step_max  # stopped at the step that crossed the budget
    assert spent["steps"] == result["planned_steps"] or spent["steps"] >= 300 / per_step_max
    assert [p["steps"] for p in result["curve"]][0] == 0 and result["curve"][-1]["steps"] == spent["steps"]
    assert result["curve"][-1]["notes"] == spent["notes"] and len(result["curve"]) == 3  # start, half, end
    # the per-piece scores add up to the valid figures
    pieces = result["per_piece"]
    assert len(pieces) == 2 and result["valid"]["pieces"] == 2
    assert result["valid"]["bits_per_note"] == pytest.approx(sum(p["bits"] for p in pieces) / sum(p["notes"] for p in pieces))
    # the same task again is read back, not retrained
    again = run_task(task, log=lambda _: None)
    assert again["spent"] == spent


def test_a_time_budget_counts_training_seconds_only(tmp_path, small_corpus):
    from cadenza.apps.study import StudySettings, Task, run_task

    settings = StudySettings(corpus=str(small_corpus), out=str(tmp_path), schemes=("event",), seeds=(1,),
                             budget="minutes:0.03", context="tokens:48", config="debug", batch_size=2, samples=0,
                             curve_points=3, curve_pieces=1, device="cpu")
    result = run_task(Task(settings, "event", "absolute", 1, 48, notes_per_token=0.4, run_dir=str(tmp_path / "run")),
                      log=lambda _: None)
    spent = result["spent"]
    assert result["planned_steps"] is None and 1.8 <= spent["seconds"] < 4.0 and spent["steps"] > 3
    assert len(result["curve"]) >= 3 and result["curve"][-1]["seconds"] == spent["seconds"]
    assert result["wall_seconds"] > spent["seconds"]


def test_compare_reports_seeds_intervals_curves_and_equal_context(tmp_path, small_corpus):
    out = tmp_path / "study"
    proc = run_cli("compare", "--corpus", small_corpus, "--configs", "event/relative,event/absolute,remi/relative",
                   "--seeds", "0,1", "--config", "debug", "--budget", "steps:4", "--context", "seconds:4",
                   "--batch-size", "2", "--samples", "1", "--sample-seconds", "2", "--curve-points", "2",
                   "--curve-pieces", "1", "--jobs", "2", "--out", out, "--device", "cpu")
    assert "report" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    labels = [(r["scheme"], r["attention"]) for r in results["results"]]
    assert labels == [("event", "relative"), ("event", "absolute"), ("remi", "relative")]
    for r in results["results"]:
        # equal musical context: 4 s at the train split's tokens per second
        assert r["seq_len"] == round(4 * r["train_tokens_per_second"])
        assert [run["seed"] for run in r["runs"]] == [0, 1]
        for run in r["runs"]:
            assert run["seq_len"] == r["seq_len"] and run["spent"]["steps"] == 4
            assert len(run["curve"]) >= 2 and run["curve"][-1]["steps"] == 4
            assert run["valid"]["bits_per_note"] > 0 and math.isfinite(run["valid"]["bits_per_second"])
            assert math.isfinite(run["valid"]["bits_per_note_bootstrap"]["half_width"])
        summary = r["summary"]
        assert summary["bits_per_note"]["n"] == 2 and math.isfinite(summary["bits_per_note"]["half_width"])
        assert summary["sample_stats"]["broken"]["n"] == 2 and "key_kept" in summary["sample_stats"]
    event, remi = results["results"][0], results["results"][2]
    assert remi["seq_len"] > event["seq_len"]  # REMI spends more tokens per second of music
    # the two seeds differ (init, data order), so the interval is a real one
    assert event["runs"][0]["valid"]["bits_per_note"] != event["runs"][1]["valid"]["bits_per_note"]
    assert [row["scheme"] for row in results["attention"]] == ["event"]  # remi ran with relative only
    assert results["attention"][0]["seeds"] == 2
    assert results["reference_stats"]["broken"] == {"mean": 0.0, "std": 0.0, "n": 1}  # Bach's own next 2 s
    text = (out / "report.md").read_text()
    assert "budget **steps:4**" in text and "context **seconds:4**" in text and " ± " in text
    assert "relative − absolute" in text and "Learning curves" in text and "bootstrap" in text
    assert "cadences_per_8_bars" in text and "parallel fifths" in text
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and (out / "study.png").stat().st_size > 1000


def test_compare_rejects_unknown_schemes_and_bad_budgets(small_corpus, tmp_path):
    proc = run_cli("compare", "--corpus", small_corpus, "--schemes", "event,abc", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "unknown scheme 'abc'" in proc.stderr
    proc = run_cli("compare", "--corpus", small_corpus, "--budget", "hours:2", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "--budget must be one of" in proc.stderr
    proc = run_cli("compare", "--corpus", small_corpus, "--seeds", "0,0", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "--seeds" in proc.stderr
    proc = run_cli("compare", "--corpus", small_corpus, "--configs", "event-relative", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "scheme/attention pairs" in proc.stderr
