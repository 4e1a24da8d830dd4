"""The framewise piano transcriber: labels, decoding of constructed activations with known notes,
chunked inference equal to whole-file inference, silence, any sample rate and channel count,
training with bit-exact resume, the data pipeline's label rules, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

from cadenza.transcription.framewise import (KEYS, MIN_PITCH, DecodeSettings, FramewiseConfig, FramewiseTranscriber,
                                             NoteDecoder, decode_notes, framewise_loss, note_rolls)
from cadenza.transcription.inference import transcribe, transcription_scores
from cadenza.tokenizers.mt3 import MT3Tokenizer, notes_to_score

from conftest import run_cli
from test_transcription import tones

SR = 16000
HOP = 256 / SR  # seconds per frame


def activations(notes, frames: int) -> dict[str, np.ndarray]:
    """Ideal probabilities for (start, end, pitch, velocity) notes: a peaked onset, sounding frames."""
    rolls = note_rolls(notes, frames, HOP)
    onset = rolls["onset"] * 0.9
    onset[1:] += rolls["onset"][:-1] * 0.3  # a smeared peak, as a network gives
    onset[:-1] += rolls["onset"][1:] * 0.2
    frame = np.clip(rolls["frame"] * 0.9 + 0.05, 0, 1)
    velocity = np.zeros_like(onset)
    for start, _, pitch, vel in notes:
        velocity[int(round(start / HOP)), pitch - MIN_PITCH] = vel / 127
    return {"onset": onset, "frame": frame, "offset": rolls["offset"] * 0.2, "velocity": velocity}


KNOWN = [(0.0, 0.48, 60, 80), (0.16, 1.6, 64, 30), (0.16, 0.8, 67, 100), (0.96, 1.28, 60, 64),
         (1.28, 1.6, 60, 64), (2.0, 2.08, 108, 127), (2.0, 2.4, 21, 5)]


def test_note_rolls_mark_onsets_frames_offsets_and_velocity():
    rolls = note_rolls([(0.16, 0.48, 60, 127), (0.32, 0.4, 21, 1)], frames=40, hop_seconds=HOP)
    key = 60 - MIN_PITCH
    assert rolls["onset"][:, key].nonzero()[0].tolist() == [10]
    assert rolls["frame"][:, key].nonzero()[0].tolist() == list(range(10, 30))
    assert rolls["offset"][:, key].nonzero()[0].tolist() == [30]
    assert rolls["velocity"][10, key] == 1.0 and rolls["velocity"][20, 0] == pytest.approx(1 / 127)
    assert rolls["velocity_mask"].sum() == 2 and rolls["onset"].shape == (40, KEYS)


def test_quiet_weight_makes_a_missed_quiet_onset_cost_more_than_a_loud_one():
    rolls = note_rolls([(0.16, 0.48, 60, 10), (0.16, 0.48, 72, 120)], frames=40, hop_seconds=HOP)
    targets = {k: torch.as_tensor(v)[None] for k, v in rolls.items()}
    silent = {name: torch.full((1, 40, KEYS), -6.0) for name in ("onset", "offset", "frame", "velocity")}
    plain = framewise_loss(silent, targets, 4.0)[1]
    assert framewise_loss(silent, targets, 4.0, quiet_weight=0.0)[1] == plain
    weighted = framewise_loss(silent, targets, 4.0, quiet_weight=2.0)[1]
    assert weighted["onset"] > plain["onset"] and weighted["frame"] == plain["frame"]

    # two onsets in one frame, vel 10 and 120; every other frame confidently silent
    zeros = torch.zeros(1, 40, KEYS)
    onsets = {k: zeros.clone() for k in ("onset", "offset", "frame", "velocity", "velocity_mask")}
    for pitch, velocity in ((60, 10), (72, 120)):
        for name, value in (("onset", 1.0), ("velocity", velocity / 127), ("velocity_mask", 1.0)):
            onsets[name][0, 8, pitch - MIN_PITCH] = value

    def onset_loss(missed: tuple[int, ...]) -> float:
        outputs = {k: torch.full((1, 40, KEYS), -20.0) for k in ("onset", "offset", "frame", "velocity")}
        for pitch in (60, 72):
            outputs["onset"][0, 8, pitch - MIN_PITCH] = -2.0 if pitch in missed else 20.0
        return framewise_loss(outputs, onsets, 4.0, quiet_weight=2.0)[1]["onset"]

    none = onset_loss(())
    quiet, loud = onset_loss((60,)) - none, onset_loss((72,)) - none
    ratio = (1 + 2 * (1 - 10 / 127)) / (1 + 2 * (1 - 120 / 127))
    assert quiet > loud and quiet / loud == pytest.approx(ratio, rel=0.05)


def test_decoding_constructed_activations_gives_the_known_notes():
    notes = decode_notes(activations(KNOWN, 200), HOP)
    assert [(p, v) for _, _, p, v in notes] == [(p, v) for _, _, p, v in sorted(KNOWN)]
    for (start, end, *_), (s, e, *_) in zip(notes, sorted(KNOWN)):
        assert abs(start - s) < 0.25 * HOP + 1e-9  # the parabola refines a smeared peak within a frame
        assert abs(end - e) < 1e-9
    # repeated notes of one key: the second onset ends the first even while frames stay on
    held = activations([(0.0, 1.0, 70, 90)], 100)
    held["onset"][40, 70 - MIN_PITCH] = 0.95
    starts = [(round(s / HOP), round(e / HOP)) for s, e, *_ in decode_notes(held, HOP)]
    assert starts == [(0, 40), (40, 62)]
    # below the onset threshold nothing starts, however long the frames sound
    quiet = activations(KNOWN, 200)
    quiet["onset"] *= 0.4
    assert decode_notes(quiet, HOP) == []


def test_a_weaker_onset_counts_where_the_frame_head_confirms_a_new_note():
    quiet = activations(KNOWN, 200)
    quiet["onset"] *= 0.4  # peaks of 0.36: below the onset threshold
    rule = DecodeSettings(confirmed_onset_threshold=0.3, confirm_frame_threshold=0.7)
    notes = decode_notes(quiet, HOP, rule)
    # every note that starts from silence is found; the re-strike of a sounding key (60 at 1.28 s) is not
    # confirmable by frames that were already on, so the note before it runs on to 1.6 s
    expected = sorted(n for n in KNOWN if n[:3] != (1.28, 1.6, 60))
    assert [(round(s / HOP), p) for s, _, p, _ in notes] == [(round(s / HOP), p) for s, _, p, _ in expected]
    assert [e for s, e, p, _ in notes if p == 60][-1] == pytest.approx(1.6)
    assert decode_notes(quiet, HOP, DecodeSettings(confirmed_onset_threshold=0.3, confirm_frame_threshold=0.99)) == []
    assert decode_notes(quiet, HOP, DecodeSettings(confirmed_onset_threshold=0.4)) == []  # peaks below it
    # a strong onset needs no confirmation: with full peaks the rule changes nothing
    assert decode_notes(activations(KNOWN, 200), HOP, rule) == decode_notes(activations(KNOWN, 200), HOP)


def test_a_release_run_bridges_a_dip_of_the_frame_head_in_a_decaying_note():
    probabilities = activations([(0.0, 1.6, 60, 80)], 200)
    key = 60 - MIN_PITCH
    probabilities["frame"][40:42, key] = 0.2  # a two-frame dip 0.64 s into a 1.6 s note
    assert [(round(s / HOP), round(e / HOP)) for s, e, *_ in decode_notes(probabilities, HOP)] == [(0, 40)]
    bridged = decode_notes(probabilities, HOP, DecodeSettings(release_frames=3))
    assert [(round(s / HOP), round(e / HOP)) for s, e, *_ in bridged] == [(0, 100)]
    probabilities["frame"][40:43, key] = 0.2  # three frames below: the note ends where the run begins
    assert [(round(s / HOP), round(e / HOP)) for s, e, *_ in
            decode_notes(probabilities, HOP, DecodeSettings(release_frames=3))] == [(0, 40)]


def test_tuning_picks_the_best_thresholds_and_tries_the_confirmed_onset_rule(tmp_path, monkeypatch):
    import types

    import cadenza.transcription.inference as inference
    from cadenza.transcription.framewise_train import decode_label, tune_decoding

    quiet = activations(KNOWN, 200)
    quiet["onset"] *= 0.4
    monkeypatch.setattr(inference, "framewise_probabilities", lambda path, model: iter([quiet]))
    midi = tmp_path / "known.mid"
    notes_to_score([(s, e, p, v, 0, False) for s, e, p, v in KNOWN]).dump_midi(str(midi))
    model = types.SimpleNamespace(eval=lambda: None, config=types.SimpleNamespace(frame_seconds=HOP))
    best, table = tune_decoding(model, [(tmp_path / "known.flac", midi)], onset_thresholds=(0.5, 0.9),
                                frame_thresholds=(0.5,), offset_thresholds=(1.0,), confirmed_thresholds=(0.3, 0.45),
                                confirm_frame_thresholds=(0.7,), release_frames=(3,))
    assert set(table) == {"0.5/0.5/1.0", "0.9/0.5/1.0", "0.5/0.5/1.0 confirmed 0.3/0.7", "0.5/0.5/1.0 confirmed 0.45/0.7",
                          "0.5/0.5/1.0 confirmed 0.3/0.7 release 3"}
    assert table["0.5/0.5/1.0"]["onset_f1"] == 0.0  # every peak is 0.36
    assert decode_label(best) == "0.5/0.5/1.0 confirmed 0.3/0.7"  # the release run scores the same: not kept
    assert table[decode_label(best)]["onset_f1"] == pytest.approx(2 * 6 / 7 / (1 + 6 / 7))  # six of seven found


def test_streaming_decoder_gives_the_same_notes_for_any_chunking():
    probabilities = activations(KNOWN, 200)
    whole = decode_notes(probabilities, HOP)
    for size in (1, 2, 7, 64):
        decoder = NoteDecoder(HOP)
        for begin in range(0, 200, size):
            decoder.feed({k: v[begin: begin + size] for k, v in probabilities.items()})
        assert decoder.finish() == whole
    quiet = {k: v * (0.4 if k == "onset" else 1.0) for k, v in probabilities.items()}
    rule = DecodeSettings(confirmed_onset_threshold=0.3)
    whole = decode_notes(quiet, HOP, rule)
    assert len(whole) == len(KNOWN) - 1
    for size in (1, 3, 64):  # the confirmed-onset rule looks one frame either side: chunking stays exact
        decoder = NoteDecoder(HOP, rule)
        for begin in range(0, 200, size):
            decoder.feed({k: v[begin: begin + size] for k, v in quiet.items()})
        assert decoder.finish() == whole
    dipped = {k: v.copy() for k, v in probabilities.items()}
    dipped["frame"][40:42] = 0.2  # every sounding key dips for two frames
    release = DecodeSettings(release_frames=4)
    whole = decode_notes(dipped, HOP, release)
    assert whole != decode_notes(dipped, HOP)
    for size in (1, 2, 5, 64):  # a release run looks several frames ahead: chunking stays exact
        decoder = NoteDecoder(HOP, release)
        for begin in range(0, 200, size):
            decoder.feed({k: v[begin: begin + size] for k, v in dipped.items()})
        assert decoder.finish() == whole
    assert NoteDecoder(HOP, DecodeSettings(offset_threshold=0.1)).settings.offset_threshold == 0.1


def tiny_model(seed: int = 0) -> tuple[FramewiseTranscriber, MT3Tokenizer]:
    torch.manual_seed(seed)
    model = FramewiseTranscriber(FramewiseConfig.debug()).eval()
    with torch.no_grad():  # a bias that makes every frame sound: inference has notes to stitch
        model.onset.bias.fill_(-0.5)
    return model, MT3Tokenizer(num_velocity_bins=127)


def test_chunked_inference_equals_one_chunk_and_goes_through_the_codec():
    from cadenza.transcription.inference import framewise_probabilities, transcribe_framewise

    model, codec = tiny_model()
    audio = tones([(0.1, 0.9, 60), (0.5, 2.0, 67), (3.0, 5.5, 48)], 6.5)
    whole = list(framewise_probabilities(audio, model, 100.0))
    assert len(whole) == 1 and whole[0]["onset"].shape == (326, KEYS)  # 6.5 s at a 20 ms hop, centred frames
    for seconds in (0.7, 2.0):
        chunks = list(framewise_probabilities(audio, model, seconds))
        assert len(chunks) >= 2 and all(len(c["onset"]) == seconds * SR // 320 for c in chunks[:-1])
        for name in whole[0]:
            joined = np.concatenate([c[name] for c in chunks])
            np.testing.assert_allclose(joined, whole[0][name], atol=1e-5)
    result = transcribe_framewise(audio, model, codec)
    assert result.segments == len(result.tokens) == 4  # 6.5 s in 2.048 s codec segments
    assert result.score.note_num() > 0
    assert codec.decode_segments(result.tokens).note_num() == result.score.note_num()


def test_a_grown_long_context_starts_as_the_model_and_chunks_exactly():
    """``grow_long_context`` adds the dilated stack without changing a single output; once its
    weights move, a frame sees 2 ** layers - 1 frames either side, and chunked inference, whose
    margins follow the receptive field, still equals the whole file."""
    from cadenza.transcription.framewise import grow_long_context
    from cadenza.transcription.inference import framewise_probabilities

    model, _ = tiny_model()
    grown = grow_long_context(model, 8, layers=5).eval()
    assert grown.config.long_context == 8 and grown.config.receptive_frames == model.config.receptive_frames + 31
    audio = tones([(0.1, 0.9, 60), (0.5, 2.0, 67), (3.0, 5.5, 48)], 6.5)
    mel = model.features(torch.as_tensor(audio[None]))
    with torch.no_grad():
        before, after = model(mel), grown(mel)
        assert all(torch.equal(before[k], after[k]) for k in before)
        torch.manual_seed(1)
        for p in grown.long_context.up.parameters():
            p.normal_(0, 0.5)
        moved = grown(mel)
        clicked = mel.clone()
        clicked[0, 100] += 5.0  # one loud frame changes outputs up to 31 frames (+ the convolutions) away
        reach = (grown(clicked)["onset"] - moved["onset"]).abs().amax(-1)[0]
        changed = torch.nonzero(reach > 1e-6).flatten()
    assert changed.min() <= 100 - 31 and changed.max() >= 100 + 31
    assert changed.max() - 100 <= grown.config.receptive_frames
    whole = list(framewise_probabilities(audio, grown, 100.0))
    for seconds in (0.7, 2.0):
        chunks = list(framewise_probabilities(audio, grown, seconds))
        for name in whole[0]:
            np.testing.assert_allclose(np.concatenate([c[name] for c in chunks]), whole[0][name], atol=1e-5)
    assert grow_long_context(grown, 16) is grown


def test_silence_any_rate_and_channel_count(tmp_path):
    model, codec = tiny_model()
    result = transcribe(np.zeros(SR * 3, dtype=np.float32), model, codec)
    assert result.silent and result.notes == 0 and "silent" in result.messages[0]
    assert result.score.note_num() == 0
    mono = tones([(0.2, 1.5, 69)], 2.0)
    path16 = tmp_path / "mono16k.wav"
    soundfile.write(str(path16), mono, SR)
    from scipy.signal import resample_poly

    stereo44 = np.stack([resample_poly(mono, 441, 160)] * 2, axis=1).astype(np.float32)
    path44 = tmp_path / "stereo44k.flac"
    soundfile.write(str(path44), stereo44, 44100)
    a, b = transcribe(str(path16), model, codec), transcribe(str(path44), model, codec)
    assert a.seconds == pytest.approx(2.0) and b.seconds == pytest.approx(2.0, abs=1e-3)
    from cadenza.transcription.inference import framewise_probabilities

    # resampled and mixed down, the stereo 44.1 kHz file gives the mono 16 kHz file's activations
    heard = [np.concatenate([c["frame"] for c in framewise_probabilities(str(p), model)]) for p in (path16, path44)]
    assert heard[0].shape == heard[1].shape and np.abs(heard[0] - heard[1]).mean() < 0.01


def test_long_audio_is_transcribed_in_bounded_chunks(monkeypatch, tmp_path):
    """Four minutes from a file, read block by block and run through 20 s chunks: the model never
    sees more than a chunk and its margins."""
    model, codec = tiny_model()
    seen = []
    original = model.forward

    def spy(mel):
        seen.append(mel.shape[1])
        return original(mel)

    monkeypatch.setattr(model, "forward", spy)
    path = tmp_path / "long.flac"
    soundfile.write(str(path), np.tile(tones([(0.0, 0.5, 60)], 1.0), 240), SR)
    result = transcribe(str(path), model, codec)
    assert result.seconds == pytest.approx(240)
    # 11 chunks of 20 s, then the last 20 s and the closing frame (the last chunk has no audio after it)
    assert seen == [1000 + 2 * 16 + 1] * 11 + [1001 + 2 * 16 + 1]


def test_training_learns_notes_and_resumes_bit_exactly(tmp_path):
    from cadenza.transcription.framewise_train import FramewiseSettings, FrameWindowSampler, train_framewise

    pairs = []
    rng = np.random.default_rng(0)
    for i in range(3):
        notes = [(float(s), float(s) + 0.4, int(p), 90) for s, p in zip(np.arange(0.1, 3.5, 0.5),
                                                                        rng.integers(48, 80, 7))]
        audio_path, midi_path = tmp_path / f"{i}.flac", tmp_path / f"{i}.mid"
        soundfile.write(str(audio_path), tones([n[:3] for n in notes], 4.0), SR)
        notes_to_score([(s, e, p, v, 0, False) for s, e, p, v in notes]).dump_midi(str(midi_path))
        pairs.append((audio_path, midi_path))

    def run(out, steps, leg=None, pitch_shift=0):
        torch.manual_seed(0)
        model = FramewiseTranscriber(FramewiseConfig.debug())
        sampler = FrameWindowSampler(pairs, 320, 100, seed=0)
        settings = FramewiseSettings(steps=steps, batch_size=4, window_frames=100, learning_rate=3e-3, warmup=5,
                                     log_every=5, save_every=1000, leg_steps=leg, timbre_db=6.0,
                                     pitch_shift=pitch_shift)
        summary = train_framewise(model, sampler, out, settings, progress=False)
        return model, summary

    full, summary = run(tmp_path / "full", 40)
    assert summary["history"][-1]["onset"] < summary["history"][0]["onset"]
    # it has learned where notes begin: onset activations at labelled onsets stand out
    sampler = FrameWindowSampler(pairs, 320, 100, seed=0)
    audio, rolls = sampler.window(0, 0)
    full.eval()
    with torch.no_grad():
        onset = torch.sigmoid(full(full.features(torch.as_tensor(audio)[None])[:, :100])["onset"][0]).numpy()
    assert onset[rolls["onset"] > 0].mean() > 3 * onset[rolls["onset"] == 0].mean()
    _, first_leg = run(tmp_path / "split", 40, leg=20)
    assert first_leg["steps"] == 20
    resumed, _ = run(tmp_path / "split", 40)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    shifted, _ = run(tmp_path / "shifted", 20, pitch_shift=2)  # transposed windows resume bit-exactly too
    run(tmp_path / "shifted-split", 20, leg=10, pitch_shift=2)
    resumed, _ = run(tmp_path / "shifted-split", 20, pitch_shift=2)
    for (name, a), (_, b) in zip(shifted.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(shifted.onset.weight, run(tmp_path / "unshifted", 20)[0].onset.weight)
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["kind"] == "framewise" and config["info"]["step"] == 40
    from cadenza.symbolic.device import training_precision

    assert config["info"]["precision"] == training_precision("cpu")  # bf16 autocast where the CPU has AMX


def test_timbre_curves_are_smooth_bounded_gains_that_leave_silence_silent():
    from cadenza.transcription.framewise_train import FrameWindowSampler, colour_spectrum

    sampler = FrameWindowSampler.__new__(FrameWindowSampler)
    sampler.rng = np.random.default_rng(3)
    curves = sampler.timbre_curves(500, 229, 6.0)
    decibels = curves.numpy() * 20 / np.log(10)
    assert curves.shape == (500, 229) and np.abs(decibels).max() <= 12.0  # four terms of at most 3 dB
    assert 1.5 < decibels.std() < 3.5  # the docstring's 2.4 dB
    assert np.abs(np.diff(decibels, axis=1)).max() < 0.3  # smooth over the mel axis: no bin-to-bin noise
    sampler.rng = np.random.default_rng(3)
    assert torch.equal(sampler.timbre_curves(500, 229, 6.0), curves)  # drawn from the checkpointed generator

    floor = 1e-5
    magnitude = torch.tensor([[[0.0, 1e-3, 0.5, 2.0]]])
    mel = torch.log(magnitude.clamp(min=floor))
    assert torch.allclose(colour_spectrum(mel, torch.zeros(1, 4)), mel, atol=1e-5)
    gains = torch.log(torch.tensor([[2.0, 2.0, 0.5, 4.0]]))
    coloured = torch.exp(colour_spectrum(mel, gains))[0, 0]
    assert coloured[0] == pytest.approx(floor)  # silence stays at the floor
    assert coloured[2:].tolist() == pytest.approx([0.25, 8.0], rel=1e-4)
    assert coloured[1] == pytest.approx((1e-3 - floor) * 2 + floor, rel=1e-4)


def test_pitch_shift_resamples_the_window_and_moves_its_notes_with_it(tmp_path):
    from cadenza.transcription.framewise_train import FrameWindowSampler

    audio_path, midi_path = tmp_path / "a.flac", tmp_path / "a.mid"
    soundfile.write(str(audio_path), tones([(1.0, 2.0, 69)], 4.0), SR)
    notes_to_score([(1.0, 2.0, 69, 80, 0, False)]).dump_midi(str(midi_path))
    sampler = FrameWindowSampler([(audio_path, midi_path)], 320, 100, seed=0)
    plain, plain_rolls = sampler.window(0, 25)
    audio, rolls = sampler.window(0, 25, semitones=2)  # from 0.5 s: the note 0.5 - 1.5 s into the window
    assert len(audio) == len(plain) == 100 * 320
    ratio = 2 ** (2 / 12)

    def peak_hz(signal):
        spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
        return np.argmax(spectrum) * SR / len(signal)

    assert peak_hz(plain) == pytest.approx(440.0, abs=1.0)
    assert peak_hz(audio) == pytest.approx(440.0 * ratio, abs=1.0)  # B4, two semitones up
    assert np.flatnonzero(plain_rolls["onset"][:, 69 - MIN_PITCH]).tolist() == [25]
    assert not rolls["frame"][:, 69 - MIN_PITCH].any()
    key = 71 - MIN_PITCH
    assert np.flatnonzero(rolls["onset"][:, key]).tolist() == [round(0.5 / ratio / 0.02)]  # time shrinks by the ratio
    assert np.flatnonzero(rolls["offset"][:, key]).tolist() == [round(1.5 / ratio / 0.02)]
    assert rolls["velocity"][round(0.5 / ratio / 0.02), key] == pytest.approx(80 / 127)

    # a shift never pushes a sounding note off the keyboard; outside the notes' time it is free
    sampler.notes[0] = np.array([[1.0, 2.0, 107.0, 80.0]])
    assert sampler._within_keys(0, 25, 2) == 1 and sampler._within_keys(0, 25, -2) == -2
    assert sampler._within_keys(0, 150, 2) == 2
    # off by default: the generator is not drawn from, so runs without it are unchanged
    a, b = FrameWindowSampler([(audio_path, midi_path)], 320, 100, seed=4), FrameWindowSampler([(audio_path, midi_path)], 320, 100, seed=4)
    first = a.batch(3)[0]
    assert torch.equal(first, b.batch(3, pitch_shift=0)[0])
    assert not torch.equal(a.batch(8, pitch_shift=2)[0], b.batch(8)[0])


def test_data_keeps_unisons_short_notes_and_full_velocity_range():
    from cadenza.transcription.data import perform, random_texture, voice_overlaps

    # unisons across voices stay; a same-pitch overlap within a voice ends at the later onset
    notes = [(0.0, 1.0, 60, 80, 0), (0.0, 1.0, 60, 70, 1), (0.5, 0.51, 72, 50, 0), (0.2, 0.9, 64, 60, 2),
             (0.6, 1.2, 64, 60, 2)]
    assert voice_overlaps(notes) == [(0.0, 1.0, 60, 70, 1), (0.0, 1.0, 60, 80, 0), (0.2, 0.6, 64, 60, 2),
                                     (0.5, 0.51, 72, 50, 0), (0.6, 1.2, 64, 60, 2)]
    rng = np.random.default_rng(3)
    velocities = [n[3] for _ in range(30) for n in random_texture(rng, 10.0)]
    assert min(velocities) < 15 and max(velocities) > 120 and all(1 <= v <= 127 for v in velocities)
    played = perform([(i * 0.25, i * 0.25 + 0.2, 60 + i % 5, 64, i % 2) for i in range(40)], rng, 8.0)
    assert {n[4] for n in played} == {0, 1} and all(n[1] > n[0] for n in played)


def test_cli_framewise_train_and_transcribe_by_name(tmp_path, monkeypatch):
    """`transcription-train` makes a framewise checkpoint; `transcribe --model` takes it, writes
    MIDI and the MT3 event ids; a shipped name that does not exist is a one-line error."""
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    notes = [(0.2, 0.8, 60, 90), (1.0, 1.6, 64, 70)]
    soundfile.write(str(data / "a.flac"), tones([n[:3] for n in notes], 2.5), SR)
    notes_to_score([(s, e, p, v, 0, False) for s, e, p, v in notes]).dump_midi(str(data / "a.mid"))
    (data / "manifest.jsonl").write_text(json.dumps({"id": "a", "seconds": 2.5, "notes": 2}) + "\n")
    run_cli("transcription-train", tmp_path / "data", "--out", tmp_path / "run", "--size", "debug", "--steps", "3",
            "--batch-size", "2", "--window-frames", "64", "--warmup", "1", "--long-context", "4")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["long_context"] == 4
    # a resumed run keeps its own architecture without being told its size or context again
    run_cli("transcription-train", tmp_path / "data", "--out", tmp_path / "run", "--steps", "5",
            "--batch-size", "2", "--window-frames", "64", "--warmup", "1")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["long_context"] == 4 and config["model"]["hidden"] == 32 and config["info"]["step"] == 5
    assert config["kind"] == "framewise" and config["info"]["training_command"].startswith("cadenza transcription-train")
    proc = run_cli("transcribe", data / "a.flac", "-o", tmp_path / "a.mid", "--model", tmp_path / "run",
                   "--events", tmp_path / "a.events")
    assert "a.mid" in proc.stdout and (tmp_path / "a.mid").exists()
    lines = (tmp_path / "a.events").read_text().splitlines()
    assert len(lines) == 2  # 2.5 s: two 2.048 s segments, each a line of ids
    proc = run_cli("transcribe", data / "a.flac", "-o", tmp_path / "b.mid", "--model", "no-such-model", check=False)
    assert proc.returncode == 2 and "not a shipped model" in proc.stderr and "Traceback" not in proc.stderr


def test_scores_of_a_perfect_transcription():
    reference = notes_to_score([(s, e, p, v, 0, False) for s, e, p, v in KNOWN])
    assert transcription_scores(reference, reference)["onset_offset_f1"] == 1.0


def test_the_shipped_default_is_the_framewise_piano_model():
    from cadenza.symbolic.registry import DEFAULT_TRANSCRIBER, list_models, resolve_model
    from cadenza.transcription.inference import load_transcriber

    entries = {e.name: e for e in list_models()}
    assert DEFAULT_TRANSCRIBER == "transcriber-framewise" and entries[DEFAULT_TRANSCRIBER].kind == "transcription"
    assert entries[DEFAULT_TRANSCRIBER].size_mb < 5 and "transcriber-piano" in entries  # the sequence model stays
    config = json.loads((resolve_model(DEFAULT_TRANSCRIBER) / "config.json").read_text())
    assert config["kind"] == "framewise" and config["info"]["training_command"].startswith("cadenza transcription-")
    assert config["info"]["heldout_eval"]["soundfont"] == "FluidR3_GM"
    model, codec, _ = load_transcriber()
    assert isinstance(model, FramewiseTranscriber) and codec.num_velocity_bins == 127
    assert model.decode_settings.onset_threshold == config["decode"]["onset_threshold"]


def test_the_shipped_model_transcribes_a_heldout_rendering(tmp_path):
    """A test-split chorale on FluidR3_GM (never heard in training), transcribed by the default
    model: most onsets within 50 ms."""
    pytest.importorskip("fluidsynth")
    from conftest import require

    from cadenza.data.corpora import open_corpus
    from cadenza.transcription.data import FluidRenderer, heldout_soundfont, perform, score_notes
    from cadenza.transcription.inference import load_transcriber

    try:
        font = heldout_soundfont()
    except Exception:  # noqa: BLE001 - a missing system package
        font = None
    require(font is not None, "the FluidR3_GM SoundFont (fluid-soundfont-gm)")
    import symusic

    piece = open_corpus("bach-chorales").pieces(split="test")[0]
    played = perform(score_notes(symusic.Score(str(piece.path))), np.random.default_rng(0), 8.0)
    notes = [(s, e, p, 80, voice) for s, e, p, _, voice in played]  # mezzo-forte: the quietest notes are a known weakness
    renderer = FluidRenderer([font])
    audio = renderer.render(notes, font, 0)
    renderer.close()
    model, codec, _ = load_transcriber()
    result = transcribe(audio / np.abs(audio).max() * 0.5, model, codec)
    scores = transcription_scores(notes_to_score([(*n[:4], 0, False) for n in notes]), result.score)
    print(scores)
    assert scores["onset_f1"] >= 0.7
