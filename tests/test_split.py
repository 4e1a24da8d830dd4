"""Splits by tune: Bach's harmonizations of one melody land in one split."""

from __future__ import annotations

import collections
import hashlib

import symusic

from cadenza.data import split_of
from cadenza.data.chorale_tunes import CHORALE_TUNES
from cadenza.data.tunes import melody_signature, shared_tunes, soprano_line

# Known harmonizations of one melody (BWV numbers of the music21 corpus)
PASSION_CHORALE = ["bwv244.15", "bwv244.17", "bwv244.44", "bwv244.54", "bwv244.62", "bwv135.6", "bwv153.5",
                   "bwv161.6", "bwv270", "bwv271"]                     # Herzlich tut mich verlangen
JESU_MEINE_FREUDE = ["bwv227.1", "bwv227.3", "bwv227.7", "bwv227.11", "bwv358", "bwv81.7"]


def melody(pitches, durations=None, transpose=0, name="Soprano"):
    score = symusic.Score(480)
    soprano = symusic.Track(name, 0, False)
    time = 0
    for i, pitch in enumerate(pitches):
        duration = (durations or [480] * len(pitches))[i]
        soprano.notes.append(symusic.Note(time, duration, pitch + transpose, 80))
        time += duration
    alto = symusic.Track("Alto", 0, False)
    alto.notes.append(symusic.Note(0, time, 40, 80))
    score.tracks.append(alto if name != "Soprano" else soprano)
    score.tracks.append(soprano if name != "Soprano" else alto)
    return score


TUNE = [67, 67, 69, 71, 71, 69, 67, 66, 64, 66, 67]


def test_signature_is_the_soprano_intervals_whatever_the_key_rhythm_and_repeats():
    assert melody_signature(melody(TUNE)) == "tune:2,2,-2,-2,-1,-2,2,1"
    assert melody_signature(melody(TUNE, transpose=-5)) == melody_signature(melody(TUNE))
    dotted = [720, 240] * 5 + [960]
    assert melody_signature(melody(TUNE, durations=dotted)) == melody_signature(melody(TUNE))
    assert melody_signature(melody(TUNE[:9])) is None   # seven intervals: too short to name a tune
    assert melody_signature(melody([60, 62, 64, 65, 67, 69, 71, 72, 74])) \
        != melody_signature(melody(TUNE))
    # the part named Soprano is the melody, even when another part comes first
    assert soprano_line(melody(TUNE, name="Soprano 1")) == TUNE


def test_shared_tunes_keeps_only_tunes_with_two_pieces():
    assert shared_tunes({"a": "tune:1", "b": "tune:1", "c": "tune:2", "d": None}) == {"a": "tune:1", "b": "tune:1"}


def test_known_harmonizations_of_one_tune_share_a_split():
    for group in (PASSION_CHORALE, JESU_MEINE_FREUDE):
        assert len({CHORALE_TUNES[pid] for pid in group}) == 1
        assert len({split_of(pid) for pid in group}) == 1
    assert CHORALE_TUNES["bwv244.15"] != CHORALE_TUNES["bwv227.1"]


def test_no_tune_is_in_two_splits_and_other_pieces_split_by_id():
    splits = collections.defaultdict(set)
    for pid, tune in CHORALE_TUNES.items():
        splits[tune].add(split_of(pid))
    assert all(len(s) == 1 for s in splits.values())
    assert len(CHORALE_TUNES) >= 200 and len(splits) >= 60
    for pid in ("bwv66.6", "altdeu10#3", "piece-17"):                 # no shared tune: the id decides
        assert pid not in CHORALE_TUNES
        bucket = int.from_bytes(hashlib.sha256(pid.encode()).digest()[:8], "big") % 100
        assert split_of(pid) == ("train" if bucket < 90 else "valid" if bucket < 95 else "test")


def test_the_table_is_what_the_chorales_soprano_lines_give(bach_pieces):
    signatures = {p.id: melody_signature(symusic.Score(str(p.path))) for p in bach_pieces}
    listed = [pid for pid in signatures if pid in CHORALE_TUNES]
    assert len(listed) >= 8
    assert all(signatures[pid] == CHORALE_TUNES[pid] for pid in listed)
    unlisted = [sig for pid, sig in signatures.items() if pid not in CHORALE_TUNES]
    assert all(sig not in set(CHORALE_TUNES.values()) for sig in unlisted)
