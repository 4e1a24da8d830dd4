"""FluidSynth rendering: length, silence, onsets, programs, tempo, pedal, velocity, files."""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pytest
import symusic

from cadenza.data.errors import CadenzaError, MissingDependencyError
from cadenza.rendering import fluidsynth as fs
from cadenza.rendering.audio import load_audio, resample, write_audio
from conftest import require_fluidsynth

RATE = 22050
HEADROOM = 10 ** (-1 / 20)


@pytest.fixture(autouse=True)
def needs_fluidsynth(request):
    """Every test here except those marked ``without_fluidsynth`` needs the real library."""
    if not getattr(request.function, "without_fluidsynth", False):
        require_fluidsynth()


def without_fluidsynth(test):
    test.without_fluidsynth = True
    return test


def make_score(notes, program=0, is_drum=False, tempos=((0.0, 60.0),), tpq=1000) -> symusic.Score:
    """A one-track Score from (start_seconds, duration_seconds, pitch, velocity) at 60 bpm, where
    a tick is a millisecond; ``tempos`` holds (tick, qpm) pairs."""
    score = symusic.Score(tpq)
    for tick, qpm in tempos:
        score.tempos.append(symusic.Tempo(int(tick), float(qpm)))
    track = symusic.Track(program=program, is_drum=is_drum)
    for start, duration, pitch, velocity in notes:
        track.notes.append(symusic.Note(int(round(start * 1000)), int(round(duration * 1000)), pitch, velocity))
    score.tracks.append(track)
    return score


def rms(audio: np.ndarray, start: float, stop: float, rate: int = RATE) -> float:
    segment = audio[int(start * rate):int(stop * rate)]
    return float(np.sqrt(np.mean(np.square(segment, dtype=np.float64)))) if len(segment) else 0.0


def spectrum(audio: np.ndarray) -> np.ndarray:
    magnitude = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return magnitude / np.linalg.norm(magnitude)


def test_duration_is_score_end_plus_tail_and_audio_is_loud_where_notes_are():
    score = make_score([(0.5, 0.3, 60, 100), (1.5, 0.3, 64, 100), (2.5, 0.5, 67, 100)])
    audio = fs.render(score, sample_rate=RATE, tail=0.75)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == int(np.ceil((3.0 + 0.75) * RATE))
    assert np.max(np.abs(audio)) == pytest.approx(HEADROOM, abs=1e-4)
    assert rms(audio, 0.0, 0.45) < 1e-5  # nothing before the first note
    for onset in (0.5, 1.5, 2.5):
        before, after = rms(audio, onset - 0.15, onset - 0.03), rms(audio, onset, onset + 0.1)
        assert after > 0.02
        assert after > 4 * before, f"no energy onset at {onset}s ({before:.4f} -> {after:.4f})"


def test_onsets_follow_tempo_changes():
    # 60 bpm for the first two beats (1 s each), then 120 bpm (0.5 s each): onsets at 0, 1, 2, 2.5, 3.
    score = make_score([], tempos=((0, 60.0), (2000, 120.0)))
    for beat in range(5):
        score.tracks[0].notes.append(symusic.Note(beat * 1000, 200, 72, 100))
    audio = fs.render(score, sample_rate=RATE, tail=0.5)
    assert len(audio) == int(np.ceil((3.0 + 0.1 + 0.5) * RATE))  # last note: beat 4 at 3 s, 200 ticks = 0.1 s
    hop = 128
    frames = len(audio) // hop
    energy = np.log(np.square(audio[:frames * hop].reshape(frames, hop)).mean(axis=1) + 1e-10)
    rise = np.diff(energy, prepend=energy[0])
    peaks = [i * hop / RATE for i in np.argsort(rise)[::-1][:20]]
    for onset in (0.0, 1.0, 2.0, 2.5, 3.0):
        assert min(abs(p - onset) for p in peaks) < 0.015, f"no onset near {onset}s"
    assert rms(audio, 1.6, 1.95) < rms(audio, 2.0, 2.2) / 4  # beat 2 is at 2 s, not at 1.5 s


