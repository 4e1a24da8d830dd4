"""Infilling and accompaniment: the sampling loop respects the span, the controls and time order."""

from __future__ import annotations

import numpy as np
import pytest
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.data.theory import against_melody
from cadenza.symbolic import anticipation_tasks as tasks
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig
from cadenza.tokenizers import anticipation_ops as ops
from cadenza.tokenizers import get_tokenizer
from cadenza.tokenizers.grammar import SamplingConstraints


class StepModel(torch.nn.Module):
    """A stand-in model with the real one's cache face whose favourite next id is a fixed rule:
    after a note, the time 25 ticks after the latest event time seen; after a time, 20 ticks of
    duration; after a duration, pitch 62 of program 0. Lets the loop be checked exactly."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.fed: list[int] = []

    def new_cache(self, batch, capacity):
        self.fed = []
        return object()

    def forward(self, ids, cache=None, last_only=False):
        self.fed.extend(int(i) for i in ids[0])
        last = self.fed[-1]
        logits = torch.zeros(1, 1, self.vocab_size)
        times = [t - ops.TIME_OFFSET for t in self.fed if t < ops.DUR_OFFSET]  # events, not controls
        if ops.TIME_OFFSET <= last < ops.DUR_OFFSET or ops.ATIME_OFFSET <= last < ops.ADUR_OFFSET:
            logits[0, 0, ops.DUR_OFFSET + 20] = 10
        elif ops.DUR_OFFSET <= last < ops.NOTE_OFFSET or ops.ADUR_OFFSET <= last < ops.ANOTE_OFFSET:
            logits[0, 0, ops.NOTE_OFFSET + 62] = 10
        else:
            logits[0, 0, ops.TIME_OFFSET + min(ops.MAX_TIME - 1, (max(times) if times else 0) + 25)] = 10
        return logits, None


def _score(notes, program=0):
    score = symusic.Score(500)  # 120 qpm: 1 s = 1000 ticks
    track = symusic.Track("t", program, False)
    for start, dur, pitch in notes:
        track.notes.append(symusic.Note(int(start * 1000), int(dur * 1000), pitch, 80))
    score.tracks.append(track)
    return score


def _onsets(score):
    sec = score.to("second")
    return sorted((round(n.time, 2), int(n.pitch)) for t in sec.tracks for n in t.notes)


def test_infill_writes_only_inside_the_span_and_keeps_the_rest():
    tok = get_tokenizer("anticipatory")
    original = _score([(i * 0.5, 0.5, 60 + (i % 5)) for i in range(24)])  # 12 s of eighths
    result = tasks.infill(StepModel(tok.vocab_size), tok, original, 4.0, 6.0, temperature=0)
    new = _onsets(result.generated)
    assert new, "the model wrote notes"
    assert all(4.0 <= t < 6.0 and p == 62 for t, p in new)
    # onsets advance by 0.25 s from the last prompt onset (3.5 s) and stop before 6 s
    assert [t for t, _ in new] == [3.75 + 0.25 * k for k in range(1, 9)][: len(new)]
    kept = [x for x in _onsets(original) if not 4.0 <= x[0] < 6.0]
    assert sorted(kept + new) == _onsets(result.score)


def test_accompaniment_keeps_the_melody_and_fills_the_time():
    tok = get_tokenizer("anticipatory")
    melody = _score([(i, 1, 72 + i % 3) for i in range(10)], program=73)
    result = tasks.accompany(StepModel(tok.vocab_size), tok, melody, 73, temperature=0, end=3.0)
    programs = {t.program for t in result.score.tracks if t.notes}
    assert programs == {0, 73}
    melody_back = [n for t in result.score.tracks if t.program == 73 for n in t.notes]
    assert len(melody_back) == 10 and all(n.pitch >= 72 for n in melody_back)
    assert result.generated_events == len(_onsets(result.generated)) > 0
    assert all(t < 3.0 for t, _ in _onsets(result.generated))


def test_window_slides_on_long_generation():
    tok = get_tokenizer("anticipatory")
    original = _score([(0, 0.5, 60)])
    full = tasks.generate_span(StepModel(tok.vocab_size), tok.events(original), start=0.5, end=20.0,
                               temperature=0, context=64)
    times = ops.as_triples(full)[:, 0]
    assert np.all(np.diff(times) >= 0)
    assert len(times) > 60, "generation went on past several windows"


def test_real_model_runs_and_respects_time_order():
    tok = get_tokenizer("anticipatory")
    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig.debug(tok.vocab_size)).eval()
    original = _score([(i * 0.5, 0.5, 60 + (i % 5)) for i in range(16)])
    full = tasks.generate_span(model, tok.events(original), start=2.0, end=5.0, seed=3, temperature=1.0,
                               top_p=None)
    triples = ops.as_triples(full)
    assert np.all(np.diff(triples[:, 0]) >= 0)
    assert np.all(triples[:, 2] < ops.REST)


def test_accompany_a_track_of_a_single_program_piece():
    tok = get_tokenizer("anticipatory")
    piece = _score([(i, 1, 72) for i in range(6)])
    bass = symusic.Track("bass", 0, False)
    bass.notes.extend([symusic.Note(i * 2000, 2000, 48, 80) for i in range(3)])
    piece.tracks.append(bass)
    result = tasks.accompany(StepModel(tok.vocab_size), tok, piece, melody_track=0, prompt_seconds=2.0,
                             temperature=0)
    assert [t.name for t in result.score.tracks] == ["t", "bass"]  # the piece's own tracks
    melody = [int(n.pitch) for n in result.score.tracks[0].notes]
    assert melody == [72] * 6
    others = _onsets(_without_melody(result.score))
    assert (0.0, 48) in others, "the prompt of the other part is kept"
    assert all(p == 62 for t, p in others if t >= 2.0)


def _without_melody(score):
    out = score.copy()
    keep = [t for t in out.tracks if t.name != "t"]
    out.tracks.clear()
    for t in keep:
        out.tracks.append(t)
    return out


def test_bad_spans_and_programs_are_clear_errors():
    tok = get_tokenizer("anticipatory")
    piece = _score([(0, 1, 60)])
    model = StepModel(tok.vocab_size)
    with pytest.raises(CadenzaError, match="start < end"):
        tasks.infill(model, tok, piece, 3.0, 2.0)
    with pytest.raises(CadenzaError, match="below 100 s"):
        tasks.infill(model, tok, piece, 3.0, 120.0)
    with pytest.raises(CadenzaError, match="no notes of program 40"):
        tasks.accompany(model, tok, piece, 40)


# -- whole pieces, budgets, the infill's join ---------------------------------------------------
def test_infill_late_in_a_piece_longer_than_the_id_range_returns_all_of_it():
    tok = get_tokenizer("anticipatory")
    original = _score([(i * 0.5, 0.5, 60 + (i % 5)) for i in range(300)])   # 150 s of eighths
    result = tasks.infill(StepModel(tok.vocab_size), tok, original, 130.0, 132.0, temperature=0)
    new = _onsets(result.generated)
    # the model saw the window's times: onsets 0.25 s apart from the last prompt onset (129.5 s)
    assert [t for t, _ in new] == [129.75 + 0.25 * k for k in range(1, 9)][: len(new)] and len(new) >= 4
    assert all(130.0 <= t < 132.0 and p == 62 for t, p in new)
    kept = [x for x in _onsets(original) if not 130.0 <= x[0] < 132.0]
    assert sorted(kept + new) == _onsets(result.score)
    assert max(t for t, _ in _onsets(result.score)) == 149.5            # nothing after 100 s was lost


def test_accompaniment_of_a_long_melody_runs_window_by_window_to_its_end():
    tok = get_tokenizer("anticipatory")
    melody = _score([(i, 1, 72 + i % 3) for i in range(130)], program=73)  # 130 s
    result = tasks.accompany(StepModel(tok.vocab_size), tok, melody, 73, temperature=0, max_events=1000)
    melody_back = [n for t in result.score.tracks if t.program == 73 for n in t.notes]
    assert len(melody_back) == 130
    onsets = [t for t, _ in _onsets(result.generated)]
    assert onsets == sorted(onsets) and onsets[-1] >= 125.0           # it went on to the melody's end
    assert all(b - a < 1.0 for a, b in zip(onsets, onsets[1:]))        # no gap where windows meet
    assert result.generated_events == len(onsets)


class HighModel(StepModel):
    """StepModel that likes pitch 84 best and pitch 65 next."""

    def forward(self, ids, cache=None, last_only=False):
        logits, _ = super().forward(ids, cache, last_only)
        if logits[0, 0, ops.NOTE_OFFSET + 62] == 10:
            logits[0, 0, ops.NOTE_OFFSET + 62] = 0
            logits[0, 0, ops.NOTE_OFFSET + 84] = 10
            logits[0, 0, ops.NOTE_OFFSET + 65] = 5
        return logits, None


def test_the_infill_ends_within_a_fifth_of_the_next_top_note_and_the_join_can_be_switched_off():
    from cadenza.data.theory import span_joins

    tok = get_tokenizer("anticipatory")
    original = _score([(i * 0.5, 0.5, 60) for i in range(24)])         # the top voice is 60 throughout
    joined = tasks.infill(HighModel(tok.vocab_size), tok, original, 4.0, 6.0, temperature=0)
    free = tasks.infill(HighModel(tok.vocab_size), tok, original, 4.0, 6.0, temperature=0, join=False)
    assert {p for _, p in _onsets(free.generated)} == {84}
    assert span_joins(free.score, 4.0, 6.0)["exit"] == 24
    # notes sounding in the last second stay at or below 60 + 7: the model's second choice
    new = _onsets(joined.generated)
    assert {p for t, p in new if t + 0.2 > 5.0} == {65} and {p for t, p in new if t + 0.2 <= 5.0} == {84}
    assert span_joins(joined.score, 4.0, 6.0)["exit"] == 5


def test_infill_retries_until_the_top_voice_joins(monkeypatch):
    tok = get_tokenizer("anticipatory")
    original = _score([(i * 0.25, 0.25, 60) for i in range(48)])   # the model's favourite onsets are allowed
    seeds = []
    real = tasks.generate_span

    def low_then_joined(model, events, *, seed, **kwargs):
        seeds.append(seed)
        full = real(model, events, seed=seed, **kwargs)
        if len(seeds) < 3:   # the first two samples end an octave and a half low
            triples = ops.as_triples(full).copy()
            inside = (triples[:, 0] - ops.TIME_OFFSET >= 400) & (triples[:, 0] - ops.TIME_OFFSET < 600)
            triples[inside, 2] = ops.NOTE_OFFSET + 40
            return triples.ravel()
        return full

    monkeypatch.setattr(tasks, "generate_span", low_then_joined)
    result = tasks.infill(StepModel(tok.vocab_size), tok, original, 4.0, 6.0, seed=5, temperature=0.5)
    assert seeds == [5, 6, 7] and {p for _, p in _onsets(result.generated)} == {62}
    seeds.clear()
    result = tasks.infill(StepModel(tok.vocab_size), tok, original, 4.0, 6.0, seed=5, temperature=0.5, join=False)
    assert seeds == [5] and {p for _, p in _onsets(result.generated)} == {40}


def test_a_span_that_runs_out_of_time_is_cut_and_reported(capsys):
    tok = get_tokenizer("anticipatory")
    original = _score([(i * 0.5, 0.5, 60 + (i % 5)) for i in range(24)])
    result = tasks.infill(StepModel(tok.vocab_size), tok, original, 4.0, 6.0, temperature=0, max_seconds=0.0,
                          progress=False)
    assert "infill 1 hit its budget of 0 s after 1 ids and was cut there" in capsys.readouterr().err
    assert result.generated_events == 0 and result.score.note_num() == 20


# -- structural constraints in the span: under the melody, durations, onsets, polyphony ---------------------
OFF = SamplingConstraints.off()
MELODY_ONLY = SamplingConstraints(**{**OFF.__dict__, "under_melody": True})


class _FakeSpan:
    def __init__(self, onset, duration):
        self.slot, self.triple = 2, [ops.TIME_OFFSET + onset, ops.DUR_OFFSET + duration]


def _masked(melody, onset, duration):
    """The pitches (of program 0) UnderMelody masks for a note at ``onset`` lasting ``duration`` ticks,
    after checking that it leaves every other logit as it was."""
    logits = torch.randn(1, ops.VOCAB_SIZE, generator=torch.Generator().manual_seed(onset))
    out = tasks.UnderMelody(_FakeSpan(onset, duration), np.array(melody))(None, logits.clone())
    kept = torch.isfinite(out[0])
    assert torch.equal(out[0][kept], logits[0][kept])
    assert kept[ops.NOTE_OFFSET + ops.DRUMS * ops.MAX_PITCH:].all()      # drums and REST are never masked
    masked = np.flatnonzero(~kept.numpy()) - ops.NOTE_OFFSET
    assert (np.unique(masked % ops.MAX_PITCH, return_counts=True)[1] == ops.DRUMS).all()   # in all 128 programs
    return sorted(set((masked % ops.MAX_PITCH).tolist()))


def test_under_melody_masks_exactly_the_pitches_above_the_melody_note_sounding():
    melody = [(100, 200, 67), (200, 300, 60), (400, 500, 72)]        # a rest from 300 to 400
    above = lambda pitch: list(range(pitch, 128))  # noqa: E731   # the pitch itself (a unison) and above
    assert _masked(melody, 120, 50) == above(67)              # during the 67: 66 and below stay
    assert _masked(melody, 185, 50) == above(60)              # struck 0.15 s before the melody moves to 60
    assert _masked(melody, 170, 50) == above(67)              # 0.3 s before: beyond the gap, the 67 only
    assert _masked(melody, 185, 10) == above(67)              # ends before the 60 comes: the 67 only
    assert _masked(melody, 199, 50) == above(60)              # 10 ms before the 60: against the 60
    assert _masked(melody, 320, 50) == []                     # in the rest: free
    assert _masked(melody, 390, 50) == above(72)              # just before the melody comes back
    assert _masked(melody, 600, 50) == []                     # after the melody
    chord = [(100, 200, 64), (100, 200, 71)]                  # a melody with a chord: under its top note
    assert _masked(chord, 120, 50) == above(71)


def _chorale(parts, seconds=8):
    """A score of parts of quarter notes (0.5 s) at 120 qpm, each part a list of pitches cycled."""
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=120.0))
    for k, pitches in enumerate(parts):
        track = symusic.Track(f"part{k}", 0, False)
        for i in range(2 * seconds):
            track.notes.append(symusic.Note(i * 480, 480, pitches[i % len(pitches)], 80))
        score.tracks.append(track)
    return score


class RandomPitchModel(StepModel):
    """StepModel's times and durations with pitches drawn at random: program 0's pitches 40-90 get
    random logits (fixed by the position), everything else far less; times and durations sampled
    are StepModel's favourites (their logits are sharpened so that sampling keeps to them)."""

    def forward(self, ids, cache=None, last_only=False):
        logits, _ = super().forward(ids, cache, last_only)
        logits = 4 * logits
        if logits[0, 0, ops.NOTE_OFFSET + 62] == 40:
            generator = torch.Generator().manual_seed(len(self.fed))
            logits[0, 0] = -30.0
            logits[0, 0, ops.NOTE_OFFSET + 40:ops.NOTE_OFFSET + 91] = torch.randn(51, generator=generator)
        return logits, None


