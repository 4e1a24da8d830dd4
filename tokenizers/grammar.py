"""Grammars for sampling: which ids may come next, so that every generated sequence decodes.

A grammar follows a batch of sequences token by token. ``reset(prompts)`` reads the prompts,
``allowed()`` gives a (batch, vocab) boolean mask (numpy) of the ids that keep each sequence
valid, ``advance(tokens)`` takes the sampled ids. It also measures each sequence as it grows
(seconds, and bars where the scheme has them), so generation can stop at a length in tokens,
seconds or bars; ``valid_length`` is how many generated ids of each row end on a whole unit (a
complete anticipatory triple, a complete REMI note), which is where a continuation is cut.

Each scheme defines its grammar next to its tokenizer (``EventGrammar`` in ``event.py`` and so
on) and hands it out through ``Tokenizer.grammar()``. Special ids (PAD, BOS, EOS) are never
generated under a grammar. This module needs only numpy: a mask becomes a tensor where the
sampler runs (``torch.as_tensor(grammar.allowed(), device=device)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cadenza.data.errors import CadenzaError

if TYPE_CHECKING:
    from .base import Tokenizer


class Grammar:
    """Base: per-row state in plain Python (batches are small), masks built with numpy.

    A scheme subclasses it and defines ``_reset_state``, ``_consume``, ``_allow`` and
    ``seconds``; ``_at_boundary``, ``_crosses_limit`` and ``bars`` have defaults.
    """

    has_bars = False

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.batch = 0
        self.limit_tokens: int | None = None
        self.limit_seconds: float | None = None
        self.limit_bars: int | None = None

    # -- the face sampling uses -------------------------------------------------------------
    def set_limits(self, *, tokens: int | None = None, seconds: float | None = None, bars: int | None = None) -> None:
        """Stop each row once it has ``tokens`` new ids, ``seconds`` more music or ``bars`` more bars."""
        if bars is not None and not self.has_bars:
            raise CadenzaError(f"the {self.tokenizer.name} scheme has no bars; give a length in tokens or seconds")
        self.limit_tokens, self.limit_seconds, self.limit_bars = tokens, seconds, bars

    def reset(self, prompts: np.ndarray) -> None:
        """Read the prompts (batch, length); generation starts after them."""
        prompts = np.asarray(prompts, dtype=np.int64)
        self.batch = prompts.shape[0]
        self.generated = np.zeros(self.batch, np.int64)
        self.valid_length = np.zeros(self.batch, np.int64)
        self.finished = np.zeros(self.batch, bool)
        self._reset_state()
        for row in range(self.batch):
            for token in prompts[row]:
                if token < self.tokenizer.base_vocab_size:
                    self._consume(row, int(token))
        self.start_seconds = np.array([self.seconds(row) for row in range(self.batch)])
        self.start_bars = np.array([self.bars(row) for row in range(self.batch)])

    def allowed(self) -> np.ndarray:
        """(batch, vocab) bool: the ids each row may take next (finished rows: anything)."""
        mask = np.zeros((self.batch, self.vocab_size), bool)
        for row in range(self.batch):
            if self.finished[row]:
                mask[row] = True
            else:
                self._allow(row, mask[row])
        return mask

    def advance(self, tokens) -> np.ndarray:
        """Take one sampled id per row. Returns a bool per row: True where the id crossed the
        length limit and is not part of the continuation (the row is now finished)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        dropped = np.zeros(self.batch, bool)
        for row, token in enumerate(tokens):
            if self.finished[row]:
                continue
            if self._crosses_limit(row, int(token)):
                self.finished[row] = True
                dropped[row] = True
                continue
            self._consume(row, int(token))
            self.generated[row] += 1
            if self._at_boundary(row):
                self.valid_length[row] = self.generated[row]
                if self.limit_tokens is not None and self.generated[row] >= self.limit_tokens:
                    self.finished[row] = True
            if self.limit_seconds is not None and self._at_boundary(row) and \
                    self.seconds(row) - self.start_seconds[row] >= self.limit_seconds:
                self.finished[row] = True
        return dropped

    # -- what each scheme defines -------------------------------------------------------------
    def _reset_state(self) -> None:
        """Fresh per-row state for ``self.batch`` rows."""
        raise NotImplementedError

    def _consume(self, row: int, token: int) -> None:
        """Follow one scheme id of ``row`` (prompt or generated)."""
        raise NotImplementedError

    def _allow(self, row: int, mask: np.ndarray) -> None:
        """Set True in ``mask`` (vocab,) the ids ``row`` may take next."""
        raise NotImplementedError

    def _at_boundary(self, row: int) -> bool:
        """Whether ``row`` ends on a whole unit (where a continuation may be cut)."""
        return True

    def _crosses_limit(self, row: int, token: int) -> bool:
        """Whether ``token`` would start music past the seconds or bars limit."""
        return False

    def seconds(self, row: int) -> float:
        """Seconds of music ``row`` has reached."""
        raise NotImplementedError

    def bars(self, row: int) -> int:
        """Bars ``row`` has opened (schemes with bars)."""
        return 0