def test_program_changes_the_spectrum_and_drums_use_the_percussion_bank():
    note = [(0.0, 1.0, 60, 100)]
    spectra = {program: spectrum(fs.render(make_score(note, program=program), sample_rate=RATE, tail=0.0))
               for program in (0, 40, 73)}
    same = spectrum(fs.render(make_score(note, program=0), sample_rate=RATE, tail=0.0))
    assert float(spectra[0] @ same) == pytest.approx(1.0, abs=1e-6)
    for a, b in ((0, 40), (0, 73), (40, 73)):
        assert float(spectra[a] @ spectra[b]) < 0.9, f"programs {a} and {b} sound alike"
    kick = fs.render(make_score([(0.0, 0.5, 36, 100)], is_drum=True), sample_rate=RATE, tail=0.0)
    hihat = fs.render(make_score([(0.0, 0.5, 42, 100)], is_drum=True), sample_rate=RATE, tail=0.0)
    kick_spectrum, hihat_spectrum = spectrum(kick), spectrum(hihat)
    frequencies = np.fft.rfftfreq(len(kick), 1 / RATE)
    centroid = lambda s: float((frequencies * s ** 2).sum() / (s ** 2).sum())  # noqa: E731
    assert centroid(hihat_spectrum) > 3 * centroid(kick_spectrum)  # a hi-hat is brighter than a kick drum


def test_sustain_pedal_holds_notes_and_velocity_sets_level():
    short = [(0.0, 0.2, 48, 100)]
    dry = make_score(short)
    pedalled = make_score(short)
    pedalled.tracks[0].controls.append(symusic.ControlChange(0, 64, 127))
    pedalled.tracks[0].controls.append(symusic.ControlChange(2000, 64, 0))
    dry_audio = fs.render(dry, sample_rate=RATE, normalize=False, tail=0.5)
    pedal_audio = fs.render(pedalled, sample_rate=RATE, normalize=False, tail=0.5)
    assert rms(pedal_audio, 1.0, 1.5) > 5 * rms(dry_audio, 1.0, 1.5)
    # A pedal given as symusic Pedal objects (no CC 64 in the track) holds the note too.
    pedal_objects = make_score(short)
    pedal_objects.tracks[0].pedals.append(symusic.Pedal(0, 2000))
    assert rms(fs.render(pedal_objects, sample_rate=RATE, normalize=False), 1.0, 1.5) > 5 * rms(dry_audio, 1.0, 1.5)
    soft = fs.render(make_score([(0.0, 0.5, 60, 30)]), sample_rate=RATE, normalize=False)
    loud = fs.render(make_score([(0.0, 0.5, 60, 120)]), sample_rate=RATE, normalize=False)
    assert rms(loud, 0.0, 0.5) > 2 * rms(soft, 0.0, 0.5)


def test_each_track_has_its_own_channel_and_controllers():
    muted = make_score([(0.0, 1.0, 60, 100)])
    muted.tracks[0].controls.append(symusic.ControlChange(0, 7, 0))  # channel volume 0
    alone = fs.render(muted, sample_rate=RATE, normalize=False)
    assert np.max(np.abs(alone)) < 1e-4
    other = symusic.Track(program=0)
    other.notes.append(symusic.Note(0, 1000, 67, 100))
    muted.tracks.append(other)  # same program, but its own channel: the volume change does not reach it
    both = fs.render(muted, sample_rate=RATE, normalize=False)
    reference = symusic.Score(muted.tpq)
    reference.tempos = muted.tempos
    reference.tracks.append(other)
    other_alone = fs.render(reference, sample_rate=RATE, normalize=False)
    assert rms(other_alone, 0.0, 0.8) > 1e-3
    assert rms(both, 0.0, 0.8) == pytest.approx(rms(other_alone, 0.0, 0.8), rel=0.05)


