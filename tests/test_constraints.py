"""Structural sampling constraints: each scheme's grammar masks what a runaway sample would do
(a note held for ever, a pile of notes on one beat), each constraint on by default and each
switchable off on its own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.symbolic.sampling import continue_score
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig
from cadenza.tokenizers import anticipation_ops as v
from cadenza.tokenizers import get_tokenizer
from cadenza.tokenizers.grammar import SamplingConstraints

OFF = SamplingConstraints.off()


def only(**on) -> SamplingConstraints:
    """Every constraint off except those given."""
    return dataclasses.replace(OFF, **on)


def _grammar(tok, prompt, constraints):
    grammar = tok.grammar(constraints)
    grammar.reset(np.asarray([prompt], np.int64))
    return grammar


def _allowed(grammar) -> np.ndarray:
    return np.flatnonzero(grammar.allowed()[0])


class _Biased(MusicTransformer):
    """An untrained model with a fixed logit bias, to push sampling where a constraint must act."""

    def __init__(self, config, bias: torch.Tensor):
        super().__init__(config)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, *args, **kwargs):
        logits, loss = super().forward(*args, **kwargs)
        return logits + self.bias, loss


def _biased(tok, *boosts: tuple) -> _Biased:
    """A model with ``value`` added to the logits of ``ids``, for each (ids, value) given."""
    bias = torch.zeros(tok.vocab_size)
    for ids, value in boosts:
        bias[list(ids)] += value
    torch.manual_seed(0)
    return _Biased(MusicTransformerConfig.debug(tok.vocab_size), bias).eval()


def _melody() -> symusic.Score:
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(program=0)
    for i, pitch in enumerate([60, 64, 67, 72]):
        track.notes.append(symusic.Note(i * 480, 480, pitch, 80))
    score.tracks.append(track)
    return score


def _notes(score: symusic.Score) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start s, end s, pitch, program) of every note."""
    seconds = score.to("second")
    rows = [(n.time, n.end, n.pitch, t.program) for t in seconds.tracks for n in t.notes]
    return tuple(np.array(c) for c in zip(*rows))


def _most_sounding(start: np.ndarray, end: np.ndarray) -> int:
    return int(max(((start <= t) & (end > t)).sum() for t in np.unique(start)))


def test_the_defaults_are_on_and_checked():
    defaults = SamplingConstraints()
    assert defaults.active and not OFF.active
    assert (defaults.max_note_seconds, defaults.max_note_beats, defaults.max_polyphony,
            defaults.max_notes_per_position, defaults.allow_repeated_pitch,
            defaults.keep_prompt_programs, defaults.under_melody) == (4.0, 8.0, 8, 8, False, True, True)
    assert not any(getattr(OFF, f.name) for f in dataclasses.fields(OFF) if f.name not in ("allow_repeated_pitch", "phrase_beats"))
    with pytest.raises(CadenzaError, match="max_polyphony must be positive"):
        SamplingConstraints(max_polyphony=0)


# -- Event --------------------------------------------------------------------------------------
def test_event_forces_the_note_off_of_a_note_at_its_maximum_length():
    tok = get_tokenizer("event")
    shift = lambda steps: tok.time_shift_offset + steps - 1  # noqa: E731
    prompt = [tok.bos_id, 60, 64, shift(100), shift(100), shift(100), 128 + 64, shift(50)]  # 60 open 3.5 s
    grammar = _grammar(tok, prompt, only(max_note_seconds=4.0))
    allowed = _allowed(grammar)
    shifts = allowed[(allowed >= tok.time_shift_offset) & (allowed < tok.velocity_offset)]
    assert shifts.max() == shift(50)                          # no shift takes it past 4 s
    assert 128 + 60 in allowed and 72 in allowed               # it may end, others may start
    grammar.advance([shift(50)])                               # 4.0 s: overdue
    assert _allowed(grammar).tolist() == [128 + 60]            # its NOTE_OFF, nothing else
    grammar.advance([128 + 60])
    assert shift(100) in _allowed(grammar)                     # time moves on again
    free = _grammar(tok, prompt + [shift(50)], only(max_polyphony=8))   # switched off
    assert shift(100) in _allowed(free) and 72 in _allowed(free)


