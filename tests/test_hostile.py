"""Every command against a generated corpus of broken and extreme inputs (tests/hostile_inputs.py).

Each run must end in one of two ways: success, with every output in the format its extension
names, or one line on stderr naming the file (or the option) with exit status 2. Never a
traceback, never a run past its time bound, never an output left behind by a failed run and
never a temporary file left beside an output. Most runs call ``cadenza.cli.main.main`` in this
process (the same code path as the command, without a Python start-up per case); a few run as
real subprocesses, for what only a process shows (a closed pipe, SIGTERM, --help).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_inputs
from conftest import REPO

CASE_SECONDS = 120
MUSIC = (".mid", ".musicxml", ".mxl", ".krn", ".abc")
AUDIO = (".wav", ".flac", ".ogg")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, bach_pieces):
    return hostile_inputs.build(tmp_path_factory.mktemp("hostile"), chorale=bach_pieces[0].path)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    from cadenza.symbolic.registry import MODELS_DIR

    root = tmp_path_factory.mktemp("checkpoints")
    (root / "event").mkdir()
    (root / "transcriber").mkdir()
    return {"event": hostile_inputs.checkpoint_variants(root / "event", MODELS_DIR / "bach-event"),
            "transcriber": hostile_inputs.checkpoint_variants(root / "transcriber", MODELS_DIR / "transcriber-piano")}


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(argv: list[str]) -> tuple[object, str, str]:
    """(exit status, stdout, stderr) of ``cadenza ARGV`` run in this process; an exception that
    escapes main is returned as the status 'traceback: ...'."""
    from cadenza.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    except CaseTimeout:
        status = f"timeout after {CASE_SECONDS} s"
    except BaseException as exc:  # noqa: BLE001 - exactly what the suite exists to catch
        status = f"traceback: {type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return status, out.getvalue(), err.getvalue()


def output_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole file of the format its extension names (None when it is)."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if not data:
        return "empty"
    if suffix in (".mid", ".midi"):
        ok = data.startswith(b"MThd")
    elif suffix in (".musicxml", ".xml"):
        ok = data.lstrip().startswith(b"<?xml") and b"score-partwise" in data[:4000]
    elif suffix == ".mxl":
        ok = data.startswith(b"PK")
    elif suffix == ".wav":
        ok = data.startswith(b"RIFF") and data[8:12] == b"WAVE"
    elif suffix == ".flac":
        ok = data.startswith(b"fLaC")
    elif suffix == ".png":
        ok = data.startswith(b"\x89PNG")
    elif suffix in (".jpg", ".jpeg"):
        ok = data.startswith(b"\xff\xd8\xff")
    elif suffix == ".svg":
        ok = b"<svg" in data[:2000] and data.rstrip().endswith(b"</svg>")
    elif suffix == ".json":  # ids (a list of integers) or a preset (an object)
        try:
            value = json.loads(data)
            ok = isinstance(value, dict) or (isinstance(value, list) and all(isinstance(i, int) for i in value))
        except ValueError:
            ok = False
    elif suffix == ".html":
        ok = data.lstrip().lower().startswith(b"<!doctype html") and data.rstrip().endswith(b"</html>")
    else:
        return f"unexpected output {path.name}"
    return None if ok else f"{path.name} is not a {suffix} file"


def problems(argv, status, stdout, stderr, out_dir: Path, names: tuple[str, ...]) -> list[str]:
    """What is wrong with one run (an empty list when it behaved)."""
    found = []
    if "Traceback" in stderr or (isinstance(status, str)):
        found.append(f"status {status}; stderr {stderr.strip()[-300:]}")
        return found
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    leftovers = [p.name for p in files if p.name.startswith(".")]
    if leftovers:
        found.append(f"temporary files left: {leftovers}")
    if status == 0:
        found += [f"{problem}" for p in files if not p.name.startswith(".") and (problem := output_problem(p))]
    elif status == 2:
        lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if not last.startswith("cadenza") or "error:" not in last:
            found.append(f"exit 2 without a one-line error: {stderr.strip()[-300:]!r}")
        elif names and not any(name in last for name in names):
            found.append(f"the error does not name {' or '.join(names)}: {last}")
        if [p for p in files if not p.name.startswith(".")]:
            found.append(f"a failed run left outputs: {[p.name for p in files]}")
    else:
        found.append(f"exit status {status}: {stderr.strip()[-300:]}")
    return found


class Runner:
    """Runs cases, each with a fresh output directory, and collects every problem."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0
        self.failures: list[str] = []
        self.statuses: dict[str, object] = {}

    def __call__(self, argv: list, names: tuple[str, ...] = (), *, key: str | None = None,
                 expect: str | None = None) -> tuple[object, str, str]:
        self.count += 1
        out_dir = self.root / f"case{self.count}"
        out_dir.mkdir()
        argv = [str(a).replace("OUT", str(out_dir)) for a in argv]
        started = time.perf_counter()
        status, stdout, stderr = run_case(argv)
        elapsed = time.perf_counter() - started
        label = " ".join(Path(a).name if "/" in a else a for a in argv)
        for problem in problems(argv, status, stdout, stderr, out_dir, names):
            self.failures.append(f"cadenza {label}: {problem}")
        if expect == "ok" and status != 0:
            self.failures.append(f"cadenza {label}: expected success, got {status}: {stderr.strip()[-200:]}")
        elif expect not in (None, "ok") and (status != 2 or expect not in stderr):
            self.failures.append(f"cadenza {label}: expected a refusal naming {expect!r}, got {status}: "
                                 f"{stderr.strip()[-200:]}")
        self.statuses[key or label] = (status, round(elapsed, 2))
        shutil.rmtree(out_dir)
        return status, stdout, stderr

    def check(self):
        assert not self.failures, f"{len(self.failures)} of {self.count} runs misbehaved:\n" + "\n".join(self.failures)


