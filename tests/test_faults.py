"""Interrupted jobs lose nothing: a corpus export and a tokenization stopped part-way by Ctrl-C
(SIGINT to the whole process group, as a terminal sends it) or by SIGKILL (to the main process
alone, as the OOM killer or ``kill -9`` does) resume, when the same command runs again, to the
files of an uninterrupted run, byte for byte, with no temporary file left; a killed render
leaves no file at its output path. (Training's own fault tests are in test_train.py.)

Each run is a real subprocess: signals, orphaned worker processes and files cut short are what
is tested. The inputs are small: a dozen Bach chorales (tokenized as 144 files so that a run
lasts long enough to be stopped in the middle) and the first six chorales of the built-in
export.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli

HOW = ("SIGINT", "SIGKILL")
EXPORT_LIMIT = 6


def _start(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cadenza.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _wait_for(proc: subprocess.Popen, condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except FileNotFoundError:  # a file renamed or removed between listing and reading it
            pass
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}; the test cannot stop it "
                        f"part-way:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.005)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _interrupt(proc: subprocess.Popen, how: str) -> tuple[str, str]:
    """Ctrl-C to the whole group, or SIGTERM (what ``timeout`` sends) or SIGKILL to the main
    process only; then every process of the group (the workers) must be gone within a few
    seconds: none is left orphaned."""
    try:
        if how == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "SIGTERM":
            proc.terminate()
        else:
            proc.kill()
        out, err = proc.communicate(timeout=120)
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid):
            assert time.monotonic() < deadline, f"worker processes outlived the main process after {how}"
            time.sleep(0.05)
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    return out, err


def _check_stopped(proc: subprocess.Popen, how: str, err: str) -> None:
    if how in ("SIGINT", "SIGTERM"):
        status, line = (130, "cadenza: interrupted") if how == "SIGINT" else (143, "cadenza: terminated")
        assert proc.returncode == status, err[-2000:]
        assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
        assert err.replace("\r", "\n").strip().splitlines()[-1] == line, err[-2000:]
    else:
        assert proc.returncode == -signal.SIGKILL, err[-2000:]


def _files(*roots: Path) -> dict[str, bytes]:
    return {f"{root.name}/{p.relative_to(root)}": p.read_bytes()
            for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def _temporaries(*roots: Path) -> list[str]:
    return [str(p) for root in roots if root.exists() for p in root.rglob(".*")]


def _same(found: dict[str, bytes], expected: dict[str, bytes]) -> None:
    assert sorted(found) == sorted(expected)
    differ = [name for name in expected if found[name] != expected[name]]
    assert not differ, f"differ from an uninterrupted run: {differ}"


# -- tokenization ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chorales(tmp_path_factory, bach_pieces):
    """A dozen chorales, each under 12 names (ids, and so splits, differ): 144 files."""
    root = tmp_path_factory.mktemp("chorales")
    for piece in bach_pieces[:12]:
        for copy in range(12):
            shutil.copyfile(piece.path, root / f"{piece.path.stem}-{copy}.mid")
    return root


def _tokenize_args(source: Path, out: Path, workers: int = 2) -> list:
    return ["tokenize", source, "--scheme", "event", "--out", out, "--workers", workers, "--no-progress"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, chorales):
    out = tmp_path_factory.mktemp("reference") / "shards"
    run_cli(*_tokenize_args(chorales, out))
    return _files(out)


def _bin_started(out: Path) -> bool:
    """The train split's temporary .bin holds ids already (its buffer was flushed at least once)."""
    return out.is_dir() and any(p.stat().st_size > 0 for p in out.glob(".train.bin.*"))


@pytest.mark.parametrize("how", (*HOW, "SIGTERM"))
def test_an_interrupted_tokenization_reruns_to_the_same_shards(tmp_path, chorales, shards, how):
    from cadenza.data.errors import CorpusError
    from cadenza.data.shards import TokenShards

    out = tmp_path / "shards"
    proc = _start(*_tokenize_args(chorales, out))
    _wait_for(proc, lambda: _bin_started(out), "ids in a temporary .bin file")
    _, err = _interrupt(proc, how)
    _check_stopped(proc, how, err)
    assert not (out / "meta.json").exists()  # a stopped run never leaves a directory that looks complete
    with pytest.raises(CorpusError, match="not a token shard directory"):
        TokenShards(out)
    if how != "SIGKILL":  # unwinding removed its temporary files
        assert not _temporaries(out)

    run_cli(*_tokenize_args(chorales, out))
    assert not _temporaries(out)
    _same(_files(out), shards)