def test_event_caps_the_notes_sounding_at_once():
    tok = get_tokenizer("event")
    eight = [tok.bos_id, *range(60, 68), tok.time_shift_offset]    # a step later: they may end
    grammar = _grammar(tok, eight, only(max_polyphony=8))
    allowed = _allowed(grammar)
    assert not ((allowed < tok.note_off_offset) | (allowed >= tok.velocity_offset)).any()   # no NOTE_ON, VELOCITY
    assert 128 + 60 in allowed and tok.time_shift_offset in allowed
    assert 70 in _allowed(_grammar(tok, eight[:-2] + eight[-1:], only(max_polyphony=8)))  # seven: one more
    assert 70 in _allowed(_grammar(tok, eight, only(max_note_seconds=4.0)))                # switched off
    # a prompt that leaves no way out (VELOCITY, then NOTE_ON, at the cap) keeps the grammar's mask
    stuck = _grammar(tok, eight + [tok.velocity_offset + 3], only(max_polyphony=8))
    assert _allowed(stuck).tolist() == list(range(tok.note_off_offset))


def test_parallel_pitches_follow_voices_in_pitch_order():
    from cadenza.tokenizers.grammar import parallel_pitches

    # C-G moving to D-?: A makes parallel fifths, F or B do not; contrary fifths (G down to ... ) count too
    fifths = parallel_pitches([60, 67], [62])
    assert 69 in fifths and 65 not in fifths and 71 not in fifths
    assert 55 in fifths                      # 67 -> 55 against 60 -> 62: consecutive fifths by contrary motion
    assert 74 in parallel_pitches([60, 72], [62])                 # octaves
    again = parallel_pitches([60, 67], [60])                     # the lower voice struck again did not move
    assert 74 not in again and 67 not in again and 72 not in again
    assert parallel_pitches([60], [62]) == []                     # one voice has ended, two would move: a new voice
    # four voices, soprano and bass in octaves moving to octaves: C3 E4 G4 C5 -> D3 F4 A4 D5
    assert 74 in parallel_pitches([48, 64, 67, 72], [50, 65, 69])
    assert 71 not in parallel_pitches([48, 64, 67, 72], [50, 65, 69])
    # written bass up (upward): bass 50 -> 43 and tenor 57 -> 62 under an alto held on 62 are fifths;
    # least leap over the half-written chord would have the 62 stay on the alto's 62
    assert 62 in parallel_pitches([50, 57, 62, 62], [43], upward=True)
    assert 62 not in parallel_pitches([50, 57, 62, 62], [43])
    assert 62 not in parallel_pitches([50, 57, 62, 62], [64], upward=True)   # below a struck note: least leap
    # a kept melody C5 -> G4 traced already (fixed): the bass written first, C3 -> G3, makes octaves
    # with it; least leap over bass and melody would have the G3 come from the tenor's C4
    assert 55 in parallel_pitches([48, 60, 64], [], upward=True, fixed=((72, 67),))
    assert 55 not in parallel_pitches([48, 60, 64, 72], [67], upward=True)
    assert 53 not in parallel_pitches([48, 60, 64], [], upward=True, fixed=((72, 67),))


def test_event_penalizes_a_note_that_moves_in_parallel_fifths():
    tok = get_tokenizer("event")
    shift = lambda steps: tok.time_shift_offset + steps - 1  # noqa: E731
    off = lambda pitch: tok.note_off_offset + pitch  # noqa: E731
    # C-G for half a second, both end, D is struck: A would be a parallel fifth
    prompt = [tok.bos_id, 60, 67, shift(50), off(60), off(67), 62]
    grammar = _grammar(tok, prompt, only(parallel_penalty=3.0))
    penalties = grammar.penalties()[0]
    assert penalties[69] == 3.0 and penalties[65] == 0 and penalties[71] == 0
    assert not penalties[tok.note_off_offset:].any()              # only NOTE_ONs are touched
    assert _grammar(tok, prompt, only(max_polyphony=8)).penalties() is None   # switched off
    grammar.advance([shift(50)])                                   # a new instant: nothing has moved yet
    assert grammar.penalties() is None
    assert SamplingConstraints().parallel_penalty == 6.0


