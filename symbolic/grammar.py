"""Grammars for sampling: which ids may come next, so that every generated sequence decodes.

A grammar follows a batch of sequences token by token. ``reset(prompts)`` reads the prompts,
``allowed()`` gives a (batch, vocab) boolean mask of the ids that keep each sequence valid,
``advance(tokens)`` takes the sampled ids. It also measures each sequence as it grows (seconds,
and bars where the scheme has them), so generation can stop at a length in tokens, seconds or
bars; ``valid_length`` is how many generated ids of each row end on a whole unit (a complete
anticipatory triple, a complete REMI note), which is where a continuation is cut.

- event (Performance RNN): NOTE_OFF only for a pitch that is sounding; VELOCITY is followed by
  a NOTE_ON; seconds from TIME_SHIFT steps.
- anticipatory: (time, duration, note) triples in order, time never going backwards; no
  controls, separators or flags are generated; seconds from the triples' onsets.
- remi (miditok): token types follow miditok's own succession graph, a TimeSig only right
  after a Bar, Positions rise within a bar and stay inside it, a drum Program is followed by a drum pitch; seconds from bars,
  positions, time signatures and tempos; bars from Bar tokens.

Special ids (PAD, BOS, EOS) are never generated under a grammar.
"""

from __future__ import annotations

import numpy as np
import torch

from cadenza.data.errors import CadenzaError