def _accompany(model, tok, score, melody_track, constraints, seed=1):
    return tasks.accompany(model, tok, score, melody_track=melody_track, prompt_seconds=0.25, end=5.0, seed=seed,
                           top_p=None, constraints=constraints, progress=False)


def _above(result, melody_score):
    return against_melody(result.generated.to("second").clip(0.25, 5.0, clip_end=False).to("tick"), melody_score)


def test_accompaniment_stays_under_the_melody_and_is_free_when_switched_off():
    tok = get_tokenizer("anticipatory")
    model = RandomPitchModel(tok.vocab_size)
    piece = _chorale([[67, 69, 71, 72], [60, 62], [48, 50]])
    melody = tasks._without_tracks(piece, lambda i, t: i == 0)
    on = _accompany(model, tok, piece, 0, MELODY_ONLY)
    free = _accompany(model, tok, piece, 0, OFF)
    stats_on, stats_free = _above(on, melody), _above(free, melody)
    assert stats_on["notes"] >= 15 and stats_free["notes"] >= 15
    assert stats_on["above"] == 0.0                   # an untrained model's notes: none above the melody
    assert stats_free["above"] > 0.3                  # ... which it spreads all over the range when free
    # every note sounding against the melody as it starts (within 0.25 s) is below it
    mel = [(n.time, n.end, n.pitch) for n in melody.to("second").tracks[0].notes]
    for track in on.generated.to("second").tracks:
        for n in track.notes:
            if not track.is_drum:
                against = [p for s, e, p in mel if s < n.time + min(0.25, n.duration) + 1e-6 and e > n.time + 0.02]
                assert not against or n.pitch < min(against)
    # a melody that is not the top part (the bass here) leaves the parts above it free: the same
    # notes as with the constraint off
    bass_on = _accompany(model, tok, piece, 2, MELODY_ONLY)
    bass_free = _accompany(model, tok, piece, 2, OFF)
    assert _onsets(bass_on.generated) == _onsets(bass_free.generated)
    assert tasks.melody_on_top(piece, lambda i, t: i == 0) and not tasks.melody_on_top(piece, lambda i, t: i == 2)