# What reading each input must give: success, or a refusal naming this text.
EXPECTED_READ = {
    "plain.mid": "ok", "plain.musicxml": "ok", "plain.abc": "ok", "chorale.mid": "ok", "drums.mid": "ok",
    "pitch-0-127.mid": "ok", "tempo-1us.mid": "ok", "tempo-max.mid": "ok", "tempo-1bpm.abc": "ok",
    "tempo-1bpm.musicxml": "ok", "absurd-short.abc": "ok",
    "zip-bomb.mxl": "--max-uncompressed-mb", "note-at-1e9.mid": "--max-seconds",
    "two-hour-silence.mid": "--max-seconds", "1000-at-once.mid": "--max-polyphony",
    "tempo-0us.mid": "microseconds per quarter", "smpte.mid": "SMPTE", "absurd-length.abc": "too long for MIDI",
    "no-mthd.mid": "no MThd", "empty.mid": "empty", "directory.mid": "directory", "no-notes.mid": "no notes",
    "syntax-error.abc": "syntax error", "entity-bomb.musicxml": "entity-bomb.musicxml",
}


def _music(corpus):
    return {name: path for name, path in corpus.items() if path.suffix in MUSIC}


def test_info_on_every_input(corpus, tmp_path):
    run = Runner(tmp_path)
    for name, path in corpus.items():
        expect = EXPECTED_READ.get(name)
        if name in ("silent.wav", "8khz.wav", "96khz-stereo.wav", "nan.wav", "tone.flac", "tone.ogg"):
            expect = "ok"
        status, stdout, _ = run(["info", path], (name,), expect=expect)
        if status == 0 and path.suffix in AUDIO:
            assert "sample rate" in stdout and "channels" in stdout and "peak level" in stdout, stdout
    run(["info", corpus["plain.mid"].parent / "missing.mid"], ("missing.mid",), expect="no such file")
    run.check()
    data = json.loads(run_case(["info", corpus["96khz-stereo.wav"], "--json"])[1])
    assert (data["sample_rate"], data["channels"], data["duration_seconds"]) == (96000, 2, 1.0)
    assert data["peak"] == pytest.approx(0.5, abs=1e-3) and data["peak_dbfs"] == pytest.approx(-6.02, abs=0.01)
    assert not json.loads(run_case(["info", corpus["nan.wav"], "--json"])[1])["finite"]
    for name in ("tempo-1bpm.abc", "tempo-1bpm.musicxml"):  # not 6.21, the 24-bit wrap of 60,000,000 us
        assert json.loads(run_case(["info", corpus[name], "--json"])[1])["tempos_qpm"] == [1.0]