def _chorale_steps(tok, chords, last=None):
    """Event ids of four-note chords a quarter (50 steps at 120 qpm) apart, each ending as the
    next begins; ``last`` is struck after them and left sounding (the instant of the decision)."""
    shift = tok.time_shift_offset + 50 - 1
    ids, sounding = [tok.bos_id], []
    for chord in chords:
        ids += [tok.note_off_offset + p for p in sounding] + list(chord) + [shift]
        sounding = list(chord)
    if last is None:
        return ids[:-1]
    return ids + [tok.note_off_offset + p for p in sounding] + list(last)


def _phrase_grammar(tok, ids, **on):
    grammar = tok.grammar(only(phrase_bonus=2.0, **on))
    grammar.set_prompt(_melody())        # quarters at 120 qpm: a grid and a beat of 50 steps
    grammar.reset(np.asarray([ids], np.int64))
    return grammar


def test_event_phrase_bonus_holds_a_triad_on_the_beat_after_a_long_phrase():
    tok = get_tokenizer("event")
    shift = lambda steps: tok.time_shift_offset + steps - 1  # noqa: E731
    c_major, f_major = (48, 55, 64, 72), (53, 57, 60, 65)
    # six beats of chords, then a C major triad struck on beat 7: the wait of two beats (one
    # TIME_SHIFT of 100 steps, as the encoder writes it) gets the bonus
    ids = _chorale_steps(tok, [c_major, f_major] * 3, last=c_major)
    penalties = _phrase_grammar(tok, ids).penalties()[0]
    assert penalties[shift(100)] == -2.0 and penalties[shift(99)] == -2.0
    assert penalties[shift(50)] == 0 and not penalties[:tok.time_shift_offset].any()
    # while the chord gathers its voices (three of the four sounding before), nothing
    assert _phrase_grammar(tok, ids[:-1]).penalties() is None
    # once time has moved on a beat, the chord is not held: nothing
    grammar = _phrase_grammar(tok, ids)
    grammar.advance([shift(50)])
    assert grammar.penalties() is None
    # at 60 qpm two beats are 200 steps: the full shift, then after it the rest of the wait
    slow = _melody()
    slow.tempos[0] = symusic.Tempo(0, qpm=60.0)
    grammar = tok.grammar(only(phrase_bonus=2.0))
    grammar.set_prompt(slow)
    grammar.reset(np.asarray([_chorale_steps(tok, [c_major, f_major] * 6, last=c_major)], np.int64))
    assert np.flatnonzero(grammar.penalties()[0]).tolist() == [shift(100)]
    grammar.advance([shift(100)])
    assert grammar.penalties()[0][shift(99)] == -2.0 and grammar.penalties()[0][shift(98)] == 0
    # no bonus: a phrase of only four beats, a dissonant or inverted chord, a chord off the beat
    assert _phrase_grammar(tok, _chorale_steps(tok, [c_major, f_major] * 2, last=c_major)).penalties() is None
    assert _phrase_grammar(tok, _chorale_steps(tok, [c_major, f_major] * 3, last=(48, 53, 55, 64))).penalties() is None
    assert _phrase_grammar(tok, _chorale_steps(tok, [c_major, f_major] * 3, last=(52, 55, 60, 67))).penalties() is None
    off_beat = _chorale_steps(tok, [c_major, f_major] * 3, last=None) + [shift(25)] + list(c_major)
    assert _phrase_grammar(tok, off_beat).penalties() is None
    # after a held chord a new phrase begins: six more beats before the next bonus
    ended = _chorale_steps(tok, [c_major, f_major] * 3 + [c_major])[:-1] + [shift(50), shift(50)]
    ended += [tok.note_off_offset + p for p in c_major]
    assert _phrase_grammar(tok, ended + _chorale_steps(tok, [f_major] * 3, last=c_major)[1:]).penalties() is None
    assert _phrase_grammar(tok, ids, phrase_beats=8.0).penalties() is None
    assert SamplingConstraints().phrase_bonus == 1.5 and OFF.phrase_bonus is None


