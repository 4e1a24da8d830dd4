"""REMI tokenizer: cadenza's face over miditok's REMI (REMI+ with programs).

miditok does the work; this module only configures it and renumbers its ids so that the
scheme's own ids come first and PAD, BOS, EOS follow them, like every cadenza tokenizer.
miditok is given one special token (its PAD, id 0); cadenza's id = miditok's id - 1.

Defaults: beat resolution {(0, 4): 8, (4, 12): 4}, 32 velocities, tempo tokens at 1 qpm
resolution (miditok's 32 bins over 40-250 qpm turn 120 qpm into 121.3, which moves the onsets of
a chorale by about 1 %), time signature tokens, programs in one stream (so a multi-track piece
survives a round trip with its instruments), no rests.

What a round trip ``decode(encode(score))`` keeps: per program, each note's pitch, onset,
duration and velocity as miditok quantizes them, the tempi and the time signatures. What it
loses, with the defaults (miditok 3.1):

- timing finer than the beat resolution: onsets on 1/8 of a beat; durations to the nearest
  Duration token (1/8 beat up to 4 beats, 1/4 beat up to 12 beats; longer notes last 12 beats);
- velocities to 32 levels; tempi to whole quarter notes per minute, clipped to ``tempo_range``;
- pitches: pitched notes must lie in ``pitch_range``, 21-109 *inclusive* (miditok keeps both
  ends); others are refused with a TokenizerError. miditok itself drops drum notes outside its
  ``drums_pitch_range`` (27-88 inclusive);
- track identity: the ids name programs, not tracks, so miditok merges tracks of one program
  into one (encode warns when it does), and decoded tracks come one per program, unnamed;
- everything else: control changes (the sustain pedal too), pitch bends, key signatures,
  markers, lyrics; decoded Scores have miditok's resolution (``time_division`` ticks per quarter).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import symusic

from cadenza.data.errors import MissingDependencyError, TokenizerError
from cadenza.data.theory import may_become_triad

from .base import Tokenizer
from .grammar import Grammar, SamplingConstraints, parallel_pitches

DEFAULT_BEAT_RES = {"0_4": 8, "4_12": 4}
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _inside_repository(path: str) -> bool:
    """A path within cadenza's source tree, but not an installed package (a virtualenv there)."""
    resolved = Path(path or os.getcwd()).resolve()
    return resolved.is_relative_to(_REPO_ROOT) and "site-packages" not in resolved.parts


@contextlib.contextmanager
def repository_off_the_path():
    """Hide cadenza's source folders from the import path while Hugging Face code loads.

    When Python runs from the repository root, the folder ``tokenizers/`` (cadenza.tokenizers'
    source), and ``benchmarks/tokenizers.py`` run as a script, shadow the Hugging Face
    ``tokenizers`` package that miditok and transformers import. A shadowing module already
    imported is forgotten too.
    """
    shadow = sys.modules.get("tokenizers")
    if shadow is not None and _inside_repository(getattr(shadow, "__file__", None) or "/"):
        del sys.modules["tokenizers"]
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if not _inside_repository(p)]
    try:
        yield
    finally:
        sys.path[:] = saved


def import_miditok():
    """Import miditok even when Python runs from the repository root (see repository_off_the_path)."""
    if "miditok" in sys.modules:
        return sys.modules["miditok"]
    # miditok's package imports its torch data loaders when it can (3-5 s of start-up that encoding
    # never uses); without torch loaded yet, that optional import is skipped, as miditok allows.
    skip_torch = "torch" not in sys.modules and "miditok.pytorch_data" not in sys.modules
    if skip_torch:
        sys.modules["miditok.pytorch_data"] = None  # makes ``from miditok import pytorch_data`` an ImportError
    with repository_off_the_path():
        try:
            return importlib.import_module("miditok")
        except ImportError as exc:
            raise MissingDependencyError(f"the REMI tokenizer needs miditok ({exc}); "
                                         "pip install 'miditok>=3.1'") from None
        finally:
            if skip_torch and sys.modules.get("miditok.pytorch_data", 0) is None:
                del sys.modules["miditok.pytorch_data"]  # a later ``import miditok.pytorch_data`` still works


