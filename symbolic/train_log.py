"""The training log: one JSON object per line (``log.jsonl``) and the loss curve drawn from it.

Train records carry ``{"kind": "train", "step", "loss", "lr", "grad_norm", "tokens_per_s", ...}``,
evaluation records ``{"kind": "eval", "step", "split", "nll_per_token", "bits_per_note", ...}``.
A resumed run first drops records past the step it resumes from, so the log reads as if the run
had never stopped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from cadenza.data.atomic import atomic_path, write_text_atomic


class JsonlLog:
    """Append-only JSONL file, flushed per record so a crash loses at most the line being written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=True) + "\n")

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by an interruption
                    continue
        return out

    def truncate_after(self, step: int) -> None:
        """Keep only the records of steps <= ``step``."""
        kept = [r for r in self.records() if int(r.get("step", 0)) <= step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_loss_curve(records: list[dict], path: str | os.PathLike, title: str = "") -> Path | None:
    """Training loss (per logged step) and evaluation NLL per token against the step, as a PNG."""
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and math.isfinite(r.get("loss", math.nan))]
    evals = [(r["step"], r["nll_per_token"]) for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", linewidth=1)
    for split in sorted({r.get("split", "valid") for r in records if r.get("kind") == "eval"}):
        points = [(r["step"], r["nll_per_token"]) for r in records if r.get("kind") == "eval" and r.get("split") == split]
        ax.plot(*zip(*points), "o-", label=f"{split} NLL per token", color="tab:orange", markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("nats per token")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return target
