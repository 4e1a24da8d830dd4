"""The tokenization study's report: a markdown table and an HTML page with plots."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from cadenza.data.atomic import write_bytes_atomic, write_text_atomic

COLUMNS = [
    ("vocabulary", lambda r: f"{r.vocab_size}"),
    ("tokens/note", lambda r: f"{r.tokens_per_note:.2f}"),
    ("tokens/s of music", lambda r: f"{r.tokens_per_second:.1f}"),
    ("round trip onset F1", lambda r: f"{r.roundtrip_onset_f1:.3f}"),
    ("round trip on+off F1", lambda r: f"{r.roundtrip_onset_offset_f1:.3f}"),
    ("steps", lambda r: f"{r.steps}"),
    ("train tokens/s", lambda r: f"{r.train_tokens_per_second:.0f}"),
    ("valid NLL/token", lambda r: f"{r.valid.get('nll_per_token', math.nan):.3f}"),
    ("valid bits/note", lambda r: f"{r.valid.get('bits_per_note', math.nan):.3f}"),
    ("valid bits/s", lambda r: f"{r.valid.get('bits_per_second', math.nan):.2f}"),
]
STATS = ("pitch_class_entropy", "scale_consistency", "polyphony", "groove_consistency", "empty_beat_rate",
         "broken", "key_kept", "parallels", "cadences_per_8_bars")


def _stat(stats: dict, name: str) -> str:
    value = stats.get(name, {}).get("mean", math.nan)
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def markdown(settings, results, reference_stats) -> str:
    lines = [f"# Tokenization study: {settings.corpus}", ""]
    lines.append(f"Command: `{settings.command}`" if settings.command else "")
    lines += ["", f"Same model (`{settings.config}` preset), same split, {settings.budget_minutes:g} minutes of "
              f"training each (steps set from the measured step time), context {settings.seq_len}, batch "
              f"{settings.batch_size}, seed {settings.seed}. Bits per note and per second are totals over the "
              "valid split divided by its notes and its seconds, so they compare across tokenizations; "
              "NLL per token does not.", ""]
    lines.append("| configuration | " + " | ".join(name for name, _ in COLUMNS) + " |")
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for r in results:
        lines.append(f"| {r.label} | " + " | ".join(fmt(r) for _, fmt in COLUMNS) + " |")
    lines += ["", f"## Statistics of sampled continuations ({settings.samples} prompts of {settings.prompt_bars} "
              f"bars from the test split, {settings.sample_seconds:g} s each, top-p 0.95) against the test split",
              ""]
    lines.append("| | " + " | ".join(STATS) + " |")
    lines.append("|---" * (len(STATS) + 1) + "|")
    lines.append("| test split | " + " | ".join(_stat(reference_stats, s) for s in STATS) + " |")
    for r in results:
        lines.append(f"| {r.label} | " + " | ".join(_stat(r.sample_stats, s) for s in STATS) + " |")
    lines += ["", "Statistics as MusPy defines them (cadenza.data.metrics): pitch-class entropy in bits, "
              "scale consistency, mean polyphony over sounding steps, groove consistency between neighbouring "
              "bars, and the rate of beats with no sounding note; then music-theory statistics "
              "(cadenza.data.theory) of the new music against its prompt: the share of samples with a broken "
              "passage and of samples in the prompt's key, parallel fifths/octaves among four-voice chord "
              "changes, and held chords per 8 bars. The test split's row scores its own continuations of the "
              "same prompts.", ""]
    return "\n".join(lines)


def _plots(results) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), dpi=110)
    axes = fig.subplots(1, 3)
    labels = [r.label for r in results]
    for ax, key, title in ((axes[0], "bits_per_note", "valid bits per note"),
                           (axes[1], "bits_per_second", "valid bits per second")):
        values = [r.valid.get(key, math.nan) for r in results]
        ax.bar(range(len(values)), values, color=["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee"][:len(values)])
        ax.set_xticks(range(len(values)), labels, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=10)
    for r in results:
        train = [(rec["step"] / max(r.steps, 1), rec["loss"]) for rec in r.log if rec.get("kind") == "train"]
        if train:
            axes[2].plot(*zip(*train), label=r.label)
    axes[2].set_xlabel("fraction of the budget")
    axes[2].set_title("training loss (nats/token)", fontsize=10)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _markdown_table_to_html(text: str) -> str:
    out, rows = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not rows else "td"
            rows.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if rows:
            out.append("<table>" + "".join(rows) + "</table>")
            rows = []
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if rows:
        out.append("<table>" + "".join(rows) + "</table>")
    return "\n".join(out)


def write_report(out: Path, settings, results, reference_stats) -> tuple[Path, Path]:
    text = markdown(settings, results, reference_stats)
    png = _plots(results)
    write_bytes_atomic(out / "study.png", png)
    write_text_atomic(out / "report.md", text + "\n![figures](study.png)\n")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse;font-size:.85rem;margin:1rem 0}td,th{border:1px solid #ccc;"
             "padding:.25rem .5rem;text-align:right}th{background:#f3f3f3}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Tokenization study</title>"
            f"<style>{style}</style></head><body>{_markdown_table_to_html(text)}"
            f"<img alt='figures' src='data:image/png;base64,{base64.b64encode(png).decode()}'></body></html>")
    write_text_atomic(out / "report.html", page)
    return out / "report.md", out / "report.html"