def _beat_res_for_miditok(beat_res: dict) -> dict[tuple[int, int], int]:
    out = {}
    for key, resolution in beat_res.items():
        if isinstance(key, str):
            start, stop = (int(v) for v in key.split("_"))
        else:
            start, stop = (int(v) for v in key)
        out[(start, stop)] = int(resolution)
    return out


def _warn_about_merged_tracks(score: symusic.Score) -> None:
    """REMI's ids name programs, not tracks: say so when miditok is about to merge tracks (the same
    text each time, so Python shows it once per place it is raised from, not once per piece)."""
    programs = [-1 if track.is_drum else int(track.program) for track in score.tracks if len(track.notes)]
    if len(set(programs)) < len(programs):
        warnings.warn("REMI merges tracks that share a program into one (its ids name programs, not tracks); "
                      "decoding gives one track per program", MergedTracksWarning, stacklevel=4)


class MergedTracksWarning(UserWarning):
    """Encoding merged tracks of one program: decoding gives them back as one track."""


class REMITokenizer(Tokenizer):
    """miditok REMI with its config exposed.

    Config: ``beat_res`` ({"0_4": 8, "4_12": 4}: positions per beat for durations in beats
    0-4 and 4-12; tuple keys accepted), ``num_velocities`` (32), ``use_tempos`` (True),
    ``num_tempos`` (one bin per quarter note per minute over ``tempo_range``, 211 by default,
    so the integer tempi of real files keep their value and a round trip keeps times in seconds),
    ``tempo_range`` ((40, 250)), ``use_time_signatures`` (True),
    ``use_programs`` (True: Program tokens in one stream, tracks of one program merged; False:
    all tracks merged into one piano track before encoding), ``use_rests`` (False),
    ``pitch_range`` ((21, 109), inclusive as in miditok 3.1), and ``miditok`` (a dict of further ``miditok.TokenizerConfig`` arguments).
    """

    name = "remi"

    TIMING_KINDS = ("Bar", "Position", "Duration")

    def __init__(self, beat_res: dict | None = None, num_velocities: int = 32, use_tempos: bool = True,
                 num_tempos: int | None = None, tempo_range=(40, 250), use_time_signatures: bool = True,
                 use_programs: bool = True, use_rests: bool = False, pitch_range=(21, 109),
                 miditok: dict | None = None, **extra: Any):
        if extra:
            raise TokenizerError(f"unknown REMI tokenizer option(s): {', '.join(sorted(extra))}")
        beat_res = {f"{a}_{b}": r for (a, b), r in _beat_res_for_miditok(beat_res or DEFAULT_BEAT_RES).items()}
        if num_tempos is None:  # one bin per qpm: the ends of the range and every integer tempo between
            num_tempos = int(tempo_range[1]) - int(tempo_range[0]) + 1
        super().__init__(beat_res=beat_res, num_velocities=int(num_velocities), use_tempos=bool(use_tempos),
                         num_tempos=int(num_tempos), tempo_range=[int(v) for v in tempo_range],
                         use_time_signatures=bool(use_time_signatures), use_programs=bool(use_programs),
                         use_rests=bool(use_rests), pitch_range=[int(v) for v in pitch_range],
                         miditok=dict(miditok or {}))
        lib = import_miditok()
        try:
            config = lib.TokenizerConfig(
                pitch_range=tuple(self.config["pitch_range"]),
                beat_res=_beat_res_for_miditok(beat_res),
                num_velocities=self.config["num_velocities"],
                special_tokens=["PAD"],
                use_tempos=self.config["use_tempos"],
                num_tempos=self.config["num_tempos"],
                tempo_range=tuple(self.config["tempo_range"]),
                use_time_signatures=self.config["use_time_signatures"],
                use_programs=self.config["use_programs"],
                one_token_stream_for_programs=True,
                use_rests=self.config["use_rests"],
                **self.config["miditok"],
            )
            self.miditok = lib.REMI(config)
        except (TypeError, ValueError, AssertionError) as exc:
            raise TokenizerError(f"invalid REMI configuration: {exc}") from None
        self._names = [None] * len(self.miditok)
        for token, index in self.miditok.vocab.items():
            self._names[index] = token
        if self._names[0] != "PAD_None":
            raise TokenizerError("miditok did not put PAD at id 0; this miditok version is not supported")

    @property
    def base_vocab_size(self) -> int:
        return len(self.miditok) - 1

    def _base_token_to_str(self, token_id: int) -> str:
        return self._names[token_id + 1]

    def ranges(self) -> list[tuple[str, int, int]]:
        """Runs of consecutive ids of one token type (Bar, Pitch, Velocity, Duration, Position, ...)."""
        out: list[tuple[str, int, int]] = []
        for index, token in enumerate(self._names[1:]):
            kind = token.split("_")[0]
            if out and out[-1][0] == kind and out[-1][2] == index:
                out[-1] = (kind, out[-1][1], index + 1)
            else:
                out.append((kind, index, index + 1))
        return out

    def describe_notes(self) -> str:
        low, high = self.config["pitch_range"]
        return ("  built on miditok REMI; ids are miditok's minus one (its PAD moves after the scheme);\n"
                "  a round trip keeps per program the notes as miditok quantizes them, tempi and time signatures;\n"
                f"  it loses: tracks of one program (merged into one, with a warning), track names, pitches outside\n"
                f"  {low}-{high} (inclusive; refused), pedal and other controls, pitch bends, key signatures, lyrics;\n"
                "  drums kept as program -1 tokens when programs are on;\n"
                "  decode skips tokens out of REMI's grammar, as miditok does")

    def _prepare(self, score: symusic.Score) -> symusic.Score:
        if score.note_num() == 0:
            raise TokenizerError("no notes to encode (the score is empty)")
        if self.config["use_programs"]:
            _warn_about_merged_tracks(score)
        if self.config["use_programs"] or len(score.tracks) == 1:
            return score
        merged = score.copy()
        track = symusic.Track(name="merged", program=0, is_drum=False)
        for tr in score.tracks:
            track.notes.extend(tr.notes)
        merged.tracks = [track]
        merged.tracks[0].sort()
        return merged

    def encode(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        score = self._prepare(self.as_score(score))
        self._check_pitches(score)
        sequence = self.miditok.encode(score)
        if isinstance(sequence, list):
            sequence = sequence[0]
        ids = np.asarray(sequence.ids, dtype=np.int64) - 1
        if ids.size == 0:
            raise TokenizerError("no notes to encode within REMI's pitch range and programs")
        return ids

    def _check_pitches(self, score: symusic.Score) -> None:
        """miditok leaves out pitched notes outside ``pitch_range`` without a word: refuse them instead."""
        low, high = self.config["pitch_range"]  # inclusive: miditok 3.1 has Pitch tokens low..high
        outside: set[int] = set()
        for track in score.tracks:
            if not track.is_drum and len(track.notes):
                pitches = track.notes.numpy()["pitch"]
                outside.update(int(p) for p in np.unique(pitches[(pitches < low) | (pitches > high)]))
        if outside:
            shown = ", ".join(map(str, sorted(outside)[:8])) + (" ..." if len(outside) > 8 else "")
            raise TokenizerError(f"pitches {shown} lie outside REMI's pitch range {low}-{high}; transpose the "
                                 "piece, or widen the range (at most --config pitch_range=[0,127])")

    def decode(self, ids) -> symusic.Score:
        miditok_ids = (self.check_ids(ids) + 1).tolist()
        if not miditok_ids:
            return symusic.Score(self.miditok.time_division)
        if self.config["use_programs"]:
            return self.miditok.decode(miditok_ids)
        return self.miditok.decode([miditok_ids])

    # -- what sampling needs ---------------------------------------------------------------------
    def token_kinds(self) -> tuple[list[str], list[str]]:
        """The miditok type ("Bar", "Position", "Pitch", ...) and value string of every scheme id."""
        pairs = [name.split("_", 1) for name in self._names[1:]]
        return [p[0] for p in pairs], [p[1] if len(p) > 1 else "" for p in pairs]

    def grammar(self, constraints: SamplingConstraints | None = None) -> REMIGrammar:
        return REMIGrammar(self, constraints)


class REMIGrammar(Grammar):
    """miditok REMI in miditok's token-type order: a TimeSig only right after a Bar, Positions
    rising within a bar and staying inside it, a drum Program followed by a drum pitch; seconds
    from bars, positions, time signatures and tempos; bars from Bar tokens. Constraints:
    ``max_notes_per_position`` (no Program or Pitch once a Position holds that many notes),
    ``allow_repeated_pitch=False`` (no Pitch twice at one Position within one program),
    ``max_note_beats`` (no Duration above it), ``max_polyphony`` (no Program or Pitch while
    that many notes sound, by the Durations so far) and ``keep_prompt_programs`` (only the
    prompt's Programs); softly, ``parallel_penalty`` (``_penalize``)."""

    has_bars = True

    def __init__(self, tokenizer: REMITokenizer, constraints: SamplingConstraints | None = None):
        super().__init__(tokenizer, constraints)
        self.types, values = tokenizer.token_kinds()
        self.type_ids = {t: np.array([i for i, ty in enumerate(self.types) if ty == t]) for t in set(self.types)}
        graph = tokenizer.miditok.tokens_types_graph
        self.successors = {t: {s for s in graph.get(t, ()) if s in self.type_ids} for t in self.type_ids}
        for following in self.successors.values():   # drum pitches go wherever pitches go
            if "Pitch" in following and "PitchDrum" in self.type_ids:
                following.add("PitchDrum")
        if "PitchDrum" in self.type_ids:
            self.successors["PitchDrum"] = set(self.successors.get("Pitch", ()))
        self.position_value = np.full(len(self.types), -1, np.int64)
        self.tempo_value = np.full(len(self.types), np.nan)
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
        self.program_value = {i: int(values[i]) for i in self.type_ids.get("Program", ())}
        self.pitch_value = {i: int(values[i]) for i in self.type_ids.get("Pitch", ())}
        self.pitch_id = {pitch: i for i, pitch in self.pitch_value.items()}
        self.note_ids = np.concatenate([self.type_ids.get(t, np.zeros(0, np.int64)) for t in ("Pitch", "PitchDrum")])
        self.positions_per_beat = int(tokenizer.miditok.config.max_num_pos_per_beat)
        self.bar_id = int(self.type_ids["Bar"][0])
        self.duration_beats = np.zeros(len(self.types))
        for i in self.type_ids.get("Duration", ()):
            beats, positions, resolution = (int(v) for v in values[i].split("."))
            self.duration_beats[i] = beats + positions / resolution
        self.too_long = np.zeros(self.vocab_size, bool)   # Duration ids above max_note_beats
        if self.constraints.max_note_beats is not None:
            self.too_long[:len(self.types)] = self.duration_beats > self.constraints.max_note_beats
        # phrase_bonus: the Durations that hold a cadence's note, two to four beats within the cap
        self.held_durations = np.flatnonzero((self.duration_beats >= 2.0) & (self.duration_beats <= 4.0)
                                             & ~self.too_long[:len(self.types)])

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
        self.program = [None] * self.batch                 # the latest Program (None without programs)
        self.position_notes: list[set] = [set() for _ in range(self.batch)]   # (program, pitch id) here
        self.position_count = np.zeros(self.batch, np.int64)
        self.note_ends: list[list[float]] = [[] for _ in range(self.batch)]  # quarters where notes end
        self.programs_seen: list[set] = [set() for _ in range(self.batch)]   # Program ids so far
        # (program, pitch, end in quarters) of the pitched notes that have not ended before this Position
        self.pitched: list[list[tuple]] = [[] for _ in range(self.batch)]
        self.pending_pitch: list[int | None] = [None] * self.batch
        # phrase_bonus: (pitch, beats) of the pitched notes at this Position, the latest onset and
        # where the phrase began (in quarters)
        self.here: list[list[tuple[int, float]]] = [[] for _ in range(self.batch)]
        self.last_onset = np.full(self.batch, -1.0)
        self.phrase_start = np.zeros(self.batch)

    def reset(self, prompts: np.ndarray) -> None:
        super().reset(prompts)
        self.prompt_programs = [np.asarray(sorted(seen), np.int64) for seen in self.programs_seen]

    def _bar_quarters(self, row: int) -> float:
        numerator, denominator = self.meter[row]
        return numerator * 4.0 / denominator

    def _quarters(self, row: int, position: int) -> float:
        """Quarter notes from the start to ``position`` of the current bar."""
        _, denominator = self.meter[row]
        return self.bar_start_quarters[row] + max(position, 0) / self.positions_per_beat * 4.0 / denominator

    def _seconds_at(self, row: int, quarters: float) -> float:
        return self.anchor_seconds[row] + (quarters - self.anchor_quarters[row]) * 60.0 / self.tempo[row]

    def _consume(self, row: int, token: int) -> None:
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
        elif ty == "Program":
            self.program[row] = self.program_value[token]
            self.programs_seen[row].add(token)
        elif ty in ("Pitch", "PitchDrum"):
            if self.position_count[row] == 0:
                self._onset(row)
            self.position_notes[row].add((self.program[row], token))
            self.position_count[row] += 1
            self.pending_pitch[row] = self.pitch_value.get(token)
        elif ty == "Duration":
            _, denominator = self.meter[row]
            end = self._quarters(row, self.position[row]) + self.duration_beats[token] * 4.0 / denominator
            self.note_ends[row].append(end)
            if self.pending_pitch[row] is not None:
                self.pitched[row].append((self.program[row], self.pending_pitch[row], end))
                self.here[row].append((self.pending_pitch[row], float(self.duration_beats[token])))
                self.pending_pitch[row] = None
        if ty == "Position" and self.pitched[row]:
            now = self._quarters(row, self.position[row])
            self.pitched[row] = [note for note in self.pitched[row] if note[2] > now - 1e-6]
        if ty in ("Bar", "Position"):
            self.position_notes[row] = set()
            self.position_count[row] = 0
            self.here[row] = []
        self.drum_next[row] = ty == "Program" and token == self.drum_program
        self.last_type[row] = ty

    def _allow(self, row: int, mask: np.ndarray) -> None:
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

    def _constrain(self, row: int, mask: np.ndarray) -> None:
        constraints = self.constraints
        mask &= ~self.too_long
        cap = constraints.max_notes_per_position
        polyphony = constraints.max_polyphony
        if polyphony is not None and len(self.note_ends[row]) >= polyphony:
            now = self._quarters(row, self.position[row])
            self.note_ends[row] = [end for end in self.note_ends[row] if end > now + 1e-9]
        if (cap is not None and self.position_count[row] >= cap) or \
                (polyphony is not None and len(self.note_ends[row]) >= polyphony):
            mask[self.note_ids] = False
            mask[self.type_ids.get("Program", [])] = False
        programs = self.type_ids.get("Program")
        if constraints.keep_prompt_programs and programs is not None and len(self.prompt_programs[row]):
            others = mask[programs].copy()
            mask[programs] = False
            mask[self.prompt_programs[row]] = others[np.searchsorted(programs, self.prompt_programs[row])]
        if not constraints.allow_repeated_pitch and self.position_notes[row]:
            here = [token for program, token in self.position_notes[row] if program == self.program[row]]
            mask[np.asarray(here, np.int64)] = False

    def _onset(self, row: int) -> None:
        """The first note of a Position: a wait of two beats or more since the latest onset
        ended a phrase (``phrase_bonus``)."""
        now = self._quarters(row, self.position[row])
        if self.last_onset[row] >= 0 and now - self.last_onset[row] >= 2.0 - 1e-6:
            self.phrase_start[row] = now
        self.last_onset[row] = now

    def _cadence_so_far(self, row: int) -> list[int] | None:
        """The pitches struck at this Position, bass first, while they may still make a chord
        that ends the phrase (see ``SamplingConstraints.phrase_bonus``): on a beat, the phrase
        ``phrase_beats`` long, every note here so far held two beats or more, and on the way to
        a root-position major or minor triad over the first. None otherwise."""
        if self.constraints.phrase_bonus is None or self.position[row] < 0 or \
                self.position[row] % self.positions_per_beat:
            return None
        if self.last_onset[row] - self.phrase_start[row] < self.constraints.phrase_beats - 1e-6:
            return None
        if any(beats < 2.0 for _, beats in self.here[row]):
            return None
        pitches = [p for p, _ in self.here[row]]
        if pitches != sorted(pitches) or not may_become_triad(pitches):
            return None
        return pitches

    def _phrase_ending(self, row: int) -> dict[int, float]:
        """``phrase_bonus`` (as a negative penalty) for a chord that may end the phrase
        (``_cadence_so_far``): on the Durations of two to four beats of a note that keeps it on
        the way to the triad, and once its bass is held, on the Pitches above that complete it.
        miditok writes a Position's notes by duration, then pitch, so a chord held alike comes
        bass first."""
        so_far = self._cadence_so_far(row)
        if so_far is None:
            return {}
        bonus, pitch = self.constraints.phrase_bonus, self.pending_pitch[row]
        if self.last_type[row] == "Velocity" and pitch is not None:
            if not may_become_triad(so_far + [pitch]) or (so_far and pitch < so_far[-1]):
                return {}
            return {int(i): -bonus for i in self.held_durations}
        if so_far and pitch is None and self.last_type[row] in ("Program", "Duration"):
            return {token: -bonus for p, token in self.pitch_id.items()
                    if p > so_far[-1] and may_become_triad(so_far + [p])}
        return {}

    def _penalize(self, row: int) -> dict[int, float] | None:
        """``parallel_penalty`` on the Pitches that would move in parallel perfect intervals with
        a voice of the same program already struck at this Position (see ``parallel_pitches``):
        the voices that move here are the notes that end at this Position; and
        ``phrase_bonus`` (``_phrase_ending``)."""
        out = self._phrase_ending(row)
        out.update(self._parallels(row) or {})    # a parallel is no cadence: its penalty stands alone
        return out or None

    def _parallels(self, row: int) -> dict[int, float] | None:
        penalty = self.constraints.parallel_penalty
        if penalty is None or self.position[row] < 0 or not self.position_notes[row] or \
                self.last_type[row] not in ("Position", "Program", "Duration"):
            return None
        program, now = self.program[row], self._quarters(row, self.position[row])
        ended = [pitch for prog, pitch, end in self.pitched[row] if prog == program and abs(end - now) < 1e-6]
        struck = [self.pitch_value[token] for prog, token in self.position_notes[row]
                  if prog == program and token in self.pitch_value]
        if not ended or not struck:
            return None
        ids = {self.pitch_id[p]: penalty for p in parallel_pitches(ended, struck) if p in self.pitch_id}
        return ids or None

    def _at_boundary(self, row: int) -> bool:
        return self.last_type[row] not in ("Program", "Pitch", "PitchDrum", "Velocity")

    def _crosses_limit(self, row: int, token: int) -> bool:
        if self.limit_bars is not None and token == self.bar_id:
            return self.bar_count[row] + 1 - self.start_bars[row] > self.limit_bars
        if self.limit_seconds is not None and self.types[token] in ("Bar", "Position"):
            if token == self.bar_id:
                quarters = self.bar_start_quarters[row] + (self._bar_quarters(row) if self.bar_count[row] else 0.0)
            else:
                quarters = self._quarters(row, self.position_value[token])
            return self._seconds_at(row, quarters) - self.start_seconds[row] >= self.limit_seconds
        return False

    def seconds(self, row: int) -> float:
        return self._seconds_at(row, self._quarters(row, self.position[row]))

    def bars(self, row: int) -> int:
        return int(self.bar_count[row])