@pytest.mark.parametrize("scheme", ["event", "remi", "anticipatory"])
def test_tokenize_every_input(corpus, tmp_path, scheme):
    run = Runner(tmp_path)
    for name, path in _music(corpus).items():
        expect = EXPECTED_READ.get(name)
        if name == "pitch-0-127.mid" and scheme == "remi":
            expect = "outside REMI's pitch range"  # miditok would drop them without a word
        elif expect == "ok" and not name.startswith(("plain", "chorale")):
            expect = None  # a scheme may have no ids for drums, or times or pitches past its range
        run(["tokenize", path, "--scheme", scheme, "-o", "OUT/ids.json"], (name,), expect=expect)
    run.check()


@pytest.mark.parametrize("scheme", ["event", "remi", "anticipatory"])
def test_tokenizer_encode_in_python_on_every_input(corpus, tmp_path, scheme):
    """``Tokenizer.encode(path)`` in Python reads a MIDI file by its reference's rules, not
    through read_score (where the command's checks are): on every input it gives ids or a
    CadenzaError, never another exception. A tempo of 0 microseconds per quarter (the Event
    scheme divided by it, as pretty_midi does; note_seq turns that into MIDIConversionError;
    the anticipatory scheme put every note at 0 s) is refused by every scheme, from a path
    or a Score, at tick 0 or later; the Event reader keeps to the duration limit too."""
    import symusic

    from cadenza.data.errors import CadenzaError
    from cadenza.data.limits import raised
    from cadenza.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(scheme)
    wrong = []
    for name, path in _music(corpus).items():
        try:
            ids = tokenizer.encode(path)
            assert len(ids) > 0, name
        except CadenzaError:
            pass
        except Exception as exc:  # noqa: BLE001 - what the test exists to catch
            wrong.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not wrong, wrong

    later = tmp_path / "tempo-0us-later.mid"
    later.write_bytes(hostile_inputs.midi_file([[(0, hostile_inputs.tempo(500000)), (960, hostile_inputs.tempo(0))]
                                                + hostile_inputs.scale()]))
    for path, tick in ((corpus["tempo-0us.mid"], 0), (later, 960)):
        for source in (path, symusic.Score(str(path))):
            with pytest.raises(CadenzaError, match=f"a tempo of 0 microseconds per quarter note at tick {tick} ") as caught:
                tokenizer.encode(source)
            assert source is not path or str(path) in str(caught.value)
    if scheme == "event":
        with pytest.raises(CadenzaError, match="--max-seconds"):
            tokenizer.encode(corpus["note-at-1e9.mid"])
        with raised(max_seconds=2e6):
            assert len(tokenizer.encode(corpus["note-at-1e9.mid"])) > 1_000_000  # a shift per second of silence


def test_detokenize_every_ids_file(corpus, tmp_path):
    run = Runner(tmp_path)
    for name, path in corpus.items():
        if path.suffix == ".json" or name in ("directory.mid", "plain.mid"):
            run(["detokenize", path, "--scheme", "event", "-o", "OUT/back.mid"], (name,))
    status, _, stderr = run(["detokenize", corpus["ids-nested.json"], "-o", "OUT/back.mid"])
    assert status == 2 and "nested" in stderr
    run.check()


def test_render_every_input(corpus, tmp_path):
    run = Runner(tmp_path)
    for name, path in _music(corpus).items():
        run(["render", path, "-o", "OUT/a.wav", "--pianoroll", "OUT/roll.png", "--score", "OUT/score.svg"], (name,),
            expect=EXPECTED_READ.get(name))
    plain = corpus["plain.mid"]
    run(["render", plain, "--pianoroll", "OUT/roll.jpg"], expect="ok")
    run(["render", plain, "--pianoroll", "OUT/roll.svg", "--synth", "ddsp", "-o", "OUT/a.flac"], expect="ok")
    run(["render", plain, "--score", "OUT/score.png"], expect="--score")
    run(["render", plain, "--pianoroll", "OUT/roll.gif"], expect="--pianoroll")
    run(["render", plain, "-o", "OUT/a.mp3"], expect="-o/--output")
    run(["render", plain, "--sheet", "OUT/sheet.txt"], expect="--sheet")
    run(["render", plain, "-o", "OUT/a.wav", "--index", "2"], ("plain.mid",), expect="index 2")
    run(["render", corpus["two-hour-silence.mid"], "-o", "OUT/a.wav", "--max-seconds", "1"],
        expect="--max-seconds")
    run.check()