def test_stereo_deterministic_and_multitrack_chorale(bach_scores):
    score = bach_scores[0]
    seconds = score.to("second")
    clipped = score.clip(0, score.tpq * 8)  # two bars
    stereo = fs.render(clipped, sample_rate=16000, stereo=True, tail=0.5)
    assert stereo.shape[1] == 2 and stereo.dtype == np.float32
    expected = clipped.to("second").end() + 0.5
    assert abs(len(stereo) / 16000 - expected) < 1e-3
    again = fs.render(clipped, sample_rate=16000, stereo=True, tail=0.5)
    assert np.array_equal(stereo, again)
    mono = fs.render(clipped, sample_rate=16000, tail=0.5)
    assert np.allclose(mono / np.abs(mono).max(), stereo.mean(axis=1) / np.abs(stereo.mean(axis=1)).max(), atol=1e-5)
    assert len(seconds.tracks) >= 4  # every voice of the chorale gets a channel
    first_onset = min(t.notes[0].time for t in seconds.tracks if len(t.notes))
    assert rms(mono, first_onset, first_onset + 0.3, 16000) > 0.05


def test_soundfont_choice(monkeypatch, tmp_path):
    default = fs.default_soundfont()
    assert default.suffix.lower() in (".sf2", ".sf3") and default.is_file()
    monkeypatch.setenv("CADENZA_SOUNDFONT", str(default))
    assert fs.default_soundfont() == default.resolve()
    monkeypatch.setenv("CADENZA_SOUNDFONT", str(tmp_path / "missing.sf2"))
    with pytest.raises(CadenzaError, match="missing.sf2"):
        fs.default_soundfont()
    text = tmp_path / "notes.txt"
    text.write_text("not a soundfont")
    with pytest.raises(CadenzaError, match="sf2"):
        fs.render(make_score([(0, 0.1, 60, 90)]), soundfont=text)
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    with pytest.raises(CadenzaError, match="cannot load"):
        fs.render(make_score([(0, 0.1, 60, 90)]), soundfont=broken)


@without_fluidsynth
def test_missing_library_names_the_install_command_and_fallback_still_renders(monkeypatch):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # import fluidsynth -> ImportError
    monkeypatch.setattr(fs, "_SOUNDFONTS", {})
    score = make_score([(0.25, 0.5, 69, 100)])
    with pytest.raises(MissingDependencyError, match="apt-get install libfluidsynth3"):
        fs.render(score)
    with pytest.warns(RuntimeWarning) if _symusic_synth_broken() else contextlib.nullcontext():
        audio = fs.render(score, sample_rate=16000, allow_fallback=True, tail=0.5)
    assert len(audio) == int(np.ceil(1.25 * 16000))
    assert rms(audio, 0.0, 0.2, 16000) < 1e-4 < rms(audio, 0.3, 0.6, 16000)
    peak_hz = np.fft.rfftfreq(8000, 1 / 16000)[np.argmax(np.abs(np.fft.rfft(audio[4000:12000])))]
    assert abs(peak_hz - 440) < 5


def _symusic_synth_broken() -> bool:
    from cadenza.rendering.fallback import _render_symusic

    return _render_symusic(make_score([(0, 0.1, 60, 90)]).to("second"), fs.default_soundfont(), 16000) is None


@without_fluidsynth
@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_audio_round_trip_atomic(tmp_path, suffix):
    rate = 16000
    t = np.arange(rate) / rate
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_audio(tmp_path / f"tone{suffix}", np.stack([audio, -audio], axis=1), rate)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tone{suffix}"]  # no temporary file left
    loaded, loaded_rate = load_audio(path, mono=False)
    assert loaded_rate == rate and loaded.shape == (rate, 2)
    assert np.max(np.abs(loaded[:, 0] - audio)) < 1.5 / 32768
    down, down_rate = load_audio(path, sample_rate=8000)
    assert down_rate == 8000 and len(down) == 8000 and np.max(np.abs(down)) < 1e-3  # the channels cancel
    assert len(resample(audio, rate, 22050)) == 22050
    with pytest.raises(CadenzaError, match="wav or .flac"):
        write_audio(tmp_path / "tone.mp3", audio, rate)


# --- SoundFont files built here: a sine-wave instrument as .sf2 and as .sf3 (Ogg Vorbis samples) ---

SINE_RATE, SINE_ROOT = 44000, 69  # 100 frames per cycle of A4 = 440 Hz, so the loop is seamless


