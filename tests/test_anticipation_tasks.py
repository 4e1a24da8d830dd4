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
