"""The tokenization study's report: markdown tables with intervals, an HTML page and a PNG of the
learning curves and final figures."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from cadenza.data.atomic import write_bytes_atomic, write_text_atomic

STATS = ("pitch_class_entropy", "scale_consistency", "polyphony", "groove_consistency", "empty_beat_rate",
         "broken", "key_kept", "parallels", "cadences_per_8_bars")
COLOURS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb"]


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def pm(interval: dict, digits: int = 3) -> str:
    """``mean ± half-width`` (just the mean for one seed, n/a for none)."""
    mean, half = interval.get("mean", math.nan), interval.get("half_width", math.nan)
    if not _finite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if _finite(half) else f"{mean:.{digits}f}"


def _median(values) -> float:
    values = sorted(v for v in values if _finite(v))
    return values[len(values) // 2] if values else math.nan


def _stat(stats: dict, name: str) -> str:
    value = stats.get(name, {}).get("mean", math.nan)
    return f"{value:.3f}" if _finite(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def conclusions(results, attention_rows) -> list[str]:
    """Sentences the intervals support: the ranking by valid bits/note and which gaps are resolved."""
    ranked = sorted((r for r in results if _finite(r.summary["bits_per_note"]["mean"])),
                    key=lambda r: r.summary["bits_per_note"]["mean"])
    lines = []
    if ranked:
        lines.append("- Ranking by valid bits/note (lower is better): " + " < ".join(
            f"{r.label} ({pm(r.summary['bits_per_note'], 2)})" for r in ranked) + ".")
    for a, b in zip(ranked, ranked[1:]):
        ia, ib = a.summary["bits_per_note"], b.summary["bits_per_note"]
        if _finite(ia["half_width"]) and _finite(ib["half_width"]):
            apart = ia["mean"] + ia["half_width"] < ib["mean"] - ib["half_width"]
            lines.append(f"- {a.label} against {b.label}: the seed intervals "
                         f"{'do not overlap (resolved at this budget)' if apart else 'overlap (not resolved by these seeds)'}.")
    for row in attention_rows:
        d = row["difference"]
        if not _finite(d["mean"]):
            continue
        verdict = ("relative is better" if _finite(d["half_width"]) and d["mean"] + d["half_width"] < 0 else
                   "absolute is better" if _finite(d["half_width"]) and d["mean"] - d["half_width"] > 0 else
                   "the interval includes zero: no difference resolved")
        lines.append(f"- {row['scheme']}: relative minus absolute attention = {pm(d)} bits/note over "
                     f"{row['seeds']} paired seeds (relative lower in {row['relative_wins']} of {row['seeds']}): {verdict}.")
    return lines


def markdown(settings, results, reference_stats, attention_rows=()) -> str:
    seeds = ",".join(str(s) for s in settings.seeds)
    lines = [f"# Tokenization study: {settings.corpus}", ""]
    if settings.command:
        lines += [f"Command: `{settings.command}`", ""]
    lines += [f"Same model (`{settings.config}` preset), same split, budget **{settings.budget}** per run "
              f"(steps, target tokens, notes seen or minutes of training; evaluations not counted), equal "
              f"musical context **{settings.context}** (each scheme's sequence length from its tokens per "
              f"second or per note measured on the train split), batch {settings.batch_size}, seeds {seeds} "
              "(the seed sets initialisation, data order, dropout and sampling). Bits per note and per second "
              "are totals over the valid split divided by its notes and its seconds, so they compare across "
              "tokenizations; NLL per token does not.", "",
              "Intervals: `mean ± h` is the mean over seeds of the per-seed values with the half-width of a "
              "95 % Student t-interval over seeds; *bootstrap ±* is the median over seeds of the half-width "
              f"of a 95 % percentile bootstrap over valid pieces within a seed ({1000} resamples of the "
              "pieces, the ratio of summed bits to summed notes or seconds). The first says how much another "
              "seed would move the figure, the second how much another draw of valid pieces would.", "",
              "## Tokenization and context", ""]
    lines += _table(["configuration", "vocabulary", "tokens/note", "tokens/s of music", "round trip onset F1",
                     "round trip on+off F1", "train tokens/note", "train tokens/s", "sequence length"],
                    [[r.label, f"{r.vocab_size}", f"{r.tokens_per_note:.2f}", f"{r.tokens_per_second:.1f}",
                      f"{r.roundtrip_onset_f1:.3f}", f"{r.roundtrip_onset_offset_f1:.3f}",
                      f"{r.train_tokens_per_note:.2f}", f"{r.train_tokens_per_second:.1f}", f"{r.seq_len}"]
                     for r in results])
    lines += ["", "## Budget spent (mean over seeds)", ""]
    lines += _table(["configuration", "seeds", "steps", "target tokens", "notes seen", "training seconds",
                     "FLOP estimate (6 · parameters · tokens)", "wall seconds per run (all of it)"],
                    [[r.label, str(len(r.runs))] + [f"{r.summary['spent'][k]['mean']:.{d}f}" for k, d in
                                                    (("steps", 0), ("tokens", 0), ("notes", 0), ("seconds", 1))]
                     + [f"{r.summary['spent']['flops']['mean']:.3g}", f"{r.summary['wall_seconds']['mean']:.0f}"]
                     for r in results])
    lines += ["", "## Valid split", ""]
    lines += _table(["configuration", "NLL/token", "bits/note", "bits/note bootstrap ±", "bits/s",
                     "bits/s bootstrap ±"],
                    [[r.label, pm(r.summary["nll_per_token"]), pm(r.summary["bits_per_note"]),
                      f"{_median(r.summary['bits_per_note']['bootstrap_half_widths']):.3f}",
                      pm(r.summary["bits_per_second"], 2),
                      f"{_median(r.summary['bits_per_second']['bootstrap_half_widths']):.2f}"] for r in results])
    if attention_rows:
        lines += ["", "## Relative against absolute attention", ""]
        lines += _table(["scheme", "relative − absolute bits/note (paired by seed)", "seeds relative lower"],
                        [[row["scheme"], pm(row["difference"]), f"{row['relative_wins']} of {row['seeds']}"]
                         for row in attention_rows])
    lines += ["", f"## Learning curves (bits/note on the first {settings.curve_pieces} valid pieces, mean over seeds)", ""]
    for r in results:
        points = r.summary["curve"]
        lines.append(f"- {r.label}: " + "; ".join(
            f"{p['notes']:.0f} notes / {p['seconds']:.0f} s → {p['bits_per_note']['mean']:.2f}" for p in points))
    lines += ["", f"## Statistics of sampled continuations ({settings.samples} prompts of {settings.prompt_bars} "
              f"bars from the test split, {settings.sample_seconds:g} s each, top-p 0.95, per seed; mean ± "
              "t half-width over seeds) against the test split", ""]
    lines += _table([""] + list(STATS),
                    [["test split"] + [_stat(reference_stats, s) for s in STATS]]
                    + [[r.label] + [pm(r.summary["sample_stats"].get(s, {})) for s in STATS] for r in results])
    lines += ["", "Statistics as MusPy defines them (cadenza.data.metrics): pitch-class entropy in bits, "
              "scale consistency, mean polyphony over sounding steps, groove consistency between neighbouring "
              "bars, and the rate of beats with no sounding note; then music-theory statistics "
              "(cadenza.data.theory) of the new music against its prompt: the share of samples with a broken "
              "passage and of samples in the prompt's key, parallel fifths/octaves among four-voice chord "
              "changes, and held chords per 8 bars. The test split's row scores its own continuations of the "
              "same prompts.", "", "## What the intervals support", ""]
    lines += conclusions(results, attention_rows)
    lines.append("")
    return "\n".join(lines)


def _plots(results) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), dpi=110)
    axes = fig.subplots(1, 3)
    for colour, r in zip(COLOURS * 4, results):
        for run in r.runs:
            for ax, key in ((axes[0], "notes"), (axes[1], "seconds")):
                ax.plot([p[key] for p in run["curve"]], [p["bits_per_note"] for p in run["curve"]], color=colour,
                        alpha=0.25, lw=0.8)
        points = r.summary["curve"]
        for ax, key in ((axes[0], "notes"), (axes[1], "seconds")):
            ax.errorbar([p[key] for p in points], [p["bits_per_note"]["mean"] for p in points],
                        yerr=[p["bits_per_note"]["half_width"] if _finite(p["bits_per_note"]["half_width"]) else 0
                              for p in points], color=colour, marker="o", ms=3, lw=1.5, capsize=2, label=r.label)
    for ax, xlabel in ((axes[0], "notes seen"), (axes[1], "training seconds")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("valid-subset bits/note")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0].set_title("learning curve against notes seen", fontsize=10)
    axes[1].set_title("learning curve against compute", fontsize=10)
    means = [r.summary["bits_per_note"]["mean"] for r in results]
    halves = [r.summary["bits_per_note"]["half_width"] for r in results]
    axes[2].bar(range(len(results)), means, yerr=[h if _finite(h) else 0 for h in halves], capsize=4,
                color=(COLOURS * 4)[:len(results)])
    axes[2].set_xticks(range(len(results)), [r.label for r in results], rotation=20, fontsize=8)
    axes[2].set_title("valid bits/note (95 % t-interval over seeds)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _inline(text: str) -> str:
    """Escaped text with markdown's **bold** and `code` as HTML."""
    import re

    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _markdown_to_html(text: str) -> str:
    out, rows, items = [], [], []

    def flush():
        if rows:
            out.append("<table>" + "".join(rows) + "</table>")
            rows.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            if items:
                flush()
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            cells = [html.escape(c.strip()) for c in line.strip().strip("|").split("|")]
            tag = "th" if not rows else "td"
            rows.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if line.startswith("- "):
            if rows:
                flush()
            items.append(_inline(line[2:]))
            continue
        flush()
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


def write_report(out: Path, settings, results, reference_stats, attention_rows=()) -> tuple[Path, Path]:
    text = markdown(settings, results, reference_stats, attention_rows)
    png = _plots(results)
    write_bytes_atomic(out / "study.png", png)
    write_text_atomic(out / "report.md", text + "\n![learning curves and valid bits per note](study.png)\n")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse;font-size:.85rem;margin:1rem 0}td,th{border:1px solid #ccc;"
             "padding:.25rem .5rem;text-align:right}th{background:#f3f3f3}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Tokenization study</title>"
            f"<style>{style}</style></head><body>{_markdown_to_html(text)}"
            f"<img alt='learning curves and valid bits per note' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'></body></html>")
    write_text_atomic(out / "report.html", page)
    return out / "report.md", out / "report.html"
