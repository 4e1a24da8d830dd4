"""Piano-roll pictures of a Score: one bar per note, time across, pitch up.

Each track has its own colour, a note's opacity follows its velocity, the time axis is in
seconds or in bars (bar lines from the time signatures, placed in seconds so tempo changes
stay visible), and an optional vertical line marks where a prompt ends and a generated
continuation begins.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from cadenza.data.atomic import write_bytes_atomic
from cadenza.data.info import pitch_name

MIN_ALPHA = 0.25
TRACK_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#7f7f7f")


def tick_to_seconds(score, ticks: np.ndarray) -> np.ndarray:
    """Seconds at each tick position of ``score`` (a Score in ticks), following its tempo map."""
    ticks = np.asarray(ticks, dtype=np.float64)
    tempos = sorted(((int(t.time), float(t.qpm)) for t in score.tempos), key=lambda item: item[0])
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, tempos[0][1] if tempos else 120.0))
    change_ticks = np.array([t for t, _ in tempos], dtype=np.float64)
    seconds_per_tick = np.array([60.0 / (qpm * score.tpq) for _, qpm in tempos])
    change_seconds = np.concatenate([[0.0], np.cumsum(np.diff(change_ticks) * seconds_per_tick[:-1])])
    segment = np.clip(np.searchsorted(change_ticks, ticks, side="right") - 1, 0, len(change_ticks) - 1)
    return change_seconds[segment] + (ticks - change_ticks[segment]) * seconds_per_tick[segment]


def bar_starts(score) -> np.ndarray:
    """Tick positions where bars start, from the time signatures (4/4 if none), up to the score's end."""
    end = max(int(score.end()), 1)
    signatures = sorted(((int(ts.time), ts.numerator, ts.denominator) for ts in score.time_signatures),
                        key=lambda item: item[0]) or [(0, 4, 4)]
    if signatures[0][0] > 0:
        signatures.insert(0, (0, 4, 4))
    starts: list[int] = []
    for i, (time, numerator, denominator) in enumerate(signatures):
        stop = signatures[i + 1][0] if i + 1 < len(signatures) else end
        bar_ticks = max(1, round(score.tpq * 4 * numerator / denominator))
        starts.extend(range(time, max(stop, time + 1), bar_ticks))
    return np.array(sorted(set(starts)), dtype=np.int64)


def _track_label(track, index: int) -> str:
    if track.name.strip():
        return track.name.strip()
    return "drums" if track.is_drum else f"track {index + 1} (program {track.program})"


def draw_pianoroll(score, *, boundary_seconds: float | None = None, axis: str = "seconds",
                   title: str | None = None, width: float = 12.0, height: float = 5.0):
    """A matplotlib Figure (Agg, outside pyplot's global state) of the Score's piano roll."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    if axis not in ("seconds", "bars"):
        raise ValueError(f"axis must be 'seconds' or 'bars', not {axis!r}")
    seconds = score.to("second")
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    low, high, end = 127, 0, 0.0
    for index, track in enumerate(seconds.tracks):
        notes = track.notes.numpy()
        if not len(notes["time"]):
            continue
        colour = np.array(to_rgba(TRACK_COLOURS[index % len(TRACK_COLOURS)]))
        rgba = np.tile(colour, (len(notes["time"]), 1))
        rgba[:, 3] = MIN_ALPHA + (1 - MIN_ALPHA) * np.clip(notes["velocity"], 0, 127) / 127.0
        ax.barh(notes["pitch"], np.maximum(notes["duration"], 1e-3), left=notes["time"], height=0.85,
                color=rgba, edgecolor=colour[:3], linewidth=0.3, label=_track_label(track, index))
        low, high = min(low, int(notes["pitch"].min())), max(high, int(notes["pitch"].max()))
        end = max(end, float((notes["time"] + notes["duration"]).max()))
    if high < low:  # no notes at all
        low, high = 60, 72
    end = max(end, float(seconds.end()), 1e-3)
    ax.set_xlim(0, end)
    ax.set_ylim(low - 1.5, high + 1.5)
    pitches = range(low - 1, high + 2)
    step = 1 if high - low <= 14 else None
    labelled = [p for p in pitches if (step and p % 12 in (0, 2, 4, 5, 7, 9, 11)) or p % 12 == 0] or [low]
    ax.set_yticks(labelled, [pitch_name(p) for p in labelled], fontsize=8)
    for p in pitches:  # black-key rows shaded, like a keyboard
        if p % 12 in (1, 3, 6, 8, 10):
            ax.axhspan(p - 0.5, p + 0.5, color="#000000", alpha=0.04, linewidth=0)
    if axis == "bars":
        bars = bar_starts(score)
        bar_seconds = tick_to_seconds(score, bars)
        for x in bar_seconds:
            ax.axvline(x, color="#999999", linewidth=0.5, zorder=0)
        every = max(1, int(np.ceil(len(bars) / 24)))
        ax.set_xticks(bar_seconds[::every], [str(i + 1) for i in range(0, len(bars), every)], fontsize=8)
        ax.set_xlabel("bar")
    else:
        ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    if boundary_seconds is not None:
        ax.axvline(boundary_seconds, color="#000000", linewidth=1.5, linestyle="--")
        ax.text(boundary_seconds, high + 1.2, " continuation", ha="left", va="top", fontsize=8)
        ax.text(boundary_seconds, high + 1.2, "prompt ", ha="right", va="top", fontsize=8)
    if len(ax.get_legend_handles_labels()[0]) > 1:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return figure


def pianoroll_png(score, **options) -> bytes:
    """The piano roll as PNG bytes (see ``draw_pianoroll`` for the options)."""
    figure = draw_pianoroll(score, **options)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_pianoroll(score, path: str | os.PathLike, boundary_seconds: float | None = None, *,
                   axis: str = "seconds", title: str | None = None) -> Path:
    """Write the Score's piano roll (atomically) as PNG, SVG, PDF or JPEG, as the path's extension
    says, and return its path."""
    from .output import check_output

    path = Path(path)
    check_output(path, "picture", option="--pianoroll")
    figure = draw_pianoroll(score, boundary_seconds=boundary_seconds, axis=axis, title=title)
    buffer = io.BytesIO()
    fmt = path.suffix.lower().lstrip(".")
    figure.savefig(buffer, format="jpeg" if fmt == "jpg" else fmt)
    write_bytes_atomic(path, buffer.getvalue())
    return path
