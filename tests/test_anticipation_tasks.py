"""Infilling and accompaniment: the sampling loop respects the span, the controls and time order."""

from __future__ import annotations

import numpy as np
import pytest
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.symbolic import anticipation_tasks as tasks
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig
from cadenza.tokenizers import anticipation_ops as ops
from cadenza.tokenizers import get_tokenizer


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
