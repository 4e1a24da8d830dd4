"""The info and corpus commands, run end to end as subprocesses."""

from __future__ import annotations

import json

from conftest import run_cli


def test_info_on_a_chorale(bach_pieces):
    proc = run_cli("info", bach_pieces[0].path)
    assert "duration" in proc.stdout and "4/4" in proc.stdout and "key" in proc.stdout
    data = json.loads(run_cli("info", bach_pieces[0].path, "--json").stdout)
    assert data["notes"] > 100 and len(data["tracks"]) >= 4 and data["duration_seconds"] > 10


def test_info_on_bad_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd garbage")
    proc = run_cli("info", bad, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corpus_list_stats_and_export(tmp_path, bach_pieces):
    listing = run_cli("corpus", "list").stdout
    for name in ("bach-chorales", "palestrina", "folk", "classical"):
        assert name in listing
    stats = json.loads(run_cli("corpus", "stats", "bach-chorales", "--limit", "24", "--json").stdout)
    assert stats["pieces"] == 24 and stats["notes"] > 3000 and 0 < stats["hours"] < 1
    assert 30 <= stats["pitch_range"][0] < stats["pitch_range"][1] <= 90
    assert "4/4" in stats["time_signatures"]
    out = tmp_path / "export"
    run_cli("corpus", "export", "bach-chorales", out, "--limit", "24", "--split", "train")
    exported = list(out.glob("*.mid"))
    assert len(exported) == len([p for p in bach_pieces if p.split == "train"]) > 10
    text = run_cli("corpus", "stats", out).stdout
    assert "pieces" in text and "hours" in text