def test_the_under_melody_constraint_is_on_by_default():
    tok = get_tokenizer("anticipatory")
    model = RandomPitchModel(tok.vocab_size)
    piece = _chorale([[67, 69, 71, 72], [60, 62]])
    melody = tasks._without_tracks(piece, lambda i, t: i == 0)
    assert SamplingConstraints().under_melody and not OFF.under_melody
    assert _above(_accompany(model, tok, piece, 0, None), melody)["above"] == 0.0


class PileModel(StepModel):
    """A stand-in model that likes to stack notes: after a note, the latest event time again (else
    25 ticks later); durations of 9 s (else 3 s); pitch 60 of program 0, then 61, 62, ... ."""

    def forward(self, ids, cache=None, last_only=False):
        self.fed.extend(int(i) for i in ids[0])
        last = self.fed[-1]
        logits = torch.zeros(1, 1, self.vocab_size)
        times = [t - ops.TIME_OFFSET for t in self.fed if t < ops.DUR_OFFSET]
        if ops.TIME_OFFSET <= last < ops.DUR_OFFSET or ops.ATIME_OFFSET <= last < ops.ADUR_OFFSET:
            logits[0, 0, ops.DUR_OFFSET + 900] = 10
            logits[0, 0, ops.DUR_OFFSET + 300] = 9
        elif ops.DUR_OFFSET <= last < ops.NOTE_OFFSET or ops.ADUR_OFFSET <= last < ops.ANOTE_OFFSET:
            logits[0, 0, ops.NOTE_OFFSET + 60:ops.NOTE_OFFSET + 100] = 10 - 0.1 * torch.arange(40)
        else:
            latest = max(times) if times else 0
            logits[0, 0, ops.TIME_OFFSET + latest] = 10
            logits[0, 0, ops.TIME_OFFSET + min(ops.MAX_TIME - 1, latest + 25)] = 9
        return logits, None