def test_event_samples_keep_both_limits_and_break_them_when_off():
    tok = get_tokenizer("event")
    model = _biased(tok, (range(0, 128), 4.0), (range(128, 256), -8.0), ([tok.velocity_offset - 1], 6.0))
    on = continue_score(model, tok, _melody(), seconds=12, num_samples=2, seed=0)
    off = continue_score(model, tok, _melody(), seconds=12, num_samples=2, seed=0, constraints=OFF)
    for score in on:
        start, end, _, _ = _notes(score)
        assert (end - start).max() <= 4.0 + 1e-6 and _most_sounding(start, end) <= 8
    start, end, _, _ = _notes(off[0])
    assert (end - start).max() > 6.0 and _most_sounding(start, end) > 8


# -- REMI -----------------------------------------------------------------------------------------
def _remi():
    tok = get_tokenizer("remi")
    ids = {tok.token_to_str(i): i for i in range(tok.base_vocab_size)}
    return tok, ids


def _remi_beats(duration: str) -> float:
    """Beats of a REMI Duration token: ``Duration_2.4.8`` is 2 + 4/8."""
    whole, part, resolution = (int(x) for x in duration.split("_")[1].split("."))
    return whole + part / resolution


def _remi_note(ids, pitch: int, program: int = 0) -> list[int]:
    return [ids[f"Program_{program}"], ids[f"Pitch_{pitch}"], ids["Velocity_63"], ids["Duration_1.0.8"]]


def test_remi_penalizes_a_pitch_that_moves_in_parallel_fifths():
    tok, ids = _remi()
    # C-G for one beat, then D struck on the next beat: A would be a parallel fifth
    prompt = [ids["Bar_None"], ids["Position_0"], *_remi_note(ids, 60), *_remi_note(ids, 67),
              ids["Position_8"], *_remi_note(ids, 62), ids["Program_0"]]
    penalties = _grammar(tok, prompt, only(parallel_penalty=3.0)).penalties()[0]
    assert penalties[ids["Pitch_69"]] == 3.0 and penalties[ids["Pitch_65"]] == 0
    assert penalties.sum() == 3.0 * (penalties > 0).sum() and (penalties > 0).sum() <= 8
    # the fifth held on (a two-beat G) does not move: no penalty
    held = [ids["Bar_None"], ids["Position_0"], *_remi_note(ids, 60), ids["Program_0"], ids["Pitch_67"],
            ids["Velocity_63"], ids["Duration_2.0.8"], ids["Position_8"], *_remi_note(ids, 62), ids["Program_0"]]
    assert _grammar(tok, held, only(parallel_penalty=3.0)).penalties() is None
    assert _grammar(tok, prompt, only(max_polyphony=8)).penalties() is None


