"""Token shards: flat per-split memmaps whose pieces equal the tokenizer's own output."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import symusic

from cadenza.data.errors import CorpusError
from cadenza.data.shards import TokenShards, shard_dtype, write_shards
from cadenza.tokenizers import get_tokenizer


@pytest.fixture()
def midi_dir(tmp_path, bach_pieces):
    folder = tmp_path / "midi"
    (folder / "sub").mkdir(parents=True)
    for piece in bach_pieces[:5]:
        shutil.copyfile(piece.path, folder / piece.path.name)
    shutil.copyfile(bach_pieces[5].path, folder / "sub" / bach_pieces[5].path.name)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return folder


def test_write_and_read_shards(midi_dir, tmp_path):
    tok = get_tokenizer("event")
    out = tmp_path / "shards"
    meta = write_shards(midi_dir, tok, out, workers=1, progress=False)
    assert meta["scheme"] == "event" and meta["dtype"] == "uint16" and meta["tokenizer"] == tok.to_dict()
    assert [f[0] for f in meta["failed"]] == ["broken"] and "broken.mid" in meta["failed"][0][1]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert sum(s["pieces"] for s in meta["splits"].values()) == 6
    seen = []
    for split, summary in meta["splits"].items():
        shards = TokenShards(out, split)
        assert len(shards) == summary["pieces"] and int(shards.offsets[-1]) == summary["tokens"]
        assert shards.ids.dtype == np.uint16 and shards.offsets.dtype == np.int64
        assert shards.tokenizer.to_dict() == tok.to_dict()
        for i, piece_id in enumerate(shards.piece_ids):
            score = symusic.Score(str(midi_dir / (piece_id + ".mid")))
            assert shards.piece(i).tolist() == tok.encode(score).tolist()
            assert shards.notes[i] == score.note_num()
            assert shards.seconds[i] == pytest.approx(score.to("second").end(), rel=1e-6)
            seen.append(piece_id)
        assert int(shards.notes.sum()) == summary["notes"]
    assert "sub/" + sorted(p.stem for p in (midi_dir / "sub").iterdir())[0] in seen


def test_parallel_output_is_identical(midi_dir, tmp_path):
    tok = get_tokenizer("event", pitch_range=(21, 108))
    one = write_shards(midi_dir, tok, tmp_path / "one", workers=1, progress=False)
    two = write_shards(midi_dir, tok, tmp_path / "two", workers=2, progress=False)
    assert one == two
    for split in ("train", "valid", "test"):
        assert (tmp_path / "one" / f"{split}.bin").read_bytes() == (tmp_path / "two" / f"{split}.bin").read_bytes()


def test_dtype_choice_and_errors(tmp_path):
    assert shard_dtype(391) == np.uint16 and shard_dtype(65536) == np.uint16 and shard_dtype(65537) == np.uint32
    with pytest.raises(CorpusError, match="not a token shard directory"):
        TokenShards(tmp_path)
    with pytest.raises(CorpusError, match="no MIDI files"):
        write_shards(tmp_path, "event", tmp_path / "out", progress=False)