def _span_notes(constraints, controls=None, end=3.0):
    tok = get_tokenizer("anticipatory")
    original = _score([(0, 0.5, 48)])
    full = tasks.generate_span(PileModel(tok.vocab_size), tok.events(original), start=1.0, end=end, temperature=0,
                               controls=controls, constraints=constraints, max_events=300)
    triples = ops.as_triples(full)
    triples = triples[(triples[:, 0] >= 100) & (triples[:, 2] < ops.REST)]
    return triples[:, 0] - ops.TIME_OFFSET, triples[:, 1] - ops.DUR_OFFSET, triples[:, 2] - ops.NOTE_OFFSET


def test_span_constraints_each_switched_on_alone():
    import dataclasses

    onsets, durations, notes = _span_notes(OFF)                       # all off: one onset, one pitch, 9 s
    assert len(onsets) >= 100 and set(onsets) == {100} and set(notes) == {60} and set(durations) == {900}
    onsets, durations, notes = _span_notes(dataclasses.replace(OFF, max_note_seconds=4.0))
    assert set(durations) == {300}
    onsets, durations, notes = _span_notes(dataclasses.replace(OFF, max_notes_per_position=8))
    assert np.unique(onsets, return_counts=True)[1].max() == 8 and onsets[:9].tolist() == [100] * 8 + [125]
    onsets, durations, notes = _span_notes(dataclasses.replace(OFF, allow_repeated_pitch=False))
    assert set(onsets) == {100} and notes[:40].tolist() == list(range(60, 100))   # its favourites in turn
    assert len(notes) >= 100 and len(set(notes.tolist())) == len(notes)               # then others, none twice


def test_span_polyphony_counts_the_given_music():
    import dataclasses

    tok = get_tokenizer("anticipatory")
    melody = ops.as_triples(tok.events(_score([(1.0, 2.0, 72), (3.0, 2.0, 74)]))) + ops.CONTROL_OFFSET
    cap = dataclasses.replace(OFF, max_polyphony=4, max_note_seconds=4.0)
    onsets, durations, notes = _span_notes(cap, controls=melody.ravel(), end=6.0)
    given = [(100, 300), (300, 500)]
    for t in range(100, 600):
        sounding = ((onsets <= t) & (onsets + durations > t)).sum() + sum(s <= t < e for s, e in given)
        assert sounding <= 4
    assert ((onsets <= 150) & (onsets + durations > 150)).sum() == 3    # three notes beside the melody


def test_texture_voices_reads_the_given_musics_number_of_voices():
    four = np.array([(t, t + 50, p) for t in range(0, 400, 50) for p in (48, 55, 64, 72)])
    assert tasks.texture_voices(four, 400) == 4
    passing = np.concatenate([four, [(25, 50, 60)]])        # one passing note over a held chord
    assert tasks.texture_voices(passing, 400) == 4
    assert tasks.texture_voices(four, 100) == 4 and tasks.texture_voices(four, 50) is None   # four notes: too few
    melody = np.array([(t, t + 50, 72) for t in range(0, 400, 50)])
    assert tasks.texture_voices(melody, 400) is None          # a lone melody sets no texture


