"""The sample-based piano (cadenza.rendering.sampler) on sample sets made here from sine tones."""

import json

import numpy as np
import pytest
import soundfile
import symusic

from cadenza.rendering.sampler import SampleSet, is_sample_set, key_of_name, pitch_of_name, velocity_gain

SR = 16000


def hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def peak_hz(audio: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


@pytest.fixture
def sine_set(tmp_path):
    """C4 and A4 as 3 s decaying sines at 44.1 kHz (the rate recorded sets come in), plus a stray file."""
    rate = 44100
    t = np.arange(3 * rate) / rate
    for name, pitch in (("C4", 60), ("A4", 69)):
        soundfile.write(str(tmp_path / f"{name}.wav"), 0.7 * np.sin(2 * np.pi * hz(pitch) * t) * np.exp(-t), rate)
    (tmp_path / "README.md").write_text("not a sample")
    return tmp_path


def test_pitch_names_known_values():
    assert pitch_of_name("C4") == 60 and pitch_of_name("A0") == 21 and pitch_of_name("C8") == 108
    assert pitch_of_name("As0") == 22 and pitch_of_name("Cs4") == 61 and pitch_of_name("C#4") == 61
    assert pitch_of_name("Db5") == 73 and pitch_of_name("B-1") == 11
    assert pitch_of_name("index") is None and pitch_of_name("H4") is None
    assert key_of_name("F#3v4") == (54, 4) and key_of_name("A4v16") == (69, 16) and key_of_name("C4") == (60, 0)
    assert pitch_of_name("D#5v1") == 75 and key_of_name("C4v") is None


@pytest.fixture
def layered_set(tmp_path):
    """A4 in three velocity layers (as Salamander's A4v1, A4v8, A4v16), told apart by their partials:
    the softest a pure tone, the middle one with a second partial, the loudest with a third too."""
    rate = 44100
    t = np.arange(2 * rate) / rate
    for layer, partials in ((1, (1,)), (8, (1, 2)), (16, (1, 2, 3))):
        tone = sum(np.sin(2 * np.pi * hz(69) * k * t) / k for k in partials) * np.exp(-t)
        soundfile.write(str(tmp_path / f"A4v{layer}.ogg"), 0.5 * tone / np.abs(tone).max(), rate)
    return tmp_path


def _partial_level(audio: np.ndarray, frequency: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    bins = np.fft.rfftfreq(len(audio), 1 / SR)
    return float(spectrum[np.abs(bins - frequency) < 15].max() / spectrum.max())


def test_velocity_layers_give_each_dynamic_its_own_recording(layered_set):
    samples = SampleSet(layered_set, SR)
    assert len(samples.layers) == 3 and sorted(samples.samples) == [69]
    assert [samples.layer_of(v) for v in (1, 43, 44, 85, 86, 127)] == [0, 0, 1, 1, 2, 2]
    soft, middle, loud = (samples.render([(0.0, 1.0, 69, v)], tail=0.0, room={"reverb": 0})[: SR // 2]
                          for v in (20, 64, 120))
    assert _partial_level(soft, 2 * hz(69)) < 0.05 and _partial_level(middle, 2 * hz(69)) > 0.3
    assert _partial_level(middle, 3 * hz(69)) < 0.05 and _partial_level(loud, 3 * hz(69)) > 0.2
    # the level still follows the velocity curve, and a key with no recording of its own is resampled
    assert np.abs(loud).max() / np.abs(soft).max() == pytest.approx(velocity_gain(120) / velocity_gain(20), rel=0.1)
    shifted = samples.render([(0.0, 1.0, 71, 20)], tail=0.0, room={"reverb": 0})
    assert peak_hz(shifted[: SR]) == pytest.approx(hz(71), rel=0.01)


def test_velocity_curve_spans_forty_decibels():
    assert velocity_gain(127) == pytest.approx(1.0)
    assert 20 * np.log10(velocity_gain(1)) == pytest.approx(-40.0)
    gains = [velocity_gain(v) for v in range(1, 128)]
    assert all(a < b for a, b in zip(gains, gains[1:]))


def test_keys_sound_at_their_pitch_and_missing_keys_are_resampled(sine_set):
    assert is_sample_set(sine_set) and not is_sample_set(sine_set / "README.md")
    samples = SampleSet(sine_set, SR)
    assert sorted(samples.samples) == [60, 69]
    for pitch in (60, 62, 69, 72):  # 62 from C4 two semitones up, 72 from A4 three up
        audio = samples.render([(0.0, 1.0, pitch, 100)], tail=0.0, room={"reverb": 0})
        assert peak_hz(audio[: SR]) == pytest.approx(hz(pitch), rel=0.01)
    detuned = samples.render([(0.0, 1.0, 69, 100)], tail=0.0, room={"reverb": 0, "detune_cents": 50})
    assert peak_hz(detuned[: SR]) == pytest.approx(hz(69.5), rel=0.005)


def test_notes_start_on_time_end_by_the_damper_and_scale_with_velocity(sine_set):
    samples = SampleSet(sine_set, SR)
    audio = samples.render([(0.5, 1.0, 60, 127)], tail=1.0, room={"reverb": 0}, release=0.05)
    assert len(audio) == int(2.0 * SR) + 1
    assert np.abs(audio[: int(0.5 * SR)]).max() == 0.0           # silent before the onset
    assert np.abs(audio[int(0.5 * SR): int(0.6 * SR)]).max() > 0.05
    assert np.abs(audio[int(1.4 * SR):]).max() < 1e-3            # damped within a few release times
    soft = samples.render([(0.5, 1.0, 60, 64)], tail=1.0, room={"reverb": 0}, release=0.05)
    ratio = np.abs(soft).max() / np.abs(audio).max()
    assert ratio < velocity_gain(64) * 1.01 and ratio > velocity_gain(64) * 0.5  # quieter (and darker)
    wet = samples.render([(0.5, 1.0, 60, 127)], tail=1.0, room={"reverb": 100, "roomsize": 0.5}, release=0.05)
    assert np.abs(wet[int(1.4 * SR):]).max() > 1e-3              # the room rings on after the damper


def test_a_sample_set_renders_training_pairs(sine_set, tmp_path):
    from cadenza.transcription.data import PairSpec, build_pairs, load_pairs

    out = tmp_path / "pairs"
    spec = PairSpec(corpora=(), pieces_per_split={}, textures_per_split={"train": 2}, max_seconds=3.0,
                    soundfonts=(str(sine_set),))
    report = build_pairs(out, spec, splits=("train",), progress=False)
    assert report["splits"]["train"]["examples"] == 2 and report["soundfonts"] == [sine_set.name]
    for (audio_path, midi_path), line in zip(load_pairs(out, "train"),
                                             (out / "train" / "manifest.jsonl").read_text().splitlines()):
        audio, rate = soundfile.read(audio_path)
        assert rate == SR and np.abs(audio).max() > 0.01
        assert symusic.Score(str(midi_path)).note_num() == json.loads(line)["notes"] > 0
        assert json.loads(line)["soundfont"] == sine_set.name
