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

Beyond what decodes, a grammar applies structural constraints (``SamplingConstraints``), on by
default: limits a real piece keeps and a runaway sample breaks (a note held for ever, a pile of
notes on one beat). Each scheme applies those its ids can express, in ``_constrain``; when the
constraints would leave a row no id at all (a prompt that already breaks them in a corner the
scheme cannot leave), that row gets the grammar's mask alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from cadenza.data.errors import CadenzaError

if TYPE_CHECKING:
    from .base import Tokenizer


@dataclass(frozen=True)
class SamplingConstraints:
    """Structural limits on sampled music, applied as masks by each scheme's grammar.

    The defaults follow what the corpora hold and what the broken-passage statistic
    (``cadenza.data.theory.broken_passage``: a note held over 8 beats, over 8 notes sounding)
    calls broken. Chorales sound four voices (a median of 4 notes at once, 4 per onset) and their
    longest notes, fermatas, last about 3 beats; the corpora play at 120 quarters per minute, so
    4 s is 8 beats. ``None`` (or ``allow_repeated_pitch=True``) switches a constraint off;
    ``SamplingConstraints.off()`` switches them all off.

    - ``max_note_seconds``: Event: a note sounding this long must end before time moves on (its
      NOTE_OFF is forced, and no TIME_SHIFT passes the limit); Anticipatory: the longest
      duration id. Event and Anticipatory ids are in seconds and carry no tempo.
    - ``max_note_beats``: REMI, whose durations are in beats: Duration ids above it are masked.
    - ``max_polyphony``: no new note while this many sound: Event: no NOTE_ON (nor the VELOCITY
      before one); REMI: no Program or Pitch (a note sounds from its Position for its Duration).
    - ``max_notes_per_position``: REMI: notes at one Position; Anticipatory: notes at one onset.
    - ``keep_texture``: infill and accompaniment: the polyphony cap is the given music's own
      number of voices when that is lower (the notes sounding at 90 % of the onsets before the
      span, ``cadenza.symbolic.anticipation_tasks.texture_voices``; a four-part chorale: 4), so new
      notes do not pile a fifth or sixth voice onto the parts (which then cross and double).
    - ``allow_repeated_pitch``: False: REMI: no pitch twice at one Position within one program;
      Anticipatory: no (onset, instrument and pitch) twice.
    - ``keep_prompt_programs``: REMI: new notes use only the programs (instruments, drums
      included) the prompt has, so a four-voice chorale is not continued by a drum kit; a prompt
      without Program ids leaves every program open.
    - ``under_melody``: Anticipatory accompaniment (``accompany``): a new note must start below
      the kept melody it sounds against (no unison either; free in the melody's rests), when the
      melody is the piece's top part. See
      ``cadenza.symbolic.anticipation_tasks.UnderMelody``.
    - ``melody_dissonance_penalty``: Anticipatory accompaniment: a note struck together with a
      melody note has this taken off the logits of the pitches a 2nd, tritone or 7th from it (2:
      about 7 times less likely); a soft guard, passing notes are left alone. See
      ``cadenza.symbolic.anticipation_tasks.MelodyConsonance``.
    - ``melody_hold_bonus``: Anticipatory accompaniment: where the kept melody holds a note two
      beats or more from a beat (a fermata), the lower parts hold a chord with it: onsets under
      that note have this taken off their logits, and the notes struck with it get it added to the
      durations that end with it, to one more note at its onset while the texture's voices are
      not all sounding, and to the pitches that keep the chord on its way to a root-position
      triad under the melody's pitch (4.5: about 90 times; 3 left 1.44 held chords per 8 bars,
      4.5 1.68, Bach 2.00, ``docs/generation-quality.md``). See
      ``cadenza.symbolic.anticipation_tasks.MelodyHold``.
    - ``fill_voices``: Anticipatory infill and accompaniment with ``keep_texture``: a voice that
      stops is taken up again at once instead of resting. At the time slot, the onsets later than
      the first instant where fewer notes sound than the given music's texture has voices (a
      four-part chorale: 4) have this taken off their logits, so the model completes a chord
      before it moves on and a gap in a voice is filled where it opens (3: about 20 times less
      likely; without it the infill wrote 0.56 of Bach's notes per beat, its voices resting a
      quarter of the time, ``docs/generation-quality.md``). Gaps under 30 ms (quantization) do not count.
    - ``metric_grid``: Event: when the prompt keeps a metric grid (``cadenza.data.context.metric_grid``:
      sixteenths, or with triplets, of its tempo), new notes start and end on it (TIME_SHIFTs land
      on a grid step, or take the longest shift and go on): time counted in 10 ms steps otherwise
      drifts off the beat a little at every shift, and the music leaves its bars.
    - ``key_prior``: this much is taken off the logits of notes outside the scale of the key of
      the music given (continuations, Event and REMI: the prompt's, ``cadenza.symbolic.sampling.key_bias``;
      infill and accompaniment: every given note's, ``cadenza.symbolic.anticipation_tasks.SpanKey``;
      a minor key keeps its raised sixth and seventh), so they are ``exp(key_prior)`` times less
      likely than the model had them: a soft preference, chromatic notes stay possible.
    - ``parallel_penalty``: Event, REMI, and infill and accompaniment
      (``cadenza.symbolic.anticipation_tasks.SpanVoiceLeading``): a note that would move in parallel fifths or octaves (or
      unisons) with another voice moving at the same instant has this taken off its logit (6:
      about 400 times less likely; 3 left Event 2.8 % and REMI 4.3 % parallels, 6 leaves 1.1 %
      and 2.9 %, ``docs/generation-quality.md``). Each new note and the other notes struck at its instant are
      traced to the notes that ended there (the nearest, in pitch order, as a listener and
      ``cadenza.data.context.restore_context`` follow voices), and a pair that moved from a fifth
      or octave to the same interval is a parallel (``cadenza.data.theory.parallels`` counts
      them). A soft guard of chorale style, not a rule of every style.
    - ``phrase_bonus``: Event, REMI, and infill and accompaniment
      (``cadenza.symbolic.anticipation_tasks.SpanPhrase``, as REMI): a phrase that has run ``phrase_beats`` beats or more
      since its last held chord may end on a root-position major or minor triad struck on a
      beat (``cadenza.data.theory.root_position_triad``; Event: with no fewer notes than
      sounded before it): the ids that hold that chord two beats get this added to their
      logits (1.5: about 4.5 times likelier; 3, the default until 2026-12-04, gave twice
      Bach's held chords on the valid split, and with ``fill_voices`` the infill three times).
      Event: the waits after the chord is struck; REMI:
      the Durations of two to four beats of its notes, bass first, while they can still make
      the triad, and the Pitches above a held bass that keep it on the way there (a parallel's
      penalty overrides that). The model still chooses: it ends phrases where it already
      gives the wait some weight, and a chord off the beat is never pushed to be held, nor in
      Event a dissonance or an inversion (REMI pushes the bass before the voices above it are
      chosen). A soft guide of chorale phrasing (a fermata every two to four bars), for music with a
      metric grid at a known tempo.
    - ``timing_outside_nucleus``: top-p (nucleus) filtering cuts only what is played (pitches,
      velocities, instruments); the ids that place notes in time (``Tokenizer.timing_ids``: time
      shifts; bars, positions and durations; anticipatory times and durations) are sampled from
      the model's whole distribution, the grammar's masks still applying. A phrase ending's long
      wait is a rare id at every instant (a few in a hundred), so a plain nucleus of 0.95 cuts
      it every time and continuations never stop on a held chord. False: the nucleus cuts
      every id alike.
    """

    max_note_seconds: float | None = 4.0
    max_note_beats: float | None = 8.0
    max_polyphony: int | None = 8
    max_notes_per_position: int | None = 8
    allow_repeated_pitch: bool = False
    keep_texture: bool = True
    keep_prompt_programs: bool = True
    under_melody: bool = True
    metric_grid: bool = True
    key_prior: float | None = 1.0
    melody_dissonance_penalty: float | None = 2.0
    melody_hold_bonus: float | None = 4.5
    parallel_penalty: float | None = 6.0
    fill_voices: float | None = 3.0
    phrase_bonus: float | None = 1.5
    phrase_beats: float = 6.0
    timing_outside_nucleus: bool = True

    @classmethod
    def off(cls) -> SamplingConstraints:
        """No structural constraint: only what the scheme needs to decode."""
        return cls(max_note_seconds=None, max_note_beats=None, max_polyphony=None, max_notes_per_position=None,
                   allow_repeated_pitch=True, keep_texture=False, keep_prompt_programs=False, under_melody=False,
                   metric_grid=False, key_prior=None,
                   melody_dissonance_penalty=None, melody_hold_bonus=None, parallel_penalty=None,
                   fill_voices=None, phrase_bonus=None,
                   timing_outside_nucleus=False)

    @property
    def active(self) -> bool:
        """Whether any constraint is on."""
        return self != SamplingConstraints.off()

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or value is None:
                continue
            if not value > 0:
                raise CadenzaError(f"{field.name} must be positive (or None to switch it off), not {value!r}")


