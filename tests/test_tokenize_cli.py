"""``cadenza tokenize`` / ``cadenza detokenize`` end to end, in a subprocess."""

from __future__ import annotations

import json
import shutil

import numpy as np
import symusic

from cadenza.tokenizers import get_tokenizer

from conftest import run_cli


def test_tokenize_file_json_names_and_detokenize(tmp_path, bach_pieces):
    path = bach_pieces[0].path
    tok = get_tokenizer("event")
    expected = tok.encode(symusic.Score(str(path))).tolist()
    assert json.loads(run_cli("tokenize", path, "--scheme", "event", "--json").stdout) == expected
    names = run_cli("tokenize", path, "--scheme", "event").stdout.split()
    assert names == tok.tokens_to_str(expected)

    ids_file = tmp_path / "ids.json"
    run_cli("tokenize", path, "--scheme", "event", "--config", "sustain=false", "--out", ids_file)
    assert json.loads(ids_file.read_text()) == expected  # chorales have no pedal
    out = tmp_path / "back.mid"
    assert "notes" in run_cli("detokenize", ids_file, "--scheme", "event", "-o", out).stdout
    back = symusic.Score(str(out))
    assert back.note_num() == tok.decode(expected).note_num()
    # a MIDI file keeps every onset and offset; which offset ends which of two overlapping notes of one
    # pitch (voices in unison) it cannot say, so compare onsets and offsets, not their pairing
    def ons_and_offs(score):
        notes = [n for track in score.tracks for n in track.notes]
        return sorted((n.time, n.pitch, n.velocity) for n in notes), sorted((n.end, n.pitch) for n in notes)

    assert back.ticks_per_quarter == tok.decode(expected).ticks_per_quarter
    assert ons_and_offs(back) == ons_and_offs(tok.decode(expected))


def test_tokenize_directory_writes_shards(tmp_path, bach_pieces):
    folder = tmp_path / "midi"
    folder.mkdir()
    for piece in bach_pieces[:4]:
        shutil.copyfile(piece.path, folder / piece.path.name)
    (folder / "empty.mid").write_bytes(b"")
    out = tmp_path / "shards"
    proc = run_cli("tokenize", folder, "--scheme", "event", "--out", out, "--workers", "1", "--no-progress")
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("tokenized 4 pieces") and last.endswith("1 failed")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["failed"][0][0] == "empty" and "empty" in meta["failed"][0][1]
    from cadenza.data.shards import TokenShards

    pieces = {pid: shards.piece(i) for split in ("train", "valid", "test")
              for shards in [TokenShards(out, split)] for i, pid in enumerate(shards.piece_ids)}
    assert sorted(pieces) == sorted(p.path.stem for p in bach_pieces[:4])
    for pid, ids in pieces.items():
        assert np.array_equal(ids, get_tokenizer("event").encode(folder / f"{pid}.mid"))


def test_errors_are_one_line_exit_2(tmp_path, bach_pieces):
    proc = run_cli("tokenize", bach_pieces[0].path, "--scheme", "event", "--controls", "random:0.3", check=False)
    assert proc.returncode == 2 and "anticipatory" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('["a", 3]')
    proc = run_cli("detokenize", bad, "--scheme", "event", "-o", tmp_path / "x.mid", check=False)
    assert proc.returncode == 2 and "integer ids" in proc.stderr
    bad.write_text("[60, 99999]")
    proc = run_cli("detokenize", bad, "--scheme", "event", "-o", tmp_path / "x.mid", check=False)
    assert proc.returncode == 2 and "outside the event vocabulary" in proc.stderr
    proc = run_cli("tokenize", tmp_path / "missing-dir", "--scheme", "event", "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "missing-dir" in proc.stderr
    assert not (tmp_path / "x.mid").exists()


def test_anticipatory_controls_reach_encode(bach_pieces):
    path = bach_pieces[0].path
    tok = get_tokenizer("anticipatory")
    expected = tok.encode(path, controls="random:0.3", seed=5).tolist()
    got = run_cli("tokenize", path, "--scheme", "anticipatory", "--controls", "random:0.3", "--seed", "5", "--json")
    assert json.loads(got.stdout) == expected
