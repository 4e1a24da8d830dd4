"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

A pure function of the step: the training loop sets each step's learning rate from it, so the
schedule's whole state is the step count, restored exactly on resume, and it can be plotted or
tested without an optimizer. Under a time box (``budget`` seconds, ``elapsed`` of them spent)
the decay follows whichever of steps and wall time is further along, so a run stopped by its
budget has annealed; the elapsed time is then part of the run's saved state.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, *, warmup: int, total: int, min_ratio: float = 0.1, elapsed: float | None = None,
                  budget: float | None = None) -> float:
    """Factor applied to the peak learning rate at optimizer step ``step`` (0-based).

    Steps 0 .. warmup-1 rise linearly from 1/warmup to 1 (never 0, so the first update moves);
    from ``warmup`` to ``total`` the factor follows half a cosine from 1 down to ``min_ratio``,
    and stays there past ``total``. With ``budget`` (seconds) and ``elapsed``, the cosine's
    progress is the larger of the steps' and the time's.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    if budget and elapsed is not None:
        progress = max(progress, min(1.0, elapsed / budget))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