class Grammar:
    """Base: per-row state in plain Python (batches are small), masks built with numpy."""

    has_bars = False

    def __init__(self, tokenizer):
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

    def allowed(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(batch, vocab) bool: the ids each row may take next (finished rows: anything)."""
        mask = np.zeros((self.batch, self.vocab_size), bool)
        for row in range(self.batch):
            if self.finished[row]:
                mask[row] = True
            else:
                self._allow(row, mask[row])
        return torch.from_numpy(mask).to(device)

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
        raise NotImplementedError

    def _consume(self, row: int, token: int) -> None:
        raise NotImplementedError

    def _allow(self, row: int, mask: np.ndarray) -> None:
        raise NotImplementedError

    def _at_boundary(self, row: int) -> bool:
        return True

    def _crosses_limit(self, row: int, token: int) -> bool:
        """Whether ``token`` would start music past the seconds or bars limit."""
        return False

    def seconds(self, row: int) -> float:
        raise NotImplementedError

    def bars(self, row: int) -> int:
        return 0


def _range(tokenizer, prefix: str) -> tuple[int, int]:
    for name, start, stop in tokenizer.ranges():
        if name.split()[0] == prefix:
            return start, stop
    raise CadenzaError(f"the {tokenizer.name} vocabulary has no {prefix} range")


class EventGrammar(Grammar):
    """Performance events: no NOTE_OFF for a silent pitch, VELOCITY then NOTE_ON."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.note_on = _range(tokenizer, "NOTE_ON")
        self.note_off = _range(tokenizer, "NOTE_OFF")
        self.time_shift = _range(tokenizer, "TIME_SHIFT")
        self.velocity = _range(tokenizer, "VELOCITY")
        self.steps_per_second = float(tokenizer.config.get("steps_per_second", 100))

    def _reset_state(self) -> None:
        self.sounding = np.zeros((self.batch, self.note_on[1] - self.note_on[0]), np.int64)
        self.steps = np.zeros(self.batch, np.int64)
        self.after_velocity = np.zeros(self.batch, bool)

    def _consume(self, row, token):
        self.after_velocity[row] = False
        if self.note_on[0] <= token < self.note_on[1]:
            self.sounding[row, token - self.note_on[0]] += 1
        elif self.note_off[0] <= token < self.note_off[1]:
            pitch = token - self.note_off[0]
            self.sounding[row, pitch] = max(0, self.sounding[row, pitch] - 1)
        elif self.time_shift[0] <= token < self.time_shift[1]:
            self.steps[row] += token - self.time_shift[0] + 1
        elif self.velocity[0] <= token < self.velocity[1]:
            self.after_velocity[row] = True

    def _allow(self, row, mask):
        mask[self.note_on[0]:self.note_on[1]] = True
        if self.after_velocity[row]:
            return
        mask[self.note_off[0]:self.note_off[1]] = self.sounding[row] > 0
        mask[self.time_shift[0]:self.time_shift[1]] = True
        mask[self.velocity[0]:self.velocity[1]] = True

    def _at_boundary(self, row):
        return not self.after_velocity[row]

    def seconds(self, row):
        return self.steps[row] / self.steps_per_second


class AnticipatoryGrammar(Grammar):
    """Arrival-time triples (time, duration, note|REST), times non-decreasing, below 100 s."""

    def __init__(self, tokenizer):
        from cadenza.tokenizers import anticipation_ops as vocab

        super().__init__(tokenizer)
        self.vocab = vocab

    def _reset_state(self) -> None:
        self.slot = np.zeros(self.batch, np.int64)      # 0 time, 1 duration, 2 note
        self.time = np.zeros(self.batch, np.int64)      # ticks of the latest onset
        self.pending_time = np.zeros(self.batch, np.int64)

    def _consume(self, row, token):
        v = self.vocab
        if token in (v.AUTOREGRESS, v.ANTICIPATE):
            return
        if token == v.SEPARATOR:                        # a new piece starts its clock at zero
            self.slot[row] = (self.slot[row] + 1) % 3
            self.time[row] = 0
            return
        if self.slot[row] == 0 and v.TIME_OFFSET <= token < v.DUR_OFFSET:
            self.pending_time[row] = token - v.TIME_OFFSET
        elif self.slot[row] == 2 and v.NOTE_OFFSET <= token <= v.REST:
            self.time[row] = max(self.time[row], self.pending_time[row])
        self.slot[row] = (self.slot[row] + 1) % 3

    def _allow(self, row, mask):
        v = self.vocab
        if self.slot[row] == 0:
            mask[v.TIME_OFFSET + self.time[row]:v.TIME_OFFSET + v.MAX_TIME] = True
        elif self.slot[row] == 1:
            mask[v.DUR_OFFSET:v.DUR_OFFSET + v.MAX_DUR] = True
        else:
            mask[v.NOTE_OFFSET:v.REST + 1] = True

    def _at_boundary(self, row):
        return self.slot[row] == 0

    def _crosses_limit(self, row, token):
        if self.limit_seconds is None or self.slot[row] != 0:
            return False
        onset = (token - self.vocab.TIME_OFFSET) / self.vocab.TIME_RESOLUTION
        return onset - self.start_seconds[row] >= self.limit_seconds

    def seconds(self, row):
        return self.time[row] / self.vocab.TIME_RESOLUTION


class REMIGrammar(Grammar):
    """miditok REMI in miditok's token-type order, with positions rising inside each bar."""

    has_bars = True

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        names = [tokenizer.token_to_str(i) for i in range(tokenizer.base_vocab_size)]
        self.types = [name.split("_", 1)[0] for name in names]
        values = [name.split("_", 1)[1] if "_" in name else "" for name in names]
        self.type_ids = {t: np.array([i for i, ty in enumerate(self.types) if ty == t]) for t in set(self.types)}
        graph = tokenizer.miditok.tokens_types_graph
        self.successors = {t: {s for s in graph.get(t, ()) if s in self.type_ids} for t in self.type_ids}
        for following in self.successors.values():   # drum pitches go wherever pitches go
            if "Pitch" in following and "PitchDrum" in self.type_ids:
                following.add("PitchDrum")
        if "PitchDrum" in self.type_ids:
            self.successors["PitchDrum"] = set(self.successors.get("Pitch", ()))
        self.position_value = np.full(len(names), -1, np.int64)
        self.tempo_value = np.full(len(names), np.nan)
        self.time_signature = {}
        self.drum_program = -1
        for i, (ty, value) in enumerate(zip(self.types, values)):
            if ty == "Position":
                self.position_value[i] = int(value)
            elif ty == "Tempo":
                self.tempo_value[i] = float(value)
            elif ty == "TimeSig":
                numerator, denominator = value.split("/")
                self.time_signature[i] = (int(numerator), int(denominator))
            elif ty == "Program" and value == "-1":
                self.drum_program = i
        self.positions_per_beat = int(tokenizer.miditok.config.max_num_pos_per_beat)
        self.bar_id = int(self.type_ids["Bar"][0])

    def _reset_state(self) -> None:
        self.last_type = [None] * self.batch
        self.bar_count = np.zeros(self.batch, np.int64)
        self.position = np.full(self.batch, -1, np.int64)
        self.meter = [(4, 4)] * self.batch
        self.bar_start_quarters = np.zeros(self.batch)
        # Seconds are piecewise linear in quarters: anchored at the latest tempo change.
        self.tempo = np.full(self.batch, 120.0)
        self.anchor_quarters = np.zeros(self.batch)
        self.anchor_seconds = np.zeros(self.batch)
        self.drum_next = np.zeros(self.batch, bool)

    def _bar_quarters(self, row) -> float:
        numerator, denominator = self.meter[row]
        return numerator * 4.0 / denominator

    def _quarters(self, row, position: int) -> float:
        """Quarter notes from the start to ``position`` of the current bar."""
        _, denominator = self.meter[row]
        return self.bar_start_quarters[row] + max(position, 0) / self.positions_per_beat * 4.0 / denominator

    def _seconds_at(self, row, quarters: float) -> float:
        return self.anchor_seconds[row] + (quarters - self.anchor_quarters[row]) * 60.0 / self.tempo[row]

    def _consume(self, row, token):
        ty = self.types[token]
        if ty == "Bar":
            if self.bar_count[row] > 0:
                self.bar_start_quarters[row] += self._bar_quarters(row)
            self.bar_count[row] += 1
            self.position[row] = -1
        elif ty == "Position":
            self.position[row] = self.position_value[token]
        elif ty == "Tempo":
            quarters = self._quarters(row, self.position[row])
            self.anchor_seconds[row] = self._seconds_at(row, quarters)
            self.anchor_quarters[row] = quarters
            self.tempo[row] = self.tempo_value[token]
        elif ty == "TimeSig":
            self.meter[row] = self.time_signature[token]
        self.drum_next[row] = ty == "Program" and token == self.drum_program
        self.last_type[row] = ty

    def _allow(self, row, mask):
        last = self.last_type[row]
        following = {"Bar"} if last is None else self.successors.get(last, set())
        if self.drum_next[row]:
            following = following & {"PitchDrum"} or following
        elif last == "Program":
            following = following - {"PitchDrum"} or following
        if last != "Bar":  # a time signature only opens a bar (miditok reads one mid-bar as a new bar)
            following = following - {"TimeSig"}
        for ty in following:
            mask[self.type_ids[ty]] = True
        if "Position" in following:
            numerator, denominator = self.meter[row]
            in_bar = numerator * self.positions_per_beat
            positions = self.type_ids["Position"]
            value = self.position_value[positions]
            mask[positions] = (value > self.position[row]) & (value < in_bar)

    def _at_boundary(self, row):
        return self.last_type[row] not in ("Program", "Pitch", "PitchDrum", "Velocity")

    def _crosses_limit(self, row, token):
        if self.limit_bars is not None and token == self.bar_id:
            return self.bar_count[row] + 1 - self.start_bars[row] > self.limit_bars
        if self.limit_seconds is not None and self.types[token] in ("Bar", "Position"):
            if token == self.bar_id:
                quarters = self.bar_start_quarters[row] + (self._bar_quarters(row) if self.bar_count[row] else 0.0)
            else:
                quarters = self._quarters(row, self.position_value[token])
            return self._seconds_at(row, quarters) - self.start_seconds[row] >= self.limit_seconds
        return False

    def seconds(self, row):
        return self._seconds_at(row, self._quarters(row, self.position[row]))

    def bars(self, row):
        return int(self.bar_count[row])


GRAMMARS = {"event": EventGrammar, "anticipatory": AnticipatoryGrammar, "remi": REMIGrammar}


def grammar_for(tokenizer) -> Grammar:
    """The grammar of a tokenizer's scheme."""
    name = getattr(tokenizer, "name", None)
    if name not in GRAMMARS:
        raise CadenzaError(f"no sampling grammar for the {name!r} scheme")
    return GRAMMARS[name](tokenizer)