GENERATE_FROM = ("plain.mid", "plain.abc", "chorale.mid", "drums.mid", "pitch-0-127.mid", "zero-length.mid",
                 "tempo-1us.mid", "never-closed.mid")


def test_generation_commands_on_every_input(corpus, tmp_path):
    run = Runner(tmp_path)
    for name, path in _music(corpus).items():
        expect = EXPECTED_READ.get(name)
        if name not in GENERATE_FROM and expect == "ok":
            continue  # every refusal, and a sample of what reads (info reads every input)
        run(["continue", path, "-o", "OUT/c.mid", "--tokens", "8", "--model", "bach-event"], (name,),
            expect=None if name == "drums.mid" else expect)
        for command in (["infill", path, "--start", "0", "--end", "1"], ["accompany", path, "--melody-track", "0"]):
            run([*command, "-o", "OUT/g.mid"], (name,), expect=None if expect == "ok" else expect)
    run.check()


def test_transcribe_every_input(corpus, tmp_path):
    run = Runner(tmp_path)
    for name, path in corpus.items():
        if path.suffix in AUDIO + (".mid", ".json") or name == "directory.mid":
            run(["transcribe", path, "-o", "OUT/t.mid"], (name,),
                expect="ok" if name in ("silent.wav", "8khz.wav", "96khz-stereo.wav", "tone.flac") else None)
    run(["transcribe", corpus["8khz.wav"], "-o", "OUT/t.musicxml"], expect="ok")
    run(["transcribe", corpus["8khz.wav"], "--output", "OUT/t.wav"], expect="-o/--output")
    run.check()


def test_ddsp_fitting_on_broken_recordings_and_notes(corpus, tmp_path):
    run = Runner(tmp_path)
    for reference in ("8khz.wav", "nan.wav", "silent.wav", "random.wav", "plain.mid", "directory.mid"):
        for notes in ("plain.mid", "drums.mid", "note-at-1e9.mid", "8khz.wav", "empty.mid"):
            names = (reference, notes)
            run(["ddsp-fit", corpus[reference], corpus[notes], "-o", "OUT/p.json", "--steps", "1", "--seconds", "1"],
                names)
            run(["ddsp-velocities", corpus[reference], corpus[notes], "-o", "OUT/v.mid", "--steps", "1"], names)
    run(["ddsp-fit", corpus["8khz.wav"], corpus["plain.mid"], "-o", "OUT/p.txt", "--steps", "1"], expect="-o/--output")
    run.check()
    assert run.statuses["ddsp-fit 8khz.wav plain.mid -o p.json --steps 1 --seconds 1"][0] == 0


def test_hostile_checkpoints_for_every_model_kind(corpus, checkpoints, tmp_path, bach_valid_piece):
    run = Runner(tmp_path)
    plain, audio = corpus["plain.mid"], corpus["8khz.wav"]
    for name, directory in checkpoints["event"].items():
        for argv in (["continue", plain, "-o", "OUT/c.mid", "--tokens", "4"],
                     ["infill", plain, "--start", "0", "--end", "1", "-o", "OUT/c.mid"],
                     ["evaluate", "--split", "valid", "--limit-pieces", "1"]):
            status, _, _ = run([*argv, "--model", directory], (name,))
            assert status == 2, (argv, name)
    for name, directory in checkpoints["transcriber"].items():
        status, _, _ = run(["transcribe", audio, "-o", "OUT/t.mid", "--model", directory], (name,))
        assert status == 2, name
    # a transcriber whose config lost a field is a damaged transcriber, not "not a transcription checkpoint"
    run(["transcribe", audio, "-o", "OUT/t.mid", "--model", checkpoints["transcriber"]["ckpt-missing-field"]],
        expect="has no n_mels")
    run(["evaluate", "--model", "no-such-model"], ("no-such-model",), expect="not a shipped model")
    # one validation chorale of its own: the model's training corpus would be exported whole first
    # (minutes in a fresh checkout), past the case's time bound
    valid = tmp_path / "valid-corpus"
    valid.mkdir()
    (valid / f"{bach_valid_piece.id}.mid").write_bytes(bach_valid_piece.path.read_bytes())
    status, stdout, stderr = run(["evaluate", "--model", "bach-event", "--corpus", valid, "--split", "valid",
                                  "--limit-pieces", "1", "--quiet"], expect="ok")
    assert status == 0 and "bits per note" in stdout, (status, stderr[-300:])  # a shipped model's name
    run(["continue", plain, "-o", "OUT/c.mid", "--model", plain], ("plain.mid",), expect="not a checkpoint")
    run.check()