def test_remi_phrase_bonus_holds_a_triad_on_the_beat_after_a_long_phrase():
    tok, ids = _remi()

    def chord(pitches, duration="Duration_1.0.8"):
        return sum(([ids["Program_0"], ids[f"Pitch_{p}"], ids["Velocity_63"], ids[duration]] for p in pitches), [])

    c_major, f_major = (48, 55, 64, 72), (53, 57, 60, 65)
    beats = [ids["Bar_None"], ids["TimeSig_4/4"]]
    for beat in range(6):                  # six beats of chords across a barline, a quarter each
        if beat == 4:
            beats.append(ids["Bar_None"])
        beats += [ids[f"Position_{8 * (beat % 4)}"], *chord(c_major if beat % 2 == 0 else f_major)]
    bass = beats + [ids["Position_16"], ids["Program_0"], ids["Pitch_48"], ids["Velocity_63"]]
    held = {i for name, i in ids.items() if name.startswith("Duration_") and 2.0 <= _remi_beats(name) <= 4.0}

    def bonus(prompt, **on):
        penalties = _grammar(tok, prompt, only(phrase_bonus=2.0, **on)).penalties()
        return set() if penalties is None else set(np.flatnonzero(penalties[0] == -2.0).tolist())

    # the bass of a chord on beat 7: its durations of two to four beats get the bonus
    assert bonus(bass) == held and ids["Duration_2.0.8"] in held and ids["Duration_1.0.8"] not in held
    # the voices above it while the chord may still become a root-position triad
    so_far = bass[:-3] + chord([48], "Duration_2.0.8")
    assert bonus(so_far + [ids["Program_0"], ids["Pitch_55"], ids["Velocity_63"]]) == held      # a fifth
    assert bonus(so_far + chord([55], "Duration_2.0.8") + [ids["Program_0"], ids["Pitch_64"],
                                                           ids["Velocity_63"]]) == held       # and a third
    # once the bass is held, the pitches above it that keep the chord on the way to the triad
    pitches = {int(tok.token_to_str(i).split("_")[1]) for i in bonus(so_far + [ids["Program_0"]])}
    assert {51, 52, 55, 60, 64, 67, 72} <= pitches and not pitches & {48, 50, 53, 57, 59, 61}
    assert min(pitches) > 48
    with_e = so_far + chord([52], "Duration_2.0.8") + [ids["Program_0"]]
    assert {int(tok.token_to_str(i).split("_")[1]) for i in bonus(with_e)} & {63, 64, 67} == {64, 67}
    # no bonus: a fourth above the bass, a bass not held, a chord off the beat, a short phrase
    assert not bonus(so_far + [ids["Program_0"], ids["Pitch_53"], ids["Velocity_63"]])
    assert not bonus(bass[:-3] + chord([48]) + [ids["Program_0"], ids["Pitch_55"], ids["Velocity_63"]])
    assert not bonus(beats + [ids["Position_20"], ids["Program_0"], ids["Pitch_48"], ids["Velocity_63"]])
    assert not bonus(bass, phrase_beats=8.0)
    assert not bonus(bass, parallel_penalty=3.0) - held
    assert _grammar(tok, bass, only(parallel_penalty=3.0)).penalties() is None


def test_remi_caps_the_notes_at_one_position():
    tok, ids = _remi()
    prompt = [ids["Bar_None"], ids["Position_0"]] + sum((_remi_note(ids, 60 + k) for k in range(8)), [])
    allowed = set(_allowed(_grammar(tok, prompt, only(max_notes_per_position=8))))
    assert ids["Position_8"] in allowed and ids["Bar_None"] in allowed
    assert not allowed & {ids["Pitch_70"], ids["Program_0"], ids["Program_5"]}
    assert ids["Program_0"] in _allowed(_grammar(tok, prompt[:-4], only(max_notes_per_position=8)))
    assert ids["Program_0"] in _allowed(_grammar(tok, prompt, OFF))
    # a new position starts counting again
    after = _grammar(tok, prompt + [ids["Position_8"]], only(max_notes_per_position=8))
    assert ids["Program_0"] in _allowed(after)


def test_remi_repeats_no_pitch_at_one_position_within_a_program():
    tok, ids = _remi()
    prompt = [ids["Bar_None"], ids["Position_0"], *_remi_note(ids, 60), *_remi_note(ids, 64)]
    same = set(_allowed(_grammar(tok, prompt + [ids["Program_0"]], only(allow_repeated_pitch=False))))
    assert ids["Pitch_60"] not in same and ids["Pitch_64"] not in same and ids["Pitch_62"] in same
    other = set(_allowed(_grammar(tok, prompt + [ids["Program_40"]], only(allow_repeated_pitch=False))))
    assert ids["Pitch_60"] in other                             # another instrument may double it
    later = prompt + [ids["Position_4"], ids["Program_0"]]
    assert ids["Pitch_60"] in _allowed(_grammar(tok, later, only(allow_repeated_pitch=False)))
    assert ids["Pitch_60"] in _allowed(_grammar(tok, prompt + [ids["Program_0"]], OFF))


def test_remi_keeps_to_the_prompts_programs():
    tok, ids = _remi()
    prompt = [ids["Bar_None"], ids["Position_0"], *_remi_note(ids, 60), *_remi_note(ids, 48, program=32),
              ids["Position_4"]]
    programs = {i for name, i in ids.items() if name.startswith("Program_")}
    kept = set(_allowed(_grammar(tok, prompt, only(keep_prompt_programs=True)))) & programs
    assert kept == {ids["Program_0"], ids["Program_32"]}           # no drums (Program_-1), no new instrument
    assert ids["Program_-1"] in _allowed(_grammar(tok, prompt, OFF))
    # a prompt without programs (no notes yet) leaves every program open
    assert set(_allowed(_grammar(tok, [ids["Bar_None"], ids["Position_0"]], only(keep_prompt_programs=True)))) \
        >= programs


