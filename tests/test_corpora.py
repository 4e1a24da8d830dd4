"""Built-in corpora, user directories, deterministic splits."""

from __future__ import annotations

import collections
import shutil

import pytest
import symusic

from cadenza.data import open_corpus, split_of
from cadenza.data.corpora import BUILTIN, BuiltinCorpus, DirectoryCorpus
from cadenza.data.errors import CorpusError


def test_split_is_a_fixed_function_of_the_piece_id():
    # Fixed values: these must never change, or published splits would move.
    assert split_of("bwv66.6") == split_of("bwv66.6")
    known = {pid: split_of(pid) for pid in ["bwv66.6", "bwv1.6", "altdeu10#3", "Agnus_01"]}
    assert known == {"bwv66.6": "train", "bwv1.6": "train", "altdeu10#3": "train", "Agnus_01": "train"}
    counts = collections.Counter(split_of(f"piece-{i}") for i in range(20000))
    assert abs(counts["train"] / 20000 - 0.90) < 0.01
    assert abs(counts["valid"] / 20000 - 0.05) < 0.006
    assert abs(counts["test"] / 20000 - 0.05) < 0.006
    assert split_of("bwv135.6") == "train"  # with the other harmonizations of its tune (test by its id alone)


def test_builtin_corpora_have_their_sources():
    sizes = {name: len(BuiltinCorpus(name).sources()) for name in BUILTIN}
    assert sizes["bach-chorales"] >= 400
    assert sizes["palestrina"] >= 1000
    assert sizes["folk"] >= 1000
    assert sizes["classical"] >= 50


def test_bach_pieces_are_exported_midi_with_four_voices(bach_pieces):
    assert len(bach_pieces) == 24
    for piece in bach_pieces[:5]:
        score = symusic.Score(str(piece.path))
        assert len([t for t in score.tracks if t.notes]) >= 4
        assert piece.split in ("train", "valid", "test")
    splits = {p.split for p in open_corpus("bach-chorales").pieces(limit=24)}
    assert "train" in splits


def test_abc_collection_exports_every_tune(tmp_path, monkeypatch):
    monkeypatch.setenv("CADENZA_CACHE", str(tmp_path))
    corpus = BuiltinCorpus("folk")
    corpus_sources = corpus.sources()
    small = [s for s in corpus_sources if s.endswith("0626-0635.abc")]  # O'Neill's tunes 626-635
    monkeypatch.setattr(BuiltinCorpus, "sources", lambda self: small)
    report = corpus.ensure(progress=False)
    pieces = corpus.pieces()
    assert report.exported == len(pieces) >= 8
    assert report.exported + len(report.failed) == 10, "every tune is exported or listed as failed"
    assert corpus.failures() == [tuple(f) for f in report.failed]
    assert len({p.id for p in pieces}) == len(pieces)
    assert all(p.path.exists() for p in pieces)
    assert corpus.ensure(progress=False).exported == 0, "a second export finds everything cached"


def test_directory_corpus_is_recursive(tmp_path, bach_pieces):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(bach_pieces[0].path, tmp_path / "one.mid")
    shutil.copy(bach_pieces[1].path, tmp_path / "a" / "b" / "two.MID")
    corpus = open_corpus(tmp_path)
    assert isinstance(corpus, DirectoryCorpus)
    assert sorted(p.id for p in corpus.pieces()) == ["a/b/two", "one"]


def test_unknown_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="not a directory and not a built-in corpus"):
        open_corpus("no-such-corpus")
    with pytest.raises(CorpusError, match="no MIDI files"):
        open_corpus(tmp_path).pieces()


def test_corpora_join_with_plus(bach_pieces):
    from cadenza.data.corpora import UnionCorpus

    union = open_corpus("bach-chorales+folk")
    assert isinstance(union, UnionCorpus) and union.name == "bach-chorales+folk"
    assert [p.name for p in union.parts] == ["bach-chorales", "folk"]
    with pytest.raises(CorpusError):
        open_corpus("bach-chorales+nothing")
