"""A tokenization study a researcher can rank schemes with.

For every configuration (scheme × attention) and every seed the study trains the same model
size on the same split under the same budget (steps, tokens, notes seen or minutes of training)
and the same musical context (each scheme's sequence length is set from its measured tokens per
second or per note of the training split, so every model sees the same music at once). During
training it evaluates a fixed small valid subset a few times (learning curves: bits per note
against notes seen, seconds and a FLOP estimate); at the end it scores every valid piece
(bits per note, per second), samples continuations of test-split openings and computes their
MusPy and music-theory statistics. Intervals: a t-interval over seeds of the per-seed values,
and a bootstrap over valid pieces within each seed.

Each (configuration, seed) is one task, run by :func:`run_task` in this process or in
``jobs`` worker processes; a task's ``result.json`` is reused when the same task is asked again,
so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cadenza.data.atomic import write_text_atomic
from cadenza.data.errors import CadenzaError

BUDGET_KINDS = ("steps", "tokens", "notes", "minutes")
CONTEXT_KINDS = ("seconds", "notes", "tokens")
BOOTSTRAP_RESAMPLES = 1000


def _parse_amount(text: str, kinds: tuple[str, ...], option: str) -> tuple[str, float]:
    kind, _, value = str(text).partition(":")
    kind = kind.strip()
    if kind not in kinds or not value:
        raise CadenzaError(f"{option} must be one of {' | '.join(k + ':N' for k in kinds)}, got {text!r}")
    try:
        amount = float(value)
    except ValueError:
        raise CadenzaError(f"{option} {text!r}: {value!r} is not a number") from None
    if not (math.isfinite(amount) and amount > 0):
        raise CadenzaError(f"{option} {text!r}: the amount must be a positive number")
    return kind, amount


@dataclass(frozen=True)
class Budget:
    """What every configuration may spend on training: ``steps``, ``tokens`` (targets), ``notes``
    seen (tokens at the training split's notes per token) or ``minutes`` of training (evaluations
    during training not counted)."""

    kind: str
    amount: float

    @classmethod
    def parse(cls, text: str) -> "Budget":
        kind, amount = _parse_amount(text, BUDGET_KINDS, "--budget")
        if kind != "minutes" and amount != int(amount):
            raise CadenzaError(f"--budget {text!r}: {kind} must be a whole number")
        return cls(kind, amount)

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"

    def progress(self, spent: dict) -> float:
        """The spent fraction of the budget (1 or more: stop)."""
        return spent["seconds" if self.kind == "minutes" else self.kind] / (self.amount * (60 if self.kind == "minutes" else 1))

    def planned_steps(self, tokens_per_step: float, notes_per_token: float) -> int | None:
        """Steps the budget should take (for the learning-rate schedule); None under a time budget."""
        if self.kind == "steps":
            return int(self.amount)
        if self.kind == "tokens":
            return max(1, math.ceil(self.amount / tokens_per_step))
        if self.kind == "notes":
            return max(1, math.ceil(self.amount / (tokens_per_step * notes_per_token)))
        return None


@dataclass(frozen=True)
class Context:
    """The music every model sees at once: ``seconds`` or ``notes`` of it (a sequence length per
    scheme from its measured rates), or plain ``tokens`` (the same length for every scheme)."""

    kind: str
    amount: float

    @classmethod
    def parse(cls, text: str) -> "Context":
        return cls(*_parse_amount(text, CONTEXT_KINDS, "--context"))

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"

    def seq_len(self, tokens_per_second: float, tokens_per_note: float) -> int:
        rate = {"seconds": tokens_per_second, "notes": tokens_per_note, "tokens": 1.0}[self.kind]
        return max(8, int(round(self.amount * rate)))


@dataclass
class StudySettings:
    corpus: str
    out: str
    schemes: tuple[str, ...] = ("event", "remi", "anticipatory")
    attentions: tuple[str, ...] = ("relative",)
    # (scheme, attention) pairs to run instead of every scheme under every attention
    configurations: tuple[tuple[str, str], ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: str = "minutes:5"
    context: str = "seconds:12"
    config: str = "cpu"
    batch_size: int = 8
    lr: float | None = None
    samples: int = 4
    prompt_bars: int = 2
    sample_seconds: float = 8.0
    sample_max_tokens: int = 2048
    curve_points: int = 4        # evaluations during training, evenly spaced over the budget (plus step 0)
    curve_pieces: int = 8        # the fixed valid subset those evaluations score
    limit_pieces: int | None = None
    jobs: int = 1
    device: str = "auto"
    command: str = ""

    def __post_init__(self) -> None:
        Budget.parse(self.budget), Context.parse(self.context)
        if self.configurations is not None:
            self.configurations = tuple(tuple(pair) for pair in self.configurations)
            self.schemes = tuple(dict.fromkeys(scheme for scheme, _ in self.configurations))
            self.attentions = tuple(dict.fromkeys(attention for _, attention in self.configurations))
        if not self.seeds:
            raise CadenzaError("give at least one seed")
        for name in ("batch_size", "samples", "curve_points", "curve_pieces", "jobs"):
            if int(getattr(self, name)) < (0 if name == "samples" else 1):
                raise CadenzaError(f"--{name.replace('_', '-')} must be at least {0 if name == 'samples' else 1}")


@dataclass
class Task:
    """One training run of the study: a configuration under one seed."""

    settings: StudySettings
    scheme: str
    attention: str
    seed: int
    seq_len: int
    notes_per_token: float
    run_dir: str
    prompt_paths: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.scheme}/{self.attention}"

    def key(self) -> dict:
        """What the task's result depends on (a saved result is reused only for the same key)."""
        s = self.settings
        return {"corpus": s.corpus, "scheme": self.scheme, "attention": self.attention, "seed": self.seed,
                "seq_len": self.seq_len, "budget": s.budget, "config": s.config, "batch_size": s.batch_size,
                "lr": s.lr, "samples": s.samples, "prompt_bars": s.prompt_bars, "sample_seconds": s.sample_seconds,
                "curve_points": s.curve_points, "curve_pieces": s.curve_pieces, "limit_pieces": s.limit_pieces,
                "prompts": [Path(p).name for p in self.prompt_paths]}