def _chunk(tag: bytes, data: bytes) -> bytes:
    import struct

    return tag + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def sine_soundfont(path, compressed: bool) -> None:
    """Write a one-preset SoundFont whose only sample is a looped 440 Hz sine (root key A4).

    In an .sf3 the sample data is an Ogg Vorbis stream, the sample header's start/end are byte
    offsets into it, its loop points count frames from the sample's start, and its type has
    the Ogg Vorbis flag (0x10)."""
    import io as _io
    import struct

    import soundfile

    frames = 4400
    sine = (0.8 * np.sin(2 * np.pi * 440 * np.arange(frames) / SINE_RATE) * 32767).astype(np.int16)
    if compressed:
        buffer = _io.BytesIO()
        soundfile.write(buffer, sine.astype(np.float32) / 32768, SINE_RATE, format="OGG", subtype="VORBIS")
        sample_data = buffer.getvalue()
        start, end, loop_start, loop_end, sample_type = 0, len(sample_data), 100, 4300, 1 | 0x10
    else:
        sample_data = sine.tobytes() + bytes(2 * 46)  # 46 zero frames must follow every sample
        start, end, loop_start, loop_end, sample_type = 0, frames, 100, 4300, 1
    name = lambda text: text.encode().ljust(20, b"\0")  # noqa: E731
    info = _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 3 if compressed else 2, 1)),
                 _chunk(b"isng", b"EMU8000\0"), _chunk(b"INAM", b"sine\0\0"))
    sdta = _list(b"sdta", _chunk(b"smpl", sample_data))
    pdta = _list(
        b"pdta",
        _chunk(b"phdr", name("sine") + struct.pack("<HHHIII", 0, 0, 0, 0, 0, 0)
               + name("EOP") + struct.pack("<HHHIII", 0, 0, 1, 0, 0, 0)),
        _chunk(b"pbag", struct.pack("<HH", 0, 0) + struct.pack("<HH", 1, 0)),
        _chunk(b"pmod", bytes(10)),
        _chunk(b"pgen", struct.pack("<HH", 41, 0) + bytes(4)),  # instrument 0
        _chunk(b"inst", name("sine") + struct.pack("<H", 0) + name("EOI") + struct.pack("<H", 1)),
        _chunk(b"ibag", struct.pack("<HH", 0, 0) + struct.pack("<HH", 2, 0)),
        _chunk(b"imod", bytes(10)),
        _chunk(b"igen", struct.pack("<Hh", 54, 1) + struct.pack("<HH", 53, 0) + bytes(4)),  # looped; sample 0
        _chunk(b"shdr", name("sine") + struct.pack("<IIIIIBbHH", start, end, loop_start, loop_end, SINE_RATE,
                                                    SINE_ROOT, 0, 0, sample_type) + name("EOS") + bytes(26)),
    )
    path.write_bytes(_chunk(b"RIFF", b"sfbk" + info + sdta + pdta))


@pytest.mark.parametrize("suffix", [".sf2", ".sf3"])
def test_soundfont_files_sf2_and_sf3_play_at_the_right_pitch(tmp_path, monkeypatch, suffix):
    soundfont = tmp_path / f"sine{suffix}"
    sine_soundfont(soundfont, compressed=suffix == ".sf3")
    monkeypatch.setenv("CADENZA_SOUNDFONT", str(soundfont))
    for pitch, hertz in ((69, 440.0), (81, 880.0)):
        audio = fs.render(make_score([(0.0, 1.0, pitch, 110)]), sample_rate=RATE, tail=0.2)
        segment = audio[int(0.2 * RATE):int(0.9 * RATE)]
        frequencies = np.fft.rfftfreq(len(segment), 1 / RATE)
        peak = frequencies[np.argmax(np.abs(np.fft.rfft(segment * np.hanning(len(segment)))))]
        assert abs(peak - hertz) < 3, f"{suffix}: pitch {pitch} sounds at {peak:.1f} Hz"
        assert rms(audio, 0.2, 0.9) > 0.1  # held for the note's full second by the loop