def test_keep_texture_caps_a_span_at_the_voices_of_the_music_before_it():
    import dataclasses

    tok = get_tokenizer("anticipatory")
    original = _chorale([[72, 74], [64, 65], [55, 57]], seconds=2)     # three voices for 2 s
    model = PileModel(tok.vocab_size)

    def most_sounding(constraints):
        full = tasks.generate_span(model, tok.events(original), start=2.0, end=4.0, temperature=0,
                                   constraints=constraints, max_events=200)
        triples = ops.as_triples(full)
        triples = triples[(triples[:, 0] - ops.TIME_OFFSET >= 200) & (triples[:, 2] < ops.REST)]
        onsets, ends = triples[:, 0] - ops.TIME_OFFSET, triples[:, 0] - ops.TIME_OFFSET + triples[:, 1] - ops.DUR_OFFSET
        return max(((onsets <= t) & (ends > t)).sum() for t in range(200, 400))

    assert SamplingConstraints().keep_texture and not OFF.keep_texture
    polyphony = dataclasses.replace(OFF, max_polyphony=8, max_note_seconds=4.0)
    assert most_sounding(polyphony) == 8
    assert most_sounding(dataclasses.replace(polyphony, keep_texture=True)) == 3
    assert most_sounding(dataclasses.replace(OFF, keep_texture=True, max_note_seconds=4.0)) == 3


def test_fill_voices_takes_a_stopped_voice_up_again_where_it_stopped():
    import dataclasses
    from types import SimpleNamespace

    def event(start, duration, pitch):
        return np.array([ops.TIME_OFFSET + start, ops.DUR_OFFSET + duration, ops.NOTE_OFFSET + pitch])

    def time_logits(history, texture=4, controls=np.zeros((0, 3), np.int64), **fields):
        span = SimpleNamespace(slot=0, current=int(history[-1][0] - ops.TIME_OFFSET), history=list(history),
                               window=SimpleNamespace(offset=0))
        constraints = dataclasses.replace(OFF, **{"keep_texture": True, "fill_voices": 3.0, **fields})
        out = tasks.SpanConstraints(span, constraints, controls, texture)(None, torch.zeros(1, ops.VOCAB_SIZE))[0]
        return out[ops.TIME_OFFSET:ops.TIME_OFFSET + ops.MAX_TIME]

    def rest_from(logits):
        """Where the gap opens: the first onset that pays the penalty, less the tolerance."""
        paid = np.flatnonzero((logits == -3.0).numpy())
        return int(paid[0]) - tasks.FILL_TOLERANCE if len(paid) else None

    chord = [event(100, 50, p) for p in (48, 55, 64, 72)]
    full = time_logits(chord)                                                  # all four end at 150: go on there
    assert rest_from(full) == 150 and (full[153:] == -3.0).all() and (full[150:153] == 0).all()
    assert torch.isinf(full[100:150]).all()                                   # (the texture's polyphony cap)
    tenor_stops = chord[:1] + [event(100, 20, 55)] + chord[2:]                 # a voice rests from 120
    assert rest_from(time_logits(tenor_stops)) == 120
    assert rest_from(time_logits(chord[:2])) == 100                           # half a chord: finish it first
    quantized = chord[:1] + [event(100, 48, 55)] + chord[2:]                  # 20 ms short: no rest
    assert rest_from(time_logits(quantized)) == 148 and time_logits(quantized)[150] == 0
    stutter = tenor_stops + [event(122, 28, 55)]                              # a 20 ms gap filled: no rest
    assert rest_from(time_logits(stutter)) == 150
    # a given (control) note fills the tenor's rest: the gap opens at 150
    control = np.array([[ops.ATIME_OFFSET + 120, ops.ADUR_OFFSET + 30, ops.ANOTE_OFFSET + 57]])
    assert rest_from(time_logits(tenor_stops, controls=control)) == 150
    assert rest_from(time_logits(chord, texture=None)) is None                # no texture given: nothing
    assert rest_from(time_logits(chord, keep_texture=False)) is None
    assert SamplingConstraints().fill_voices and OFF.fill_voices is None


def test_melody_consonance_lowers_harsh_intervals_struck_with_a_melody_note_and_nothing_else():
    melody = np.array([(100, 200, 67), (200, 300, 60)])
    logits = torch.randn(1, ops.VOCAB_SIZE, generator=torch.Generator().manual_seed(0))
    pitch = (torch.arange(ops.VOCAB_SIZE) - ops.NOTE_OFFSET) % ops.MAX_PITCH
    pitched = (torch.arange(ops.VOCAB_SIZE) >= ops.NOTE_OFFSET) & \
        (torch.arange(ops.VOCAB_SIZE) < ops.NOTE_OFFSET + ops.DRUMS * ops.MAX_PITCH)
    for onset, top in ((100, 67), (201, 60), (99, 67)):
        out = tasks.MelodyConsonance(_FakeSpan(onset, 50), melody, 2.0)(None, logits.clone())
        harsh = pitched & torch.isin((pitch - top).abs() % 12, torch.tensor([1, 2, 6, 10, 11]))
        assert torch.allclose(out[0][harsh], logits[0][harsh] - 2.0) and torch.equal(out[0][~harsh], logits[0][~harsh])
        assert harsh[ops.NOTE_OFFSET + top + 6] and harsh[ops.NOTE_OFFSET + ops.MAX_PITCH + top - 1]   # any program
        assert not harsh[ops.NOTE_OFFSET + top - 3] and not harsh[ops.NOTE_OFFSET + top - 12]
    for onset in (150, 250, 400):          # against a held melody note, or in a rest: untouched
        assert torch.equal(tasks.MelodyConsonance(_FakeSpan(onset, 50), melody, 2.0)(None, logits.clone()), logits)