def test_remi_caps_the_notes_sounding_at_once():
    tok, ids = _remi()

    def note(pitch, duration):
        return [ids["Program_0"], ids[f"Pitch_{pitch}"], ids["Velocity_63"], ids[duration]]

    first = sum((note(60 + k, "Duration_2.0.8") for k in range(4)), [])     # beats 0-2
    second = sum((note(70 + k, "Duration_4.0.4") for k in range(4)), [])    # beats 1-5
    prompt = [ids["Bar_None"], ids["TimeSig_4/4"], ids["Position_0"], *first, ids["Position_8"], *second]
    stacked = _grammar(tok, prompt + [ids["Position_12"]], only(max_polyphony=8))
    allowed = set(_allowed(stacked))
    assert allowed and ids["Program_0"] not in allowed and ids["Pitch_80"] not in allowed   # 8 sound at beat 1.5
    assert ids["Program_0"] in _allowed(_grammar(tok, prompt + [ids["Position_16"]], only(max_polyphony=8)))
    assert ids["Program_0"] in _allowed(_grammar(tok, prompt + [ids["Position_12"]], OFF))


def test_remi_masks_durations_above_the_cap():
    tok, ids = _remi()
    prompt = [ids["Bar_None"], ids["Position_0"], ids["Program_0"], ids["Pitch_60"], ids["Velocity_63"]]
    allowed = {tok.token_to_str(i) for i in _allowed(_grammar(tok, prompt, only(max_note_beats=8.0)))}
    assert allowed and all(name.startswith("Duration_") for name in allowed)
    assert max(_remi_beats(name) for name in allowed) == 8.0
    assert "Duration_12.0.4" in {tok.token_to_str(i) for i in _allowed(_grammar(tok, prompt, OFF))}


def test_remi_samples_keep_their_positions_sparse_and_short():
    tok, ids = _remi()
    pitches = [i for name, i in ids.items() if name.startswith("Pitch_")]
    model = _biased(tok, (pitches, 3.0), ([ids["Pitch_60"]], 4.0), ([ids["Duration_12.0.4"]], 8.0),
                    ([ids["Program_0"]], 10.0),
                    ([i for name, i in ids.items() if name.startswith(("Position", "Bar"))], -3.0))
    on = continue_score(model, tok, _melody(), tokens=120, seed=0)[0]
    off = continue_score(model, tok, _melody(), tokens=120, seed=0, constraints=OFF)[0]
    start, end, pitch, program = _notes(on)
    onsets = list(zip(start.round(6), program))
    assert max(onsets.count(o) for o in set(onsets)) <= 8
    assert len(set(zip(start.round(6), program, pitch))) == len(start)          # no doubled pitch
    assert (end - start).max() <= 8 * 0.5 + 1e-6                                 # 8 beats at 120 qpm
    start, end, pitch, program = _notes(off)
    assert len(set(zip(start.round(6), program, pitch))) < len(start) and (end - start).max() > 4.0


# -- Anticipatory ----------------------------------------------------------------------------------
def _anticipatory_prompt(notes) -> list[int]:
    triples = [[v.TIME_OFFSET + t, v.DUR_OFFSET + 50, v.NOTE_OFFSET + n] for t, n in notes]
    return [v.AUTOREGRESS, v.SEPARATOR, v.SEPARATOR, v.SEPARATOR] + sum(triples, [])


def test_anticipatory_caps_durations():
    tok = get_tokenizer("anticipatory")
    prompt = _anticipatory_prompt([(100, 60)]) + [v.TIME_OFFSET + 120]
    durations = _allowed(_grammar(tok, prompt, only(max_note_seconds=4.0))) - v.DUR_OFFSET
    assert durations.tolist() == list(range(401))
    assert len(_allowed(_grammar(tok, prompt, OFF))) == v.MAX_DUR