def test_every_shipped_model_passes_the_checks_it_is_loaded_through():
    """The validation is the loading path of every model kind: each shipped model goes through it."""
    from cadenza.symbolic.checkpoint import load_checkpoint, read_safetensors_header
    from cadenza.symbolic.registry import list_models
    from cadenza.transcription.inference import load_transcriber

    kinds = set()
    for entry in list_models():
        header = read_safetensors_header(entry.path / "model.safetensors")
        load = load_transcriber if entry.kind == "transcription" else load_checkpoint
        model = load(entry.path)[0]
        assert {name: tuple(t.shape) for name, t in model.state_dict().items() if name in header} == \
            {name: shape for name, (_, shape) in header.items()}
        kinds.add(entry.kind)
    assert kinds == {"music-transformer", "transcription"}


NUMERIC_VALUES = ("nan", "inf", "-inf", "-1", "0", "1e308", "123456789012345678901234567890")
NUMERIC_OPTIONS = {
    "continue": (["continue", "PLAIN", "-o", "OUT/c.mid", "--model", "bach-event", "--tokens", "4"],
                 ("--temperature", "--top-p", "--top-k", "--max-tokens", "--seconds", "--tokens", "--bars",
                  "--num-samples", "--seed", "--index")),
    "infill": (["infill", "PLAIN", "--start", "0", "--end", "1", "-o", "OUT/c.mid"],
               ("--start", "--end", "--temperature", "--top-p", "--top-k", "--seed")),
    "accompany": (["accompany", "PLAIN", "--melody-track", "0", "-o", "OUT/c.mid", "--end", "1"],  # a later --end wins
                  ("--prompt-seconds", "--end", "--melody-track", "--temperature")),
    "render": (["render", "PLAIN", "-o", "OUT/a.wav"], ("--tail", "--sample-rate", "--boundary", "--index")),
    "transcribe": (["transcribe", "AUDIO", "-o", "OUT/t.mid"], ("--batch-segments",)),
    "info": (["info", "PLAIN"], ("--index", "--max-seconds", "--max-notes", "--max-polyphony")),
    "tokenize": (["tokenize", "PLAIN", "--scheme", "anticipatory", "--controls", "random:0.3"], ("--seed",)),
}


@pytest.mark.parametrize("command", sorted(NUMERIC_OPTIONS))
def test_numeric_options_are_finite_and_in_range(corpus, tmp_path, command):
    """NaN and infinity are refused for every numeric option, naming it; other values either
    work or are refused the same way (0 is greedy for --temperature, 0 s is a valid --start)."""
    run = Runner(tmp_path)
    base, options = NUMERIC_OPTIONS[command]
    base = [{"PLAIN": corpus["plain.mid"], "AUDIO": corpus["8khz.wav"]}.get(a, a) for a in base]
    for option in options:
        for value in NUMERIC_VALUES:
            argv = [*base, option, value]
            if option == "--end" and command == "infill":
                argv = [*base[:2], "--start", "0", "--end", value, *base[6:]]
            # a value that is not a number of the option's type is refused by the parser, naming it too
            expect = option.lstrip("-").split("-")[0] if value in ("nan", "inf", "-inf") else None
            status, _, stderr = run(argv, (option,) if value in ("nan", "inf", "-inf", "-1") else ())
            if expect is not None:
                assert status == 2 and option in stderr, (argv, status, stderr)
    run.check()