def test_the_dissonance_guard_is_on_by_default_and_acts_on_accompaniment():
    import dataclasses

    tok = get_tokenizer("anticipatory")
    model = RandomPitchModel(tok.vocab_size)
    piece = _chorale([[67, 69, 71, 72], [60, 62]], seconds=12)
    melody = tasks._without_tracks(piece, lambda i, t: i == 0)
    assert SamplingConstraints().melody_dissonance_penalty == 2.0 and OFF.melody_dissonance_penalty is None

    def struck_harsh(constraints):
        count = total = 0
        for seed in range(4):
            result = tasks.accompany(model, tok, piece, melody_track=0, prompt_seconds=0.25, end=10.0, seed=seed,
                                     top_p=None, constraints=constraints, progress=False)
            mel = {round(n.time, 2): n.pitch for n in melody.to("second").tracks[0].notes}
            for track in result.generated.to("second").tracks:
                for n in track.notes:
                    if round(n.time, 2) in mel:
                        total += 1
                        count += abs(n.pitch - mel[round(n.time, 2)]) % 12 in (1, 2, 6, 10, 11)
        return count / total

    guarded, free = struck_harsh(dataclasses.replace(OFF, melody_dissonance_penalty=2.0)), struck_harsh(OFF)
    assert free > 0.3 and guarded < free / 2      # random pitches: 5 in 12 harsh; guarded about 5 in 47


def test_accompany_command_switches_the_melody_constraints(monkeypatch, tmp_path):
    from cadenza.cli import anticipation as cli
    from cadenza.cli.main import build_parser

    seen = []
    piece = _chorale([[67, 69], [60, 62]], seconds=2)
    monkeypatch.setattr(cli, "_load", lambda args: (piece, None, None, {}))
    monkeypatch.setattr(cli, "_write", lambda result, args, what: 0)
    monkeypatch.setattr(tasks, "accompany", lambda *a, constraints, **k: seen.append(constraints))
    for extra in ([], ["--above-melody"], ["--dissonance-penalty", "0"], ["--dissonance-penalty", "3.5"],
                  ["--hold-bonus", "0"]):
        args = build_parser().parse_args(["accompany", "x.mid", "--melody-track", "0", "-o", str(tmp_path / "o.mid"),
                                          *extra])
        assert args.func(args) == 0
    assert [(c.under_melody, c.melody_dissonance_penalty, c.melody_hold_bonus) for c in seen] == \
        [(True, 2.0, 4.5), (False, 2.0, 4.5), (True, None, 4.5), (True, 3.5, 4.5), (True, 2.0, None)]
    assert all(c.max_polyphony == SamplingConstraints().max_polyphony for c in seen)   # the rest as default


def test_span_constraints_are_on_by_default_in_infill():
    tok = get_tokenizer("anticipatory")
    original = _score([(i * 0.5, 0.5, 48) for i in range(24)])
    result = tasks.infill(PileModel(tok.vocab_size), tok, original, 4.0, 6.0, temperature=0, progress=False)
    notes = [(round(n.time, 2), round(n.end, 2), n.pitch) for t in result.generated.to("second").tracks for n in t.notes]
    onsets = [t for t, _, _ in notes]
    assert len(notes) >= 8 and max(e - t for t, e, _ in notes) <= 4.0          # 3 s, not the model's 9 s
    assert max(onsets.count(t) for t in set(onsets)) <= 8 and len(set(notes)) == len(notes)
    assert all(sum(t <= x < e for t, e, _ in notes) <= 8 for x in np.arange(4.0, 10.0, 0.05))
    free = tasks.infill(PileModel(tok.vocab_size), tok, original, 4.0, 6.0, temperature=0, progress=False,
                        constraints=OFF, max_events=200)
    assert free.generated_events > 150                                           # piled on one onset to the budget


def test_span_voice_leading_penalizes_parallel_fifths_with_given_and_new_notes():
    from types import SimpleNamespace

    from cadenza.symbolic.anticipation_tasks import SpanVoiceLeading
    from cadenza.tokenizers import anticipation_ops as ops

    def event(start, duration, pitch, instrument=0):
        return [ops.TIME_OFFSET + start, ops.DUR_OFFSET + duration, ops.NOTE_OFFSET + instrument * ops.MAX_PITCH + pitch]

    # C4 and G4 from 0 to 50 ticks (new music), D4 given as a control from 50: A4 at 50 moves in fifths with it
    span = SimpleNamespace(slot=2, triple=[ops.TIME_OFFSET + 50, ops.DUR_OFFSET + 50],
                           history=[np.array(event(0, 50, 60)), np.array(event(0, 50, 67))])
    control = np.array([ops.ATIME_OFFSET + 50, ops.ADUR_OFFSET + 50, ops.ANOTE_OFFSET + 62])
    guard = SpanVoiceLeading(span, control, 3.0)
    logits = guard(None, torch.zeros(1, ops.SPECIAL_OFFSET))[0]
    for instrument in (0, 5):
        assert logits[ops.NOTE_OFFSET + instrument * ops.MAX_PITCH + 69] == -3.0
        assert logits[ops.NOTE_OFFSET + instrument * ops.MAX_PITCH + 65] == 0
    assert logits[ops.NOTE_OFFSET + ops.DRUMS * ops.MAX_PITCH + 69] == 0     # drums are not voices
    span.triple = [ops.TIME_OFFSET + 40, ops.DUR_OFFSET + 50]                # an onset where nothing ended
    assert not guard(None, torch.zeros(1, ops.SPECIAL_OFFSET)).any()
    # after a rest the voices are the chord before it: C4 and G4 end at 30, D4 and A4 come at 50
    span.triple, span.history = [ops.TIME_OFFSET + 50, ops.DUR_OFFSET + 50], [np.array(event(0, 30, p)) for p in (60, 67)]
    rest = SpanVoiceLeading(span, control, 3.0)(None, torch.zeros(1, ops.SPECIAL_OFFSET))[0]
    assert rest[ops.NOTE_OFFSET + 69] == -3.0 and rest[ops.NOTE_OFFSET + 65] == 0
    # a note that began and ended between the two onsets is no voice of the chord before
    from cadenza.tokenizers.grammar import parallel_pitches

    span.history = [np.array(event(0, 50, 60)), np.array(event(0, 10, 64)), np.array(event(20, 30, 67))]
    assert SpanVoiceLeading(span, control, 3.0).moving(50) == parallel_pitches([60, 67], [62], upward=True)
    # a kept melody (controls) C5 -> G4 is a voice traced already: the bass written first, C3 -> G3,
    # would move in octaves with it
    melody = np.array([[ops.ATIME_OFFSET + 0, ops.ADUR_OFFSET + 50, ops.ANOTE_OFFSET + 72],
                       [ops.ATIME_OFFSET + 50, ops.ADUR_OFFSET + 50, ops.ANOTE_OFFSET + 67]])
    span.history = [np.array(event(0, 50, p)) for p in (48, 60, 64)]
    assert 55 in SpanVoiceLeading(span, melody, 3.0).moving(50)