def test_anticipatory_caps_the_notes_at_one_onset():
    tok = get_tokenizer("anticipatory")
    eight = _anticipatory_prompt([(100, 60 + k) for k in range(8)])
    allowed = _allowed(_grammar(tok, eight, only(max_notes_per_position=8)))
    assert allowed.min() == v.TIME_OFFSET + 101                 # time must move on
    assert _allowed(_grammar(tok, eight[:-3], only(max_notes_per_position=8))).min() == v.TIME_OFFSET + 100
    assert _allowed(_grammar(tok, eight, OFF)).min() == v.TIME_OFFSET + 100


def test_anticipatory_repeats_no_note_at_one_onset():
    tok = get_tokenizer("anticipatory")
    prompt = _anticipatory_prompt([(100, 60), (100, 64)])
    no_repeats = only(allow_repeated_pitch=False)
    same = set(_allowed(_grammar(tok, prompt + [v.TIME_OFFSET + 100, v.DUR_OFFSET + 20], no_repeats)))
    assert v.NOTE_OFFSET + 60 not in same and v.NOTE_OFFSET + 64 not in same and v.NOTE_OFFSET + 62 in same
    assert v.NOTE_OFFSET + 128 + 60 in same and v.REST in same  # another instrument, or a rest, may
    later = set(_allowed(_grammar(tok, prompt + [v.TIME_OFFSET + 101, v.DUR_OFFSET + 20], no_repeats)))
    assert v.NOTE_OFFSET + 60 in later
    assert v.NOTE_OFFSET + 60 in _allowed(_grammar(tok, prompt + [v.TIME_OFFSET + 100, v.DUR_OFFSET + 20],
                                                   OFF))


def test_continue_takes_the_key_prior_and_parallel_penalty_from_the_command_line():
    from cadenza.cli.generate import _constraints
    from cadenza.cli.main import build_parser

    parse = lambda *extra: build_parser().parse_args(["continue", "p.mid", "-o", "o.mid", "--seconds", "4", *extra])  # noqa: E731
    assert _constraints(parse()) == SamplingConstraints()
    chosen = _constraints(parse("--parallel-penalty", "0", "--key-prior", "2"))
    assert chosen.parallel_penalty is None and chosen.key_prior == 2.0 and chosen.metric_grid
    assert _constraints(parse("--phrase-bonus", "0")).phrase_bonus is None
    assert _constraints(parse("--phrase-bonus", "4")).phrase_bonus == 4.0
    with pytest.raises(CadenzaError, match="parallel_penalty must be positive"):
        _constraints(parse("--parallel-penalty", "nan"))


# -- the nucleus and timing --------------------------------------------------------------------
def test_timing_ids_are_the_ids_that_place_notes_in_time():
    from cadenza.symbolic.decoding import nucleus_keep

    event = get_tokenizer("event")
    assert np.flatnonzero(event.timing_ids()).tolist() == list(range(event.time_shift_offset, event.velocity_offset))
    remi = get_tokenizer("remi")
    marked = {remi.token_to_str(int(i)).split("_")[0] for i in np.flatnonzero(remi.timing_ids())}
    assert marked == {"Bar", "Position", "Duration"}
    assert remi.timing_ids().sum() == sum(hi - lo for name, lo, hi in remi.ranges()
                                          if name in ("Bar", "Position", "Duration"))
    anticipatory = get_tokenizer("anticipatory")
    assert np.flatnonzero(anticipatory.timing_ids()).tolist() == [
        *range(v.TIME_OFFSET, v.NOTE_OFFSET), *range(v.ATIME_OFFSET, v.ANOTE_OFFSET)]
    assert nucleus_keep(event, SamplingConstraints()).tolist() == event.timing_ids().tolist()
    assert nucleus_keep(event, OFF) is None and nucleus_keep(event, None) is None


def test_continue_lets_the_nucleus_cut_timing_when_asked():
    from cadenza.cli.generate import _constraints
    from cadenza.cli.main import build_parser

    parse = lambda *extra: build_parser().parse_args(["continue", "p.mid", "-o", "o.mid", "--seconds", "4", *extra])  # noqa: E731
    assert _constraints(parse()).timing_outside_nucleus
    assert not _constraints(parse("--nucleus-timing")).timing_outside_nucleus