class Grammar:
    """Base: per-row state in plain Python (batches are small), masks built with numpy.

    A scheme subclasses it and defines ``_reset_state``, ``_consume``, ``_allow`` and
    ``seconds``; ``_at_boundary``, ``_crosses_limit`` and ``bars`` have defaults.
    """

    has_bars = False

    def __init__(self, tokenizer: Tokenizer, constraints: SamplingConstraints | None = None):
        self.tokenizer = tokenizer
        self.constraints = SamplingConstraints() if constraints is None else constraints
        self.vocab_size = tokenizer.vocab_size
        self.batch = 0
        self.limit_tokens: int | None = None
        self.limit_seconds: float | None = None
        self.limit_bars: int | None = None

    # -- the face sampling uses -------------------------------------------------------------
    def set_prompt(self, score) -> None:
        """Take what the constraints need from the prompt as a Score (its grid; default: nothing).
        Called before ``reset``; it holds for every row."""

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
        constrained = self.constraints.active
        for row in range(self.batch):
            if self.finished[row]:
                mask[row] = True
                continue
            self._allow(row, mask[row])
            if constrained:
                grammatical = mask[row].copy()
                self._constrain(row, mask[row])
                if not mask[row].any():
                    mask[row] = grammatical
        return mask

    def penalties(self) -> np.ndarray | None:
        """(batch, vocab) float32 to subtract from each row's logits: the constraints' soft
        preferences (``_penalize``), or None when no row has any."""
        if not self.constraints.active:
            return None
        out = None
        for row in range(self.batch):
            if self.finished[row]:
                continue
            penalty = self._penalize(row)
            if penalty:
                if out is None:
                    out = np.zeros((self.batch, self.vocab_size), np.float32)
                ids = np.fromiter(penalty.keys(), np.int64, len(penalty))
                out[row, ids] = np.fromiter(penalty.values(), np.float32, len(penalty))
        return out

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

    def _constrain(self, row: int, mask: np.ndarray) -> None:
        """Clear in ``mask`` the ids that ``self.constraints`` forbid ``row`` (default: none)."""

    def _penalize(self, row: int) -> dict[int, float] | None:
        """{id: penalty} of the soft constraints for ``row``'s next id (default: none)."""
        return None

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