def test_span_phrase_bonus_holds_a_triad_on_the_beat_after_a_long_phrase():
    from types import SimpleNamespace

    from cadenza.symbolic.anticipation_tasks import SpanPhrase, SpanVoiceLeading
    from cadenza.tokenizers import anticipation_ops as ops

    def event(start, duration, pitch):
        return np.array([ops.TIME_OFFSET + start, ops.DUR_OFFSET + duration, ops.NOTE_OFFSET + pitch])

    def bonus(history, onset, duration=None, end_tick=600, phrase_beats=6.0, parallels=False):
        """Ids the guard raises at the duration slot of a note at ``onset`` (ticks), or at its
        note slot given its ``duration``; a beat is 50 ticks (120 qpm)."""
        triple = [ops.TIME_OFFSET + onset] + ([] if duration is None else [ops.DUR_OFFSET + duration])
        span = SimpleNamespace(slot=1 if duration is None else 2, triple=triple, history=list(history))
        leading = SpanVoiceLeading(span, np.zeros((0, 3), np.int64), 3.0) if parallels else None
        guard = SpanPhrase(span, (0.0, 50.0), end_tick, 2.0, phrase_beats, leading)
        raised = np.flatnonzero(guard(None, torch.zeros(1, ops.SPECIAL_OFFSET))[0].numpy() == 2.0)
        return raised - (ops.DUR_OFFSET if duration is None else ops.NOTE_OFFSET), leading

    # six beats of four-note chords, then the chord on beat 7
    c_major, f_major = (48, 55, 64, 72), (53, 57, 60, 65)
    phrase = [event(50 * beat, 50, p) for beat in range(6) for p in (c_major if beat % 2 == 0 else f_major)]
    # the bass's duration: two to four beats (100-200 ticks, within 2), ending in the span
    assert bonus(phrase, 300)[0].tolist() == list(range(98, 203))
    assert bonus(phrase, 300, end_tick=450)[0].max() == 150
    # the bass held two beats: the pitches above it on the way to a C major or minor triad
    bass = phrase + [event(300, 100, 48)]
    pitches = set(bonus(bass, 300, duration=100)[0].tolist())
    assert {51, 52, 55, 60, 64, 67} <= pitches and not pitches & {48, 50, 53, 57, 59, 61} and min(pitches) > 48
    assert not len(bonus(bass, 300, duration=50)[0])                 # a note not held: nothing
    # a pitch that would move in parallels gets no bonus: over bass 53 -> 48 and tenor 57 -> 55,
    # the alto 60 going to G makes fifths with the bass (the voices traced bass up)
    raised, leading = bonus(bass + [event(300, 100, 55)], 300, duration=100, parallels=True)
    assert 67 in leading.moving(300) and 67 not in set(raised.tolist()) and 64 in set(raised.tolist())
    # no bonus: off the beat, a short phrase, a bass not held, after a fourth above the bass
    assert not len(bonus(phrase + [event(325, 100, 48)], 325)[0])
    assert not len(bonus(phrase, 300, phrase_beats=8.0)[0])
    assert not len(bonus(phrase + [event(300, 50, 48)], 300)[0])
    assert not len(bonus(bass + [event(300, 100, 53)], 300)[0])
    # after a held chord the phrase begins again
    ended = phrase + [event(300, 100, p) for p in c_major] + \
        [event(400 + 50 * beat, 50, p) for beat in range(6) for p in f_major]
    assert not len(bonus(ended[:-12], 550)[0]) and len(bonus(ended, 700, end_tick=900)[0])


