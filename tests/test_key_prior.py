"""The key prior of continuations: a soft bias against notes outside the prompt's scale."""

from __future__ import annotations

import dataclasses

import numpy as np
import symusic
import torch

from cadenza.data.theory import Key, scale_pitch_classes
from cadenza.symbolic.sampling import continue_score, key_bias
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig
from cadenza.tokenizers import get_tokenizer
from cadenza.tokenizers.grammar import SamplingConstraints


def _scale_tune(tonic=2, qpm=120.0):
    """D major up and down, in quarters."""
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=qpm))
    track = symusic.Track("s", 0, False)
    for i, degree in enumerate([0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2, 0, 7, 0]):
        track.notes.append(symusic.Note(i * 480, 480, 60 + tonic + degree, 80))
    score.tracks.append(track)
    return score


def test_scales_of_major_and_minor_keys():
    assert scale_pitch_classes(Key(2, "major", 1.0)).tolist() == [1, 2, 4, 6, 7, 9, 11]
    assert scale_pitch_classes(Key(9, "minor", 1.0)).tolist() == [0, 2, 4, 5, 6, 7, 8, 9, 11]  # F#, G#: raised


def test_onset_pitches_name_the_note_starting_ids():
    event, remi = get_tokenizer("event"), get_tokenizer("remi")
    pitches = event.onset_pitches()
    assert pitches[:128].tolist() == list(range(128)) and (pitches[128:] == -1).all()   # NOTE_OFF etc: none
    remi_pitches = remi.onset_pitches()
    names = [remi.token_to_str(i) for i in range(remi.base_vocab_size)]
    assert remi_pitches[names.index("Pitch_60")] == 60
    assert all(name.startswith("Pitch_") for name, pitch in zip(names, remi_pitches) if pitch >= 0)
    assert (remi_pitches >= 0).sum() == sum(name.startswith("Pitch_") for name in names)


def test_the_bias_falls_on_notes_outside_the_scale_only():
    tok = get_tokenizer("event")
    bias = key_bias(tok, _scale_tune(), 1.5).numpy()
    outside = [p for p in range(128) if p % 12 not in (1, 2, 4, 6, 7, 9, 11)]
    assert np.all(bias[outside] == -1.5) and np.all(np.delete(bias[:128], outside) == 0)
    assert np.all(bias[128:] == 0)                                   # time, NOTE_OFF, velocity untouched
    assert key_bias(tok, symusic.Score(480), 1.5) is None


def test_a_strong_prior_keeps_an_untrained_models_notes_in_the_key():
    tok = get_tokenizer("event")
    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig.debug(tok.vocab_size)).eval()
    scale = {1, 2, 4, 6, 7, 9, 11}

    def new_pitches(prior):
        constraints = dataclasses.replace(SamplingConstraints(), key_prior=prior)
        out = continue_score(model, tok, _scale_tune(), seconds=4, num_samples=2, seed=0, progress=False,
                             constraints=constraints)
        return [n.pitch % 12 for s in out for t in s.tracks for n in t.notes if n.time >= 17 * 480]

    free, kept = new_pitches(None), new_pitches(30.0)
    assert len(kept) >= 5 and all(pc in scale for pc in kept)
    assert any(pc not in scale for pc in free)                       # untrained: anything goes without it


def test_the_prior_is_on_by_default_and_off_with_the_others():
    assert SamplingConstraints().key_prior == 1.0 and SamplingConstraints.off().key_prior is None


def test_infill_and_accompaniment_prefer_the_given_musics_key_at_the_note_slot():
    from types import SimpleNamespace

    from cadenza.symbolic.anticipation_tasks import SpanKey
    from cadenza.tokenizers import anticipation_ops as ops

    tune = _scale_tune()                                             # D major
    triples = np.array([[ops.TIME_OFFSET + n.time // 48, ops.DUR_OFFSET + 50, ops.NOTE_OFFSET + n.pitch]
                        for n in tune.tracks[0].notes], np.int64)
    span = SimpleNamespace(slot=2)
    prior = SpanKey.of(span, triples, 1.5)
    logits = prior(None, torch.zeros(1, ops.VOCAB_SIZE))[0]
    pitch_of = lambda instrument, pitch: ops.NOTE_OFFSET + instrument * ops.MAX_PITCH + pitch  # noqa: E731
    assert logits[pitch_of(0, 61)] == 0 and logits[pitch_of(40, 66)] == 0      # C#, F#: in D major
    assert logits[pitch_of(0, 60)] == -1.5 and logits[pitch_of(40, 65)] == -1.5  # C, F: not, any instrument
    assert logits[pitch_of(ops.DRUMS, 60)] == 0                               # drums are not in a key
    assert logits[:ops.NOTE_OFFSET].abs().sum() == 0                          # times and durations untouched
    span.slot = 0
    assert prior(None, torch.zeros(1, ops.VOCAB_SIZE)).abs().sum() == 0   # only at the note slot
    assert SpanKey.of(span, triples[:0], 1.5) is None
