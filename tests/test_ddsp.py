"""The DDSP synth: exact additive synthesis, pitch, timing, presets, gradients, fitting, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.rendering import ddsp
from cadenza.rendering.ddsp import PRESETS, Preset, load_preset, notes_from_score, preset_parameters, synthesize
from cadenza.rendering.ddsp_fit import estimate_velocities, fit_preset, multi_resolution_stft_loss

from conftest import require_fluidsynth, run_cli

RATE = 16000


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The suite runs two workers on two cores; one thread each avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_score(notes: list[tuple[float, float, int, int]], tempo_qpm: float = 60.0, drums: bool = False) -> symusic.Score:
    """A one-track score from (start seconds, duration seconds, pitch, velocity) at 60 qpm (1 beat = 1 s)."""
    tpq = 480
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, tempo_qpm))
    track = symusic.Track("part", program=0, is_drum=drums)
    for start, duration, pitch, velocity in notes:
        track.notes.append(symusic.Note(round(start * tpq), round(duration * tpq), pitch, velocity))
    score.tracks.append(track)
    return score


def quiet(preset_name: str) -> Preset:
    """A preset without noise, so spectra hold only the harmonics."""
    preset = load_preset(preset_name)
    preset.noise_gain = 0.0
    preset.burst_gain = 0.0
    return preset


def spectrum(audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    window = np.hanning(len(audio))
    magnitude = np.abs(np.fft.rfft(audio * window))
    return np.fft.rfftfreq(len(audio), 1 / rate), magnitude


def frame_rms(audio: np.ndarray, rate: int, seconds: float = 0.01) -> np.ndarray:
    size = int(rate * seconds)
    usable = len(audio) // size * size
    return np.sqrt((audio[:usable].reshape(-1, size) ** 2).mean(1))


# --- synthesis ------------------------------------------------------------------------------


def test_additive_overlap_add_equals_direct_sum_of_sines():
    """The factorized frame synthesis equals sum_k a_k(t) sin(k phase) computed sample by sample."""
    rng = np.random.default_rng(0)
    hop, harmonics, frames = 64, 6, 50
    steps = rng.choice([0.011, 0.0275, 0.0275 * 1.004], size=frames)  # shared and distinct frequencies
    phases = rng.uniform(0, 5, size=frames)
    first = rng.integers(0, 1500, size=frames)  # overlapping frames are summed
    start = torch.rand(frames, harmonics)
    end = torch.rand(frames, harmonics)
    got = ddsp.additive_overlap_add(first, phases, steps, start, end, hop, 1600).numpy()

    want = np.zeros(1600 + hop)
    h = np.arange(hop)
    k = np.arange(1, harmonics + 1)
    for i in range(frames):
        amplitude = start[i].numpy()[None, :] + (h / hop)[:, None] * (end[i] - start[i]).numpy()[None, :]
        want[first[i]:first[i] + hop] += (amplitude * np.sin(2 * np.pi * k[None, :] * (phases[i] + steps[i] * h)[:, None])).sum(1)
    np.testing.assert_allclose(got, want[:1600], atol=2e-5)


def test_a4_sounds_at_440_hz_for_its_duration():
    audio = ddsp.render(make_score([(0.0, 1.0, 69, 100)]), preset="organ", sample_rate=RATE)
    tail = ddsp.tail_seconds(PRESETS["organ"].release)
    assert abs(len(audio) / RATE - (1.0 + tail)) < 2 / 250
    frequencies, magnitude = spectrum(audio[: RATE], RATE)
    assert abs(frequencies[np.argmax(magnitude)] - 440.0) < 2.0
    envelope = frame_rms(audio, RATE)
    assert envelope[5:95].min() > 0.2 * envelope.max()  # sustained while held
    assert envelope[-2:].max() < 0.02 * envelope.max()  # released by the end


def test_energy_starts_at_note_onsets():
    onsets = [0.25, 0.85, 1.5, 2.1]
    score = make_score([(t, 0.2, 60 + 2 * i, 90) for i, t in enumerate(onsets)])
    audio = ddsp.render(score, preset="plucked", sample_rate=RATE)
    envelope = frame_rms(audio, RATE)
    rise = np.diff(envelope)
    peaks = sorted(np.argsort(rise)[-len(onsets):] * 0.01)
    assert np.allclose(peaks, onsets, atol=0.02)
    assert envelope[: int(0.24 / 0.01)].max() < 1e-4  # silence before the first note


def test_harmonics_above_nyquist_are_removed():
    """E7 (2637 Hz) at 8 kHz: only the fundamental fits below Nyquist, nothing aliases down."""
    score = make_score([(0.0, 0.5, 100, 100)])
    audio = ddsp.render(score, preset=quiet("strings"), sample_rate=8000)
    frequencies, magnitude = spectrum(audio[:4000], 8000)
    power = magnitude ** 2
    assert abs(frequencies[np.argmax(magnitude)] - 2637.0) < 4
    assert power[np.abs(frequencies - 2637) > 100].sum() < 1e-3 * power.sum()


def test_presets_shape_the_sound():
    score = make_score([(0.0, 2.0, 57, 100)])
    level = {name: frame_rms(ddsp.render(score, preset=name, sample_rate=RATE), RATE) for name in PRESETS}
    # a plucked note dies away while held; an organ note does not
    assert level["plucked"][150:180].mean() < 0.1 * level["plucked"][:20].max()
    assert level["organ"][150:180].mean() > 0.8 * level["organ"][20:40].mean()
    # the flute's spectrum is darker than the strings'
    def centroid(name):
        f, m = spectrum(ddsp.render(score, preset=quiet(name), sample_rate=RATE)[4000:20000], RATE)
        return (f * m ** 2).sum() / (m ** 2).sum()
    assert centroid("flute") < 0.8 * centroid("strings")


def test_velocity_sets_loudness_and_brightness():
    soft, loud = (synthesize(notes_from_score(make_score([(0, 0.5, 60, v)])), quiet("plucked")).detach().numpy()
                  for v in (30, 120))
    assert np.sqrt((loud ** 2).mean()) > 8 * np.sqrt((soft ** 2).mean())
    def centroid(audio):
        f, m = spectrum(audio[:4000], RATE)
        return (f * m ** 2).sum() / (m ** 2).sum()
    assert centroid(loud) > 1.15 * centroid(soft)


def test_render_is_deterministic_and_skips_drums():
    score = make_score([(0, 0.3, 64, 80), (0.3, 0.3, 67, 80)])
    np.testing.assert_array_equal(ddsp.render(score, preset="flute"), ddsp.render(score, preset="flute"))
    drums = ddsp.render(make_score([(0, 0.3, 36, 100)], drums=True))
    assert drums.dtype == np.float32 and not drums.any()


# --- presets --------------------------------------------------------------------------------


def test_presets_round_trip_through_json(tmp_path):
    for name, preset in PRESETS.items():
        path = preset.save(tmp_path / f"{name}.json")
        assert Preset.load(path) == preset
        assert load_preset(str(path)) == preset
        back = preset_parameters(preset).to_preset()
        total = sum(preset.harmonics)
        np.testing.assert_allclose(back.harmonics, [h / total for h in preset.harmonics], atol=2e-4)
        for field in ("attack", "decay", "release", "tilt_sustain", "velocity_exponent"):
            assert getattr(back, field) == pytest.approx(getattr(preset, field), rel=1e-4, abs=1e-5)


def test_bad_presets_are_reported(tmp_path):
    with pytest.raises(CadenzaError, match="unknown DDSP preset"):
        load_preset("kazoo")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "harmonics": [1.0], "wobble": 3}))
    with pytest.raises(CadenzaError, match="unknown fields: wobble"):
        load_preset(bad)
    bad.write_text("{not json")
    with pytest.raises(CadenzaError, match="not a JSON preset"):
        load_preset(bad)


# --- differentiability and fitting ----------------------------------------------------------


def test_gradients_reach_velocities_and_every_preset_parameter():
    notes = notes_from_score(make_score([(0, 0.3, 55, 70), (0.2, 0.4, 67, 100), (0.5, 0.3, 72, 50)]))
    target = synthesize(notes, "organ", RATE, 16000)
    notes.velocity = torch.tensor(notes.velocity, requires_grad=True)
    params = preset_parameters("strings")
    loss = multi_resolution_stft_loss(synthesize(notes, params, RATE, 16000), target)
    loss.backward()
    assert torch.isfinite(notes.velocity.grad).all() and (notes.velocity.grad != 0).all()
    for name, parameter in params.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_stft_loss_is_zero_only_for_equal_spectra():
    audio = torch.from_numpy(ddsp.render(make_score([(0, 0.5, 60, 90)]), preset="organ"))
    assert float(multi_resolution_stft_loss(audio, audio)) < 1e-5
    assert float(multi_resolution_stft_loss(audio * 0.5, audio)) > 0.3
    shifted = torch.roll(audio, 800)
    assert float(multi_resolution_stft_loss(shifted, audio)) > 0.3


def fluidsynth_reference(score: symusic.Score) -> np.ndarray:
    """A FluidSynth rendering at RATE (the project's renderer, or pretty_midi's as a stand-in)."""
    try:
        from cadenza.rendering.fluidsynth import render
    except ImportError:
        render = None
    if render is not None:
        return render(score, sample_rate=RATE)
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(__import__("io").BytesIO(score.dumps_midi()))
    audio = midi.fluidsynth(fs=RATE)
    return (audio / np.abs(audio).max() * 0.9).astype(np.float32)


def test_short_fit_to_a_fluidsynth_recording_lowers_the_loss():
    require_fluidsynth()
    score = make_score([(0.0, 0.4, 60, 90), (0.4, 0.4, 64, 90), (0.8, 0.4, 67, 90), (1.2, 0.6, 72, 90)])
    reference = fluidsynth_reference(score)[: 2 * RATE]
    preset, before, after = fit_preset(reference, score, "organ", steps=12, learning_rate=0.08)
    assert after < 0.9 * before
    assert isinstance(preset, Preset) and preset.harmonics != PRESETS["organ"].harmonics


def test_estimated_velocities_follow_the_recording():
    truth = [40, 110, 70, 127, 55, 90, 30, 100]
    score = make_score([(0.3 * i, 0.25, 60 + (i % 4) * 3, v) for i, v in enumerate(truth)])
    reference = ddsp.render(score, preset="plucked", sample_rate=RATE, normalize=True)
    flat = make_score([(0.3 * i, 0.25, 60 + (i % 4) * 3, 80) for i in range(len(truth))])
    estimated = estimate_velocities(reference, flat, "plucked", steps=20)
    got = [n.velocity for n in estimated.tracks[0].notes]
    assert np.corrcoef(got, truth)[0, 1] > 0.95
    assert estimated.ticks_per_quarter == flat.ticks_per_quarter
    assert [n.time for n in estimated.tracks[0].notes] == [n.time for n in flat.tracks[0].notes]


# --- command line ---------------------------------------------------------------------------


def test_cli_fits_a_preset_and_estimates_velocities(tmp_path):
    from cadenza.data.io import write_midi
    from cadenza.rendering.audio import write_audio

    score = make_score([(0.0, 0.5, 62, 60), (0.5, 0.5, 66, 120), (1.0, 0.8, 69, 90)])
    write_midi(score, tmp_path / "notes.mid")
    write_audio(tmp_path / "take.wav", ddsp.render(score, preset="flute", sample_rate=RATE), RATE)

    fitted = run_cli("ddsp-fit", tmp_path / "take.wav", tmp_path / "notes.mid", "-o", tmp_path / "mine.json",
                     "--preset", "strings", "--steps", "4")
    before = float(fitted.stdout.split("loss before:")[1].split()[0])
    after = float(fitted.stdout.split("loss after:")[1].split()[0])
    assert after <= before
    preset = load_preset(tmp_path / "mine.json")
    assert preset.name == "mine"

    run_cli("ddsp-velocities", tmp_path / "take.wav", tmp_path / "notes.mid", "-o", tmp_path / "out.mid",
            "--preset", str(tmp_path / "mine.json"), "--steps", "3")
    out = symusic.Score(str(tmp_path / "out.mid"))
    assert len(out.tracks[0].notes) == 3
    assert all(1 <= n.velocity <= 127 for n in out.tracks[0].notes)

    missing = run_cli("ddsp-fit", tmp_path / "nope.wav", tmp_path / "notes.mid", "-o", tmp_path / "x.json", check=False)
    assert missing.returncode == 2 and "nope.wav" in missing.stderr and "Traceback" not in missing.stderr
