"""The metric grid of a prompt, and Event sampling kept on it: time counted in 10 ms steps
drifts off the beat at every shift unless sampling keeps it there (at 96 qpm a sixteenth is 15.625
steps), and a continuation that leaves its bars engraves as nonsense."""

from __future__ import annotations

import dataclasses

import numpy as np
import symusic
import torch

from cadenza.data.context import beat_grid, metric_grid
from cadenza.data.theory import broken_passage
from cadenza.symbolic.sampling import continue_score
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig
from cadenza.tokenizers import get_tokenizer
from cadenza.tokenizers.grammar import SamplingConstraints

OFF = SamplingConstraints.off()


def _chorale(qpm=96.0, tpq=480, beats=8, jitter_ticks=0, seed=0):
    """Four voices in quarters and eighths at ``qpm``; ``jitter_ticks`` moves each onset at random."""
    rng = np.random.default_rng(seed)
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, qpm=qpm))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for voice, base in enumerate((72, 65, 60, 48)):
        track = symusic.Track(f"v{voice}", 0, False)
        t = 0
        while t < beats * tpq:
            length = tpq if rng.random() < 0.7 else tpq // 2
            shift = int(rng.integers(-jitter_ticks, jitter_ticks + 1)) if jitter_ticks else 0
            track.notes.append(symusic.Note(max(0, t + shift), length, base + int(rng.integers(0, 5)), 80))
            t += length
        score.tracks.append(track)
    return score


def test_a_quantized_prompt_has_a_sixteenth_grid_and_a_performance_none():
    origin, period = metric_grid(_chorale(96.0))
    assert origin == 0.0 and abs(period - 60 / 96 / 4) < 1e-12
    assert metric_grid(_chorale(96.0, jitter_ticks=40)) is None          # free timing: no grid
    triplets = _chorale(120.0)
    for track in triplets.tracks:
        track.notes.extend(symusic.Note(3840 + i * 160, 160, 70, 80) for i in range(30))
    assert abs(metric_grid(triplets)[1] - 60 / 120 / 12) < 1e-12         # triplets: a finer grid
    assert metric_grid(symusic.Score(480)) is None


def test_the_beat_a_phrase_is_counted_in_is_the_quarter_of_the_last_tempo():
    assert beat_grid(_chorale(96.0)) == (0.0, 60 / 96)
    score = _chorale(120.0)
    score.tempos.append(symusic.Tempo(4 * 480, qpm=80.0))
    origin, beat = beat_grid(score)
    assert origin == metric_grid(score)[0] and abs(origin - 2.0) < 1e-9 and beat == 60 / 80
    assert beat_grid(_chorale(96.0, jitter_ticks=40)) is None


def test_the_grid_follows_the_last_tempo():
    score = _chorale(120.0)
    score.tempos.append(symusic.Tempo(4 * 480, qpm=80.0))
    origin, period = metric_grid(score)
    assert abs(origin - 2.0) < 1e-9 and abs(period - 60 / 80 / 4) < 1e-12


def _drifting_model(tok):
    """An untrained model that likes TIME_SHIFTs of 7 and 11 steps, which no sixteenth grid keeps."""
    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig.debug(tok.vocab_size)).eval()
    bias = torch.zeros(tok.vocab_size)
    bias[[tok.time_shift_offset + 6, tok.time_shift_offset + 10]] = 6.0
    original = model.forward

    def forward(*args, **kwargs):
        logits, loss = original(*args, **kwargs)
        return (None if logits is None else logits + bias), loss

    model.forward = forward
    return model


def _new_onsets(score, prompt_beats=8):
    """Onsets after the prompt, in sixteenths."""
    beats = np.array([n.time for t in score.tracks for n in t.notes], float) / score.ticks_per_quarter
    return beats[beats >= prompt_beats] * 4


def test_event_continuations_stay_on_the_prompts_grid_and_drift_without_it():
    tok = get_tokenizer("event")
    prompt = _chorale(96.0)
    model = _drifting_model(tok)
    on = continue_score(model, tok, prompt, seconds=6, num_samples=2, seed=0, progress=False)
    grid_off = dataclasses.replace(SamplingConstraints(), metric_grid=False)
    off = continue_score(model, tok, prompt, seconds=6, num_samples=2, seed=0, progress=False, constraints=grid_off)
    for score in on:
        steps = _new_onsets(score)
        assert len(steps) >= 4                                             # it did write music
        # within a tenth of a sixteenth, the benchmark's own test of a broken passage
        assert np.abs(steps - np.round(steps)).max() <= 0.1
        assert not broken_passage(score)["off_grid"]
    for score in off:                                                      # 7 and 11 steps: off the beat
        steps = _new_onsets(score)
        assert np.mean(np.abs(steps - np.round(steps)) > 0.1) > 0.3


def test_event_notes_never_end_where_they_begin():
    tok = get_tokenizer("event")
    grammar = tok.grammar(SamplingConstraints())
    grammar.reset(np.asarray([[tok.bos_id, 60, tok.time_shift_offset + 49, 62]], np.int64))
    allowed = np.flatnonzero(grammar.allowed()[0])
    assert tok.note_off_offset + 60 in allowed                 # begun a step ago: may end
    assert tok.note_off_offset + 62 not in allowed             # begun now: may not
    free = tok.grammar(OFF)
    free.reset(np.asarray([[tok.bos_id, 62]], np.int64))
    assert tok.note_off_offset + 62 in np.flatnonzero(free.allowed()[0])