@dataclass
class ConfigResult:
    """One configuration: its tokenization figures and sequence length, and each seed's result."""

    scheme: str
    attention: str
    vocab_size: int = 0
    tokens_per_note: float = math.nan
    tokens_per_second: float = math.nan
    roundtrip_onset_f1: float = math.nan
    roundtrip_onset_offset_f1: float = math.nan
    train_tokens_per_note: float = math.nan
    train_tokens_per_second: float = math.nan
    seq_len: int = 0
    runs: list = field(default_factory=list)   # run_task results, one per seed
    summary: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.scheme}/{self.attention}"


# -- intervals ---------------------------------------------------------------------------------
def t_interval(values, confidence: float = 0.95) -> dict:
    """Mean and the half-width of Student's t-interval of the mean (NaNs left out; half-width NaN
    for fewer than two values)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"mean": math.nan, "half_width": math.nan, "n": 0}
    half = (float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
            if len(x) > 1 else math.nan)
    return {"mean": float(x.mean()), "half_width": half, "n": int(len(x))}


def bootstrap_ratio(numerators, denominators, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                    confidence: float = 0.95) -> dict:
    """sum(numerators) / sum(denominators) and the half-width of its percentile bootstrap interval,
    resampling the pieces (rows) with replacement."""
    num, den = np.asarray(numerators, float), np.asarray(denominators, float)
    value = float(num.sum() / den.sum()) if den.sum() else math.nan
    if len(num) < 2:
        return {"value": value, "half_width": math.nan, "low": math.nan, "high": math.nan}
    rows = np.random.default_rng(seed).integers(0, len(num), size=(resamples, len(num)))
    ratios = num[rows].sum(1) / np.maximum(den[rows].sum(1), 1e-12)
    low, high = np.quantile(ratios, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return {"value": value, "half_width": float(high - low) / 2, "low": float(low), "high": float(high)}


# -- tokenization figures ----------------------------------------------------------------------
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


def source_rates(source) -> dict:
    """Tokens per note and per second of a PieceSource (its unaugmented ids)."""
    tokens = float(np.sum(source.lengths))
    return {"tokens_per_note": tokens / max(float(np.sum(source.notes)), 1.0),
            "tokens_per_second": tokens / max(float(np.sum(source.seconds)), 1e-9)}


# -- one task ----------------------------------------------------------------------------------
def _pieces(source, indices):
    from cadenza.data.datasets import ArrayPieces

    return ArrayPieces(source.tokenizer, [source.ids(i) for i in indices], [source.notes[i] for i in indices],
                       [source.seconds[i] for i in indices], [source.piece_ids[i] for i in indices])


def expected_tokens_per_example(source, seq_len: int) -> float:
    """Targets per training example: packed sequences are full; a random crop of a framed piece of
    ``L + 2`` ids (drawn with weight ``L + 2``) holds ``min(L + 1, seq_len)``."""
    if getattr(source.tokenizer, "packs_sequences", False):
        return float(3 * (seq_len // 3))
    lengths = np.asarray(source.lengths, float)
    weights = lengths + 2.0
    return float(np.sum(weights * np.minimum(lengths + 1.0, seq_len)) / np.sum(weights))


def _score_pieces(run, source, context: int) -> list[dict]:
    """Nats, notes and seconds of every piece of ``source``, one evaluation each."""
    from cadenza.symbolic.evaluate import evaluate_pieces

    rows = []
    for i in range(len(source)):
        result = evaluate_pieces(run.model, _pieces(source, [i]), context=context,
                                 batch_size=2 * run.settings.batch_size, device=run.device)
        rows.append({"piece": source.piece_ids[i], "bits": result.bits, "notes": result.notes,
                     "seconds": result.seconds, "tokens": result.tokens})
    return rows


def _sample_statistics(model, tokenizer, prompts, task: Task) -> dict:
    from cadenza.data.metrics import summarize
    from cadenza.data.theory import summarize_continuations
    from cadenza.symbolic.sampling import continue_score

    settings = task.settings
    continuations, pairs = [], []
    model.eval()
    for i, prompt in enumerate(prompts):
        output = continue_score(model, tokenizer, prompt, seconds=settings.sample_seconds, seed=1000 * task.seed + i,
                                top_p=0.95, max_tokens=settings.sample_max_tokens, context=task.seq_len,
                                progress=False, report=lambda _: None)[0]
        pairs.append((prompt, output))
        full = output.to("second")
        boundary = float(prompt.to("second").end())
        tail = full.clip(boundary, float(full.end()) + 1.0, clip_end=False).shift_time(-boundary)
        if tail.note_num():  # statistics of the new music alone, its clock starting at zero
            continuations.append(tail.to("tick"))
    stats = summarize(continuations) if continuations else {}
    return {**stats, **summarize_continuations(pairs, settings.sample_seconds)} if pairs else stats


def run_task(task: Task, log=print) -> dict:
    """Train one configuration under one seed within the budget, with learning-curve evaluations,
    then score the whole valid split piece by piece and sample continuations; the result is also
    written to ``run_dir/result.json``."""
    from cadenza.data.io import read_score
    from cadenza.symbolic.train import TrainSettings, set_up, train_step, write_run_checkpoint
    from cadenza.symbolic.evaluate import evaluate_pieces
    from cadenza.tokenizers import scheme_class

    from .demo import opening

    settings, budget = task.settings, Budget.parse(task.settings.budget)
    run_dir = Path(task.run_dir)
    saved = run_dir / "result.json"
    if saved.exists():
        try:
            result = json.loads(saved.read_text())
            if result.get("key") == task.key():
                log(f"[{task.label} seed {task.seed}] reusing {saved}")
                return result
        except (OSError, ValueError):
            pass
    shutil.rmtree(run_dir, ignore_errors=True)
    wall_started = time.monotonic()
    train_settings = TrainSettings(
        out=str(run_dir), corpus=settings.corpus, scheme=task.scheme, size=settings.config, steps=10**9,
        seq_len=task.seq_len, batch_size=settings.batch_size, lr=settings.lr, attention=task.attention,
        seed=task.seed, device=settings.device, progress=False, limit_pieces=settings.limit_pieces, eval_every=0,
        warmup=1, log_every=1, checkpoint_every=10**9, checkpoint_minutes=0, handle_signals=False,
        max_minutes=budget.amount if budget.kind == "minutes" else None,
        tokenizer_config=dict(scheme_class(task.scheme).study_config))
    run = set_up(train_settings)
    tokens_per_step = expected_tokens_per_example(run.sources["train"], task.seq_len) * settings.batch_size
    planned = budget.planned_steps(tokens_per_step, task.notes_per_token)
    if planned is not None:
        run.settings.steps = planned
    # warmup: a tenth of the planned steps, 50 at most (10 under a time budget)
    run.settings.warmup = max(1, min(50, planned // 10)) if planned else 10
    curve_source = _pieces(run.sources["valid"], range(min(settings.curve_pieces, len(run.sources["valid"]))))
    parameters = sum(p.numel() for p in run.model.parameters())
    spent = {"steps": 0, "tokens": 0, "notes": 0.0, "seconds": 0.0}
    curve, losses, loss_window = [], [], []

    def evaluate_curve() -> None:
        started = time.monotonic()
        result = evaluate_pieces(run.model, curve_source, context=task.seq_len,
                                 batch_size=2 * settings.batch_size, device=run.device)
        curve.append({**spent, "flops": 6.0 * parameters * spent["tokens"], "bits_per_note": result.bits_per_note,
                      "bits_per_second": result.bits_per_second, "nll_per_token": result.nll_per_token})
        run.clock.started += time.monotonic() - started  # evaluations do not count against a time budget

    evaluate_curve()
    run.model.train()
    log_every = max(1, (planned or 500) // 50)
    while budget.progress(spent) < 1.0:
        step = train_step(run)
        spent["steps"] = run.step
        spent["tokens"] += step.tokens
        spent["notes"] = spent["tokens"] * task.notes_per_token
        spent["seconds"] = run.clock.elapsed()
        loss_window.append(step.loss)
        if run.step % log_every == 0:
            losses.append({"step": run.step, "loss": float(np.mean(loss_window)), "lr": step.lr})
            loss_window = []
        done = budget.progress(spent)
        if done >= 1.0 or done * settings.curve_points >= len(curve):
            evaluate_curve()
            run.model.train()
    pieces = _score_pieces(run, run.sources["valid"], task.seq_len)
    bits, notes, seconds, tokens = ([r[k] for r in pieces] for k in ("bits", "notes", "seconds", "tokens"))
    run.metrics = {"nll_per_token": sum(bits) * math.log(2) / max(sum(tokens), 1),
                   "bits_per_note": sum(bits) / max(sum(notes), 1), "bits_per_second": sum(bits) / max(sum(seconds), 1e-9)}
    write_run_checkpoint(run)
    prompts = [opening(read_score(p), settings.prompt_bars) for p in task.prompt_paths]
    result = {
        "key": task.key(), "scheme": task.scheme, "attention": task.attention, "seed": task.seed,
        "seq_len": task.seq_len, "planned_steps": planned, "parameters": parameters,
        "spent": {**spent, "flops": 6.0 * parameters * spent["tokens"]},
        "valid": {**run.metrics, "pieces": len(pieces),
                  "bits_per_note_bootstrap": bootstrap_ratio(bits, notes, seed=task.seed),
                  "bits_per_second_bootstrap": bootstrap_ratio(bits, seconds, seed=task.seed)},
        "per_piece": pieces, "curve": curve, "loss": losses,
        "sample_stats": _sample_statistics(run.model, run.tokenizer, prompts, task) if prompts else {},
    }
    result["wall_seconds"] = time.monotonic() - wall_started  # set-up, training, evaluations and samples
    write_text_atomic(saved, json.dumps(result, indent=1, default=float))
    log(f"[{task.label} seed {task.seed}] {spent['steps']} steps, {spent['tokens']} tokens, "
        f"{spent['notes']:.0f} notes, {spent['seconds']:.0f} s of training ({result['wall_seconds']:.0f} s in all): "
        f"valid {run.metrics['bits_per_note']:.3f} bits/note")
    return result


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_tasks(tasks: list[Task], jobs: int, log) -> list[dict]:
    if jobs <= 1 or len(tasks) <= 1:
        return [run_task(task, log) for task in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // jobs))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        return list(pool.map(run_task, tasks))


# -- the study ---------------------------------------------------------------------------------
def summarize_config(result: ConfigResult) -> dict:
    """Per-configuration means over seeds with t half-widths; the within-seed bootstrap half-widths."""
    runs = result.runs
    out = {"seeds": [r["seed"] for r in runs]}
    for key in ("bits_per_note", "bits_per_second", "nll_per_token"):
        out[key] = t_interval([r["valid"][key] for r in runs])
    for key in ("bits_per_note", "bits_per_second"):
        out[key]["bootstrap_half_widths"] = [r["valid"][f"{key}_bootstrap"]["half_width"] for r in runs]
    out["spent"] = {k: t_interval([r["spent"][k] for r in runs]) for k in ("steps", "tokens", "notes", "seconds", "flops")}
    out["wall_seconds"] = t_interval([r.get("wall_seconds", math.nan) for r in runs])
    names = sorted({name for r in runs for name in r["sample_stats"]})
    out["sample_stats"] = {name: t_interval([r["sample_stats"].get(name, {}).get("mean", math.nan) for r in runs])
                           for name in names}
    points = min(len(r["curve"]) for r in runs) if runs else 0
    out["curve"] = [{k: t_interval([r["curve"][i][k] for r in runs])["mean"]
                     for k in ("steps", "tokens", "notes", "seconds", "flops")}
                    | {"bits_per_note": t_interval([r["curve"][i]["bits_per_note"] for r in runs])}
                    for i in range(points)]
    return out


def compare_attention(results: list[ConfigResult]) -> list[dict]:
    """For each scheme run with both attentions: relative minus absolute valid bits per note, paired
    by seed (t-interval over seeds), and how many seeds relative wins."""
    by_label = {(r.scheme, r.attention): r for r in results}
    rows = []
    for scheme in dict.fromkeys(r.scheme for r in results):
        rel, ab = by_label.get((scheme, "relative")), by_label.get((scheme, "absolute"))
        if rel is None or ab is None:
            continue
        absolute = {r["seed"]: r["valid"]["bits_per_note"] for r in ab.runs}
        pairs = [(r["valid"]["bits_per_note"], absolute[r["seed"]]) for r in rel.runs if r["seed"] in absolute]
        rows.append({"scheme": scheme, "difference": t_interval([a - b for a, b in pairs]),
                     "relative_wins": sum(a < b for a, b in pairs), "seeds": len(pairs)})
    return rows


def run_study(settings: StudySettings, log=print) -> dict:
    """Run every configuration under every seed; write report.md, report.html, study.png and
    results.json into ``out``."""
    from cadenza.data.corpora import open_corpus
    from cadenza.data.datasets import open_pieces
    from cadenza.data.io import read_score
    from cadenza.data.metrics import summarize
    from cadenza.data.theory import summarize_continuations
    from cadenza.tokenizers import get_tokenizer, scheme_class

    from .demo import opening

    context = Context.parse(settings.context)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = open_corpus(settings.corpus)
    valid_scores = [read_score(p.path) for p in corpus.pieces(split="valid", limit=settings.limit_pieces)]
    test_pieces = corpus.pieces(split="test", limit=settings.limit_pieces)
    test_scores = [read_score(p.path) for p in test_pieces]
    if not valid_scores or not test_scores:
        raise CadenzaError(f"{settings.corpus}: the study needs pieces in the valid and test splits")
    prompt_paths = [str(p.path) for p in test_pieces[: settings.samples]]
    prompts = [opening(s, settings.prompt_bars) for s in test_scores[: settings.samples]]
    reference_stats = summarize(test_scores)  # the test split's own statistics and next seconds
    reference_stats.update(summarize_continuations(list(zip(prompts, test_scores)), settings.sample_seconds))
    results: list[ConfigResult] = []
    tasks: list[Task] = []
    for scheme in settings.schemes:
        tokenizer = get_tokenizer(scheme, **scheme_class(scheme).study_config)
        figures = tokenization_figures(tokenizer, valid_scores)
        rates = source_rates(open_pieces(split="train", corpus=settings.corpus, tokenizer=tokenizer,
                                         limit=settings.limit_pieces))
        seq_len = context.seq_len(rates["tokens_per_second"], rates["tokens_per_note"])
        log(f"[{scheme}] {rates['tokens_per_note']:.2f} tokens/note, {rates['tokens_per_second']:.1f} tokens/s "
            f"on the train split: context {context} -> {seq_len} tokens")
        for attention in settings.attentions:
            if settings.configurations is not None and (scheme, attention) not in settings.configurations:
                continue
            result = ConfigResult(scheme, attention, vocab_size=tokenizer.vocab_size, **figures,
                                  train_tokens_per_note=rates["tokens_per_note"],
                                  train_tokens_per_second=rates["tokens_per_second"], seq_len=seq_len)
            results.append(result)
            tasks += [Task(settings, scheme, attention, seed, seq_len, 1.0 / rates["tokens_per_note"],
                           str(out / "runs" / f"{scheme}-{attention}-seed{seed}"), prompt_paths)
                      for seed in settings.seeds]
    # seed by seed, so a change of machine load during the study spreads over every configuration
    tasks.sort(key=lambda task: settings.seeds.index(task.seed))
    done = _run_tasks(tasks, settings.jobs, log)
    for result in results:
        result.runs = [r for r in done if (r["scheme"], r["attention"]) == (result.scheme, result.attention)]
        result.summary = summarize_config(result)
    report = {"settings": dataclasses.asdict(settings), "reference_stats": reference_stats,
              "attention": compare_attention(results), "results": [dataclasses.asdict(r) for r in results]}
    write_text_atomic(out / "results.json", json.dumps(report, indent=1, default=float))
    from .study_report import write_report

    write_report(out, settings, results, reference_stats, report["attention"])
    return report