def test_a_rerun_trusts_nothing_a_killed_run_left(tmp_path, chorales, shards):
    """Whatever a killed run left (files renamed into place before it died, shards of another
    scheme, temporaries under every name) is written again; other files are left alone. One
    worker in this process gives the same bytes as two worker processes."""
    from cadenza.cli.main import main

    out = tmp_path / "shards"
    out.mkdir()
    (out / "train.bin").write_bytes(shards["shards/train.bin"][:1000])  # cut short
    (out / "valid.index.npz").write_bytes(shards["shards/train.index.npz"])  # another split's
    assert main(["tokenize", str(chorales), "--scheme", "remi", "--out", str(out / "remi"), "--no-progress"]) == 0
    shutil.copyfile(out / "remi" / "test.pieces.json", out / "test.pieces.json")
    shutil.rmtree(out / "remi")
    for name in ("train.bin", "meta.json", "test.index.npz", "valid.pieces.json"):
        suffix = Path(name).suffix
        (out / f".{name}.k1ll3d_x{suffix}").write_bytes(b"\0" * 100)
    (out / "notes.txt").write_text("mine")
    (out / ".keep").write_text("")

    assert main([str(a) for a in _tokenize_args(chorales, out, workers=1)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".keep"]
    found = _files(out)
    assert found.pop("shards/notes.txt") == b"mine" and found.pop("shards/.keep") == b""
    _same(found, shards)


# -- corpus export ----------------------------------------------------------------------------
def _export_args(out: Path) -> list:
    return ["corpus", "export", "bach-chorales", out, "--limit", EXPORT_LIMIT]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An uninterrupted export of the first six chorales into a fresh cache: the cache's corpus
    directory (MIDI files and per-source manifests) and the folder exported to."""
    root = tmp_path_factory.mktemp("export")
    proc = subprocess.run([sys.executable, "-m", "cadenza.cli.main", *map(str, _export_args(root / "out"))],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "CADENZA_CACHE": str(root / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _files(root / "cache" / "corpora" / "bach-chorales", root / "out")


def _midi_written(folder: Path) -> bool:
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.glob("*.mid"))


@pytest.mark.parametrize("how", HOW)
def test_an_interrupted_export_reruns_to_the_same_files(tmp_path, exported, how):
    import json

    cache, out = tmp_path / "cache", tmp_path / "out"
    corpus = cache / "corpora" / "bach-chorales"
    env = {"CADENZA_CACHE": str(cache)}
    proc = _start(*_export_args(out), env=env)
    _wait_for(proc, lambda: _midi_written(corpus / "midi"), "exported MIDI file")
    _, err = _interrupt(proc, how)
    _check_stopped(proc, how, err)
    assert not out.exists()  # nothing is copied out before the whole export is done
    if how == "SIGINT":
        assert not _temporaries(cache)
    # a source counts as done only by its manifest, written after its MIDI files, each whole
    manifests = sorted((corpus / "sources").glob("[!.]*.json")) if (corpus / "sources").exists() else []
    assert len(manifests) < EXPORT_LIMIT
    for manifest in manifests:
        for piece in json.loads(manifest.read_text())["pieces"]:
            name = f"bach-chorales/midi/{piece}.mid"
            assert (cache / "corpora" / name).read_bytes() == exported[name]

    proc = subprocess.run([sys.executable, "-m", "cadenza.cli.main", *map(str, _export_args(out))],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not _temporaries(cache, out)
    _same(_files(corpus, out), exported)


def test_a_rerun_export_removes_what_a_killed_copy_left(tmp_path, exported, monkeypatch):
    """The copy into the export folder goes through temporary names too; a rerun removes the
    temporaries of the files it copies and leaves every other file of the folder alone. A
    temporary file in the cache is removed even when every source is already exported."""
    from cadenza.cli.main import main

    cache, out = tmp_path / "cache", tmp_path / "out"
    corpus = cache / "corpora" / "bach-chorales"
    for name, data in exported.items():  # the cache as a finished export left it
        if name.startswith("bach-chorales/"):
            path = cache / "corpora" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    (corpus / "midi" / ".bwv1.6.mid.k1ll3d_x.mid").write_bytes(b"MThd")
    out.mkdir()
    (out / "bwv1.6.mid").write_bytes(b"MThd\0\0")  # a file cut short by a copy of another kind
    (out / ".bwv10.7.mid.k1ll3d_x.mid").write_bytes(b"MThd")
    (out / ".other.mid.k1ll3d_x.mid").write_bytes(b"not ours")
    monkeypatch.setenv("CADENZA_CACHE", str(cache))
    assert main([str(a) for a in _export_args(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".other.mid.k1ll3d_x.mid"]
    (out / ".other.mid.k1ll3d_x.mid").unlink()
    assert not _temporaries(cache)
    _same(_files(corpus, out), exported)


def test_a_directory_corpus_takes_no_temporary_file_for_a_piece(tmp_path, bach_pieces):
    from cadenza.data.corpora import DirectoryCorpus

    shutil.copyfile(bach_pieces[0].path, tmp_path / "a.mid")
    shutil.copyfile(bach_pieces[1].path, tmp_path / ".b.mid.k1ll3d_x.mid")
    shutil.copyfile(bach_pieces[2].path, tmp_path / ".hidden.mid")  # a user's file, if hidden
    assert [p.id for p in DirectoryCorpus(tmp_path).pieces()] == [".hidden", "a"]


def test_a_directory_lock_makes_a_second_writer_wait(tmp_path):
    """``locked`` is an flock on the directory itself: a second holder (here another thread,
    with its own open file description) waits until the first lets go; no lock file is made."""
    import threading

    from cadenza.data.atomic import locked

    held, order = threading.Event(), []

    def first():
        with locked(tmp_path):
            held.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    started = time.monotonic()
    with locked(tmp_path):
        order.append("second in")
        waited = time.monotonic() - started
    thread.join()
    assert order == ["first done", "second in"] and waited > 0.3
    assert list(tmp_path.iterdir()) == []


# -- render -------------------------------------------------------------------------------------
def test_a_killed_render_leaves_no_file_at_the_output_path(tmp_path):
    """SIGKILL cannot be caught: the render is killed while it writes (its temporary file has
    appeared), and the output path holds nothing, neither a partial file nor an empty one."""
    import symusic

    score = symusic.Score(480)
    track = symusic.Track("long", 0, False)
    for beat in range(2 * 60 * 20):  # 20 minutes
        for pitch in (48, 55, 60, 64):
            track.notes.append(symusic.Note(beat * 480, 480, pitch, 80))
    score.tracks.append(track)
    source = tmp_path / "long.mid"
    score.dump_midi(str(source))
    out = tmp_path / "out"
    out.mkdir()
    target = out / "long.wav"
    proc = _start("render", source, "-o", target, "--sample-rate", "8000")
    _wait_for(proc, lambda: any(p.stat().st_size > 0 for p in out.glob(".long.wav.*")), "temporary output file", timeout=300)
    _interrupt(proc, "SIGKILL")
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".long.wav.")  # what SIGKILL cannot clean up

    # the next write of that output removes it (its writer is dead); a live writer's stays
    import hostile_inputs

    (out / ".long.wav.k1ll3d_x.wav").write_bytes(b"RIFF")  # untagged: whose it is cannot be told
    short = tmp_path / "short.mid"
    short.write_bytes(hostile_inputs.plain_midi())
    run_cli("render", short, "-o", target, "--sample-rate", "8000")
    assert sorted(p.name for p in out.iterdir()) == [".long.wav.k1ll3d_x.wav", "long.wav"]
    assert target.read_bytes()[:4] == b"RIFF"


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    from cadenza.data.atomic import atomic_path, remove_dead_writers, write_bytes_atomic

    target = tmp_path / "x.mid"
    with atomic_path(target) as mine:
        mine.write_bytes(b"half")
        assert remove_dead_writers(target) == 0  # this process's own
        child = subprocess.run([sys.executable, "-c", f"from cadenza.data.atomic import write_bytes_atomic; "
                                f"write_bytes_atomic({str(target)!r}, b'other')"], timeout=120)
        assert child.returncode == 0 and mine.exists()  # another writer of the same target left it
    assert target.read_bytes() == b"half" and list(tmp_path.iterdir()) == [target]
    write_bytes_atomic(target, b"again")
    assert target.read_bytes() == b"again"
