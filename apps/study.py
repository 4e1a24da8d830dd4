"""A fair tokenization study: the same model, data split and compute budget for each scheme.

For every configuration (scheme × attention) the study measures the tokenization itself
(vocabulary, tokens per note and per second, round-trip fidelity), trains the same model size
for the same wall-clock budget (steps are set from a measured step time, so the learning-rate
schedule completes), evaluates NLL per token, bits per note and bits per second on the valid
split, and compares the statistics of sampled continuations with the test split's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cadenza.data.atomic import write_text_atomic


@dataclass
class StudySettings:
    corpus: str
    out: str
    schemes: tuple[str, ...] = ("event", "remi", "anticipatory")
    attentions: tuple[str, ...] = ("relative",)
    budget_minutes: float = 5.0
    config: str = "cpu"
    seq_len: int = 256
    batch_size: int = 8
    seed: int = 0
    samples: int = 4
    prompt_bars: int = 2
    sample_seconds: float = 8.0
    sample_max_tokens: int = 2048
    limit_pieces: int | None = None
    device: str = "auto"
    command: str = ""


@dataclass
class ConfigResult:
    scheme: str
    attention: str
    vocab_size: int = 0
    tokens_per_note: float = math.nan
    tokens_per_second: float = math.nan
    roundtrip_onset_f1: float = math.nan
    roundtrip_onset_offset_f1: float = math.nan
    steps: int = 0
    seconds_per_step: float = math.nan
    train_tokens_per_second: float = math.nan
    valid: dict = field(default_factory=dict)
    sample_stats: dict = field(default_factory=dict)
    log: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.scheme}/{self.attention}"


def _note_f1(reference, estimate, tolerance: float = 0.01) -> tuple[float, float]:
    """Onset F1 and onset+offset F1 of ``estimate`` against ``reference`` at ``tolerance`` seconds."""
    import mir_eval

    from cadenza.transcription.inference import note_arrays

    ref, est = note_arrays(reference), note_arrays(estimate)
    if len(ref[1]) == 0 or len(est[1]) == 0:
        return float(len(ref[1]) == len(est[1])), float(len(ref[1]) == len(est[1]))
    onset = mir_eval.transcription.precision_recall_f1_overlap(ref[0], ref[1], est[0], est[1],
                                                               onset_tolerance=tolerance, offset_ratio=None)[2]
    both = mir_eval.transcription.precision_recall_f1_overlap(ref[0], ref[1], est[0], est[1], onset_tolerance=tolerance,
                                                              offset_ratio=0.0, offset_min_tolerance=tolerance)[2]
    return float(onset), float(both)


def tokenization_figures(tokenizer, scores) -> dict:
    """Tokens per note and per second, and how exactly decode(encode(x)) gives x back (10 ms).

    Pieces a scheme cannot hold (over 100 s for anticipatory) are left out."""
    from cadenza.data.errors import TokenizerError

    tokens = notes = 0
    seconds = 0.0
    onset, both = [], []
    for score in scores:
        try:
            ids = tokenizer.encode(score)
        except TokenizerError:
            continue
        decoded = tokenizer.decode(ids)
        tokens += len(ids)
        notes += score.note_num()
        seconds += float(score.to("second").end())
        f_on, f_both = _note_f1(score, decoded)
        onset.append(f_on)
        both.append(f_both)
    return {"tokens_per_note": tokens / max(notes, 1), "tokens_per_second": tokens / max(seconds, 1e-9),
            "roundtrip_onset_f1": float(np.mean(onset)), "roundtrip_onset_offset_f1": float(np.mean(both))}


def _train(settings: StudySettings, scheme: str, attention: str, run_dir: Path, steps: int):
    from cadenza.symbolic.train import TrainSettings, train
    from cadenza.tokenizers import scheme_class

    stamps: list[float] = []
    train_settings = TrainSettings(
        out=str(run_dir), corpus=settings.corpus, scheme=scheme, config=settings.config, steps=steps,
        seq_len=settings.seq_len, batch_size=settings.batch_size, attention=attention, seed=settings.seed,
        device=settings.device, progress=False, limit_pieces=settings.limit_pieces, eval_every=0,
        warmup=max(1, min(50, steps // 10)), log_every=max(1, steps // 50),
        tokenizer_config=dict(scheme_class(scheme).study_config))
    summary = train(train_settings, on_batch=lambda *_: stamps.append(time.perf_counter()))
    per_step = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1) if len(stamps) > 1 else math.nan
    return summary, per_step


def _sample_statistics(model, tokenizer, prompts, settings: StudySettings) -> dict:
    from cadenza.data.metrics import summarize

    from cadenza.data.theory import summarize_continuations
    from cadenza.symbolic.sampling import continue_score

    continuations, pairs = [], []
    for i, prompt in enumerate(prompts):
        output = continue_score(model, tokenizer, prompt, seconds=settings.sample_seconds, seed=settings.seed + i,
                                top_p=0.95, max_tokens=settings.sample_max_tokens)[0]
        pairs.append((prompt, output))
        full = output.to("second")
        boundary = float(prompt.to("second").end())
        tail = full.clip(boundary, float(full.end()) + 1.0, clip_end=False).shift_time(-boundary)
        if tail.note_num():  # statistics of the new music alone, its clock starting at zero
            continuations.append(tail.to("tick"))
    stats = summarize(continuations) if continuations else {}
    return {**stats, **summarize_continuations(pairs, settings.sample_seconds)} if pairs else stats


def run_study(settings: StudySettings, log=print) -> dict:
    """Run every configuration and write report.md, report.html and results.json into ``out``."""
    from cadenza.data.corpora import open_corpus
    from cadenza.data.io import read_score
    from cadenza.data.metrics import summarize
    from cadenza.tokenizers import get_tokenizer, scheme_class

    from cadenza.symbolic.checkpoint import load_checkpoint
    from .demo import opening

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = open_corpus(settings.corpus)
    valid_scores = [read_score(p.path) for p in corpus.pieces(split="valid", limit=settings.limit_pieces)]
    test_scores = [read_score(p.path) for p in corpus.pieces(split="test", limit=settings.limit_pieces)]
    reference_stats = summarize(test_scores)
    prompts = [opening(s, settings.prompt_bars) for s in test_scores[: settings.samples]]
    from cadenza.data.theory import summarize_continuations  # the test split's own next seconds

    reference_stats.update(summarize_continuations(list(zip(prompts, test_scores)), settings.sample_seconds))
    results: list[ConfigResult] = []
    for scheme in settings.schemes:
        tokenizer = get_tokenizer(scheme, **scheme_class(scheme).study_config)
        figures = tokenization_figures(tokenizer, valid_scores)
        for attention in settings.attentions:
            result = ConfigResult(scheme, attention, vocab_size=tokenizer.vocab_size, **figures)
            log(f"[{result.label}] {figures['tokens_per_note']:.2f} tokens/note; calibrating the step time")
            probe_dir = out / "runs" / f"{scheme}-{attention}-probe"
            _, per_step = _train(settings, scheme, attention, probe_dir, steps=6)
            shutil.rmtree(probe_dir, ignore_errors=True)
            result.steps = max(10, int(settings.budget_minutes * 60 / per_step))
            log(f"[{result.label}] {per_step:.2f} s/step -> {result.steps} steps in {settings.budget_minutes:g} min")
            run_dir = out / "runs" / f"{scheme}-{attention}"
            summary, result.seconds_per_step = _train(settings, scheme, attention, run_dir, result.steps)
            result.train_tokens_per_second = summary["tokens_per_s"]
            result.valid = summary["metrics"]
            result.log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
            model, tok, _ = load_checkpoint(run_dir)
            result.sample_stats = _sample_statistics(model, tok, prompts, settings)
            log(f"[{result.label}] valid {result.valid.get('bits_per_note', math.nan):.3f} bits/note, "
                f"{result.valid.get('bits_per_second', math.nan):.2f} bits/s")
            results.append(result)
    report = {"settings": dataclasses.asdict(settings), "reference_stats": reference_stats,
              "results": [dataclasses.asdict(r) for r in results]}
    write_text_atomic(out / "results.json", json.dumps(report, indent=1, default=float))
    from .study_report import write_report

    write_report(out, settings, results, reference_stats)
    return report