def test_melody_hold_keeps_the_parts_still_under_a_held_melody_note_and_holds_a_triad_with_it():
    from types import SimpleNamespace

    def event(start, duration, pitch):
        return np.array([ops.TIME_OFFSET + start, ops.DUR_OFFSET + duration, ops.NOTE_OFFSET + pitch])

    # a beat is 50 ticks; the melody: quarters, then a half note on beat 4 (200-300), then a quarter off the
    # beat that is long but not struck on a beat (325-425)
    melody = np.array([(0, 50, 72), (50, 100, 71), (100, 150, 69), (150, 200, 71), (200, 300, 72), (325, 425, 74)])

    def raised(slot, current=0, triple=(), history=(), voices=4):
        span = SimpleNamespace(slot=slot, current=current, triple=list(triple), history=list(history),
                               window=SimpleNamespace(offset=0))
        out = tasks.MelodyHold(span, melody, (0.0, 50.0), 3.0, voices)(None, torch.zeros(1, ops.SPECIAL_OFFSET))[0]
        return out.numpy()

    times = raised(0, current=150)[ops.TIME_OFFSET:ops.TIME_OFFSET + 500]
    assert (times[203:298] == -3).all() and (times[:203] == 0).all() and (times[298:] == 0).all()  # only the half note
    assert (raised(0, current=250)[ops.TIME_OFFSET + 250:ops.TIME_OFFSET + 298] == -3).all()
    # at the half note's onset, with the melody and one part sounding: one more note there is favoured
    here = [event(200, 100, 48)]
    at = raised(0, current=200, history=here)
    assert at[ops.TIME_OFFSET + 200] == 3 and raised(0, current=200, history=here * 3)[ops.TIME_OFFSET + 200] == 0
    # a note struck with it: the durations that end with it
    durations = np.flatnonzero(raised(1, triple=[ops.TIME_OFFSET + 200]) == 3) - ops.DUR_OFFSET
    assert durations.min() == 98 and durations.max() == 125
    assert not (raised(1, triple=[ops.TIME_OFFSET + 150]) != 0).any()      # a quarter of the melody: nothing
    assert not (raised(1, triple=[ops.TIME_OFFSET + 325]) != 0).any()      # off the beat: nothing
    # its pitch: the bass of a triad the melody's C belongs to (C, A, F, Ab: root, third or fifth under it)
    bass = set((np.flatnonzero(raised(2, triple=[ops.TIME_OFFSET + 200, ops.DUR_OFFSET + 100]) == 3)
                - ops.NOTE_OFFSET).tolist())
    assert {48, 45, 53, 57, 60, 56} <= bass and max(bass) < 72 and not bass & {50, 52, 55, 59}
    # over a held bass of C, the notes that keep a C major or minor triad under the melody
    above = set((np.flatnonzero(raised(2, triple=[ops.TIME_OFFSET + 200, ops.DUR_OFFSET + 100], history=here) == 3)
                 - ops.NOTE_OFFSET).tolist())
    assert {51, 52, 55, 60, 64, 67} <= above and not above & {49, 50, 53, 57, 59} and min(above) > 48
    assert not (raised(2, triple=[ops.TIME_OFFSET + 200, ops.DUR_OFFSET + 50]) != 0).any()   # a note not held


class ChoiceModel(RandomPitchModel):
    """RandomPitchModel with a few likely times and durations instead of one: the next onset 25,
    50 or 100 ticks after the latest (logits 3, 2.5, 2), durations of 20, 50 or 100 ticks (3, 2.5, 2)."""

    def forward(self, ids, cache=None, last_only=False):
        logits, cache = super().forward(ids, cache, last_only)
        last = self.fed[-1]
        if ops.TIME_OFFSET <= last < ops.DUR_OFFSET or ops.ATIME_OFFSET <= last < ops.ADUR_OFFSET:
            logits[0, 0, ops.DUR_OFFSET:ops.NOTE_OFFSET] = -20
            for ticks, logit in ((20, 3.0), (50, 2.5), (100, 2.0)):
                logits[0, 0, ops.DUR_OFFSET + ticks] = logit
        elif not (ops.DUR_OFFSET <= last < ops.NOTE_OFFSET or ops.ADUR_OFFSET <= last < ops.ANOTE_OFFSET):
            times = [t - ops.TIME_OFFSET for t in self.fed if t < ops.DUR_OFFSET]
            latest = max(times) if times else 0
            logits[0, 0, ops.TIME_OFFSET:ops.DUR_OFFSET] = -20
            for ticks, logit in ((25, 3.0), (50, 2.5), (100, 2.0)):
                logits[0, 0, ops.TIME_OFFSET + min(ops.MAX_TIME - 1, latest + ticks)] = logit
        return logits, cache


def test_the_melody_hold_is_on_by_default_and_keeps_accompaniments_still_under_long_melody_notes():
    import dataclasses

    assert SamplingConstraints().melody_hold_bonus == 4.5 and OFF.melody_hold_bonus is None
    tok = get_tokenizer("anticipatory")
    model = ChoiceModel(tok.vocab_size)
    piece = _chorale([[67, 69, 71, 72], [60, 62]], seconds=12)
    melody = piece.tracks[0]
    melody.notes.clear()                           # half notes (1 s at 120 qpm), each struck on a beat
    for i in range(12):
        melody.notes.append(symusic.Note(i * 960, 960, (67, 69, 71, 72)[i % 4], 80))

    def moving(constraints):
        inside = total = 0
        for seed in range(3):
            result = tasks.accompany(model, tok, piece, melody_track=0, prompt_seconds=0.25, end=10.0, seed=seed,
                                     top_p=None, constraints=constraints, progress=False)
            for track in result.generated.to("second").tracks:
                late = [n for n in track.notes if n.time > 1.0]
                total += len(late)
                inside += sum(1 for n in late if abs(n.time - round(n.time)) > 0.05)
        return inside / total

    free, held = moving(OFF), moving(dataclasses.replace(OFF, melody_hold_bonus=4.5))
    assert free > 0.5 and held < free / 3


def test_rests_on_the_command_line_switches_fill_voices_off():
    from types import SimpleNamespace

    from cadenza.cli.anticipation import _rests

    assert _rests(SimpleNamespace(rests=False), None) == SamplingConstraints()
    assert _rests(SimpleNamespace(rests=True), None).fill_voices is None
    kept = _rests(SimpleNamespace(rests=True), SamplingConstraints(under_melody=False))
    assert not kept.under_melody and kept.fill_voices is None