def parallel_pitches(ended: list[int], struck: list[int], pitch_count: int = 128, upward: bool = False,
                     fixed: tuple[tuple[int, int], ...] = ()) -> list[int]:
    """The pitches whose note, struck now after ``struck`` at an instant where the notes of
    ``ended`` stopped, would move in parallel fifths, octaves or unisons with one of ``struck``.

    Voices are followed as ``restore_context`` follows them: the notes struck at the instant, in
    pitch order, continue the ended notes in pitch order (the order-keeping matching of least
    total leap, ``cadenza.data.context.monotone_assignment``). A voice struck again on its own
    pitch has not moved. Without as many ended notes as struck ones a new voice enters and
    nothing is traced.

    ``upward``: the instant's notes are written from the bass up (the anticipatory ids), so a
    candidate at or above every note struck so far continues, with them, the lowest ended
    voices in order, as it will once the instant is complete with as many notes struck as
    ended. Least leap over a part of the chord guesses wrong there: bass 50 and tenor 57 moving
    to 43 and 62 under an alto held on 62 are fifths, but least leap has the 62 stay put.

    ``fixed``: (from, to) pitches of voices traced already, such as a kept melody moving from
    its note to the next; ``ended`` and ``struck`` then hold the other voices only, and the
    candidate is checked against the fixed voices too."""
    from cadenza.data.context import monotone_assignment
    from cadenza.data.theory import PERFECT_INTERVALS

    sources = np.array(sorted(ended))
    fixed = [(int(a), int(b)) for a, b in fixed]
    others = struck + [b for _, b in fixed]
    out = []
    for candidate in sorted({s + i for s in others for i in range(-36, 37) if abs(i) % 12 in PERFECT_INTERVALS}):
        if not 0 <= candidate < pitch_count:
            continue
        moved = sorted(struck + [candidate])
        if len(moved) > len(sources):
            continue
        if upward and (not struck or candidate >= max(struck)):
            came_from = sources[: len(moved)]
        else:
            came_from = sources[monotone_assignment(np.abs(np.array(moved)[:, None] - sources[None]), strict=True)]
        here = moved.index(candidate)
        origin = int(came_from[here])
        if origin == candidate:
            continue
        pairs = [(p, c) for k, (p, c) in enumerate(zip(moved, came_from.tolist())) if k != here]
        for pitch, source in pairs + [(b, a) for a, b in fixed]:
            if pitch == source:
                continue
            before, after = abs(origin - source) % 12, abs(candidate - pitch) % 12
            if before == after and before in PERFECT_INTERVALS:
                out.append(candidate)
                break
    return out