def test_option_rules_stated_in_the_issue(corpus, tmp_path):
    run = Runner(tmp_path)
    plain = corpus["plain.mid"]
    cont = ["continue", plain, "-o", "OUT/c.mid", "--model", "bach-event"]
    run([*cont, "--temperature", "-1"], expect="--temperature")
    run([*cont, "--temperature", "0", "--tokens", "4"], expect="ok")  # greedy
    run([*cont, "--top-p", "0"], expect="--top-p")
    run([*cont, "--top-p", "5"], expect="--top-p")
    run([*cont, "--top-p", "1", "--tokens", "4"], expect="ok")
    run([*cont, "--top-k", "0"], expect="--top-k")
    run([*cont, "--max-tokens", "0", "--seconds", "2"], expect="--max-tokens")
    run([*cont, "--seconds", "nan"], expect="--seconds")
    run(["render", plain, "-o", "OUT/a.wav", "--tail", "-5"], expect="--tail")
    run(["infill", plain, "--start", "2", "--end", "1", "-o", "OUT/c.mid"], expect="--start")
    run(["infill", plain, "--start", "nan", "--end", "1", "-o", "OUT/c.mid"], expect="--start")
    run(["infill", plain, "--start", "0", "--end", "inf", "-o", "OUT/c.mid"], expect="--end")
    run.check()


def test_outputs_take_their_format_from_the_extension(corpus, tmp_path):
    run = Runner(tmp_path)
    plain = corpus["plain.mid"]
    for suffix in (".mid", ".musicxml", ".wav"):
        out = tmp_path / f"continued{suffix}"
        status, _, stderr = run_case(["continue", plain, "-o", out, "--tokens", "8", "--model", "bach-event"])
        assert status == 0, stderr
        assert output_problem(out) is None
    for argv in (["continue", plain, "--tokens", "8", "--model", "bach-event"],
                 ["infill", plain, "--start", "0", "--end", "1"], ["accompany", plain, "--melody-track", "0"]):
        run([*argv, "-o", "OUT/noext"], ("noext",), expect="-o/--output")
        run([*argv, "-o", "OUT/x.txt"], ("x.txt",), expect="-o/--output")
    run.check()


def test_unwritable_outputs_are_one_line_errors(corpus, tmp_path):
    run = Runner(tmp_path)
    plain, blocker = corpus["plain.mid"], corpus["a-file"]
    for place in ("/proc/cadenza-test", f"{blocker}/under-a-file", str(corpus["directory.mid"])):
        def output(suffix):  # the directory case keeps its own name, whatever the command writes
            return place if place.endswith(".mid") else place + suffix
        name = Path(place).name
        run(["continue", plain, "-o", output(".mid"), "--tokens", "4", "--model", "bach-event"], (name,))
        run(["infill", plain, "--start", "0", "--end", "1", "-o", output(".mid")], (name,))
        run(["tokenize", plain, "-o", output(".json")], (name,))
        run(["transcribe", corpus["8khz.wav"], "-o", output(".mid")], (name,))
        run(["render", plain, "-o", output(".wav")], (name,))
    assert not list(corpus["directory.mid"].iterdir()), "nothing may be left in the directory"
    run.check()
    for status, _ in run.statuses.values():
        assert status == 2


def test_kern_with_repeats_music21_cannot_unfold_is_read():
    """chopin/mazurka06-2.krn: music21 parses it, but its MIDI writer refuses the repeats."""
    import music21

    from cadenza.data.io import read_score

    path = Path(music21.__file__).parent / "corpus" / "chopin" / "mazurka06-2.krn"
    score = read_score(path)
    assert score.note_num() > 500 and 60 < score.to("second").end() < 120


# -- real subprocesses: what only a process shows -------------------------------------------------
def _cadenza(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cadenza.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kwargs)


def _long_midi(path: Path, minutes: int) -> Path:
    """A piece of ``minutes`` minutes at 120 qpm, four notes a beat (large outputs, long renders)."""
    import symusic

    score = symusic.Score(480)
    track = symusic.Track("long", 0, False)
    for beat in range(2 * 60 * minutes):
        for pitch in (48, 55, 60, 64):
            track.notes.append(symusic.Note(beat * 480, 480, pitch, 80))
    score.tracks.append(track)
    score.dump_midi(str(path))
    return path


def test_an_anticipatory_continuation_of_a_prompt_longer_than_its_ids_hold(tmp_path):
    """Anticipatory ids hold times below 100 s. A 3-minute prompt is refused in one line naming
    the file; its last 30 s (--prompt-seconds) are continued, and the output keeps the whole
    prompt before the new notes (counting the prompt's notes re-encoded the whole prompt, which
    failed after the continuation was made, in a line that named no file)."""
    import symusic

    source = _long_midi(tmp_path / "long.mid", 3)
    out = tmp_path / "out"
    out.mkdir()
    base = ["continue", source, "--model", "bach-anticipatory", "-o", out / "c.mid", "--tokens", "30"]
    status, _, stderr = run_case(base)
    assert status == 2 and stderr.count("\n") == 1 and "long.mid" in stderr and "100 s" in stderr, stderr
    assert "--prompt-seconds" in stderr and "overlong='clip'" not in stderr  # options, not Python internals
    assert not list(out.iterdir())
    status, stdout, stderr = run_case([*base, "--prompt-seconds", "30"])
    assert status == 0, stderr
    prompt, result = symusic.Score(str(source)), symusic.Score(str(out / "c.mid"))
    new = result.note_num() - prompt.note_num()
    assert new > 0 and f"({new} new)" in stdout, stdout
    head = [(n.time, n.pitch) for n in prompt.tracks[0].notes][:400]
    assert [(n.time, n.pitch) for n in result.tracks[0].notes][:400] == head


def test_a_closed_pipe_is_quiet(tmp_path):
    """``cadenza tokenize ... | head -c 1``: the reader leaves after one byte of ~200 KB."""
    source = _long_midi(tmp_path / "long.mid", 10)
    proc = subprocess.run(f"{sys.executable} -m cadenza.cli.main tokenize {source} --json | head -c 1 > /dev/null",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_subprocess_errors_are_one_line(corpus, tmp_path):
    for args, name in ((["info", corpus["truncated-22.mid"]], "truncated-22.mid"),
                       (["continue", corpus["plain.mid"], "-o", tmp_path / "c.mid", "--temperature", "nan"],
                        "--temperature"),
                       (["render", corpus["note-at-1e9.mid"], "-o", tmp_path / "a.wav"], "--max-seconds"),
                       (["continue", corpus["plain.mid"]], "-o/--output")):
        proc = _cadenza(*args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and name in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_sigterm_leaves_no_output_and_no_temporary_file(tmp_path):
    """A render stopped by SIGTERM (what timeout and container stops send) unwinds: the output
    path never holds a half-written file and no temporary file is left beside it."""
    source = _long_midi(tmp_path / "long.mid", 50)
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "cadenza.cli.main", "render", str(source), "-o",
                                str(out / "long.wav"), "--sample-rate", "8000"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None and not _catches_sigterm(process.pid):
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.strip() == "cadenza: terminated"
    assert list(out.iterdir()) == []


def test_tokenize_remi_starts_within_two_seconds_of_event(bach_pieces):
    """miditok's package would import torch (seconds) for data loaders REMI never uses. Measured
    as the command's CPU time (user + system of the child), which a loaded machine does not
    stretch the way it stretches wall time."""
    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def best(scheme):
        times = []
        for _ in range(2):
            started = cpu_seconds()
            proc = _cadenza("tokenize", bach_pieces[0].path, "--scheme", scheme, "--json")
            times.append(cpu_seconds() - started)
            assert proc.returncode == 0, proc.stderr
        return min(times)

    event, remi = best("event"), best("remi")
    assert remi < event + 2.0, (event, remi)


def test_corpus_stats_of_the_hostile_folder_lists_what_it_skips(corpus, tmp_path):
    run = Runner(tmp_path)
    status, stdout, _ = run(["corpus", "stats", corpus["plain.mid"].parent, "--json"], expect="ok")
    stats = json.loads(stdout)
    skipped = dict(stats["broken"])
    assert "--max-seconds" in skipped["note-at-1e9"] and "--max-uncompressed-mb" in skipped["zip-bomb"]
    assert stats["hours"] < 1  # the pieces over the limits are not counted
    run.check()
