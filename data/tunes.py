"""Which pieces harmonize the same tune, so that a split keeps them together.

Bach harmonized many chorale melodies several times (the Passion chorale "Herzlich tut mich
verlangen" thirteen times in the music21 corpus), so a split by piece id puts harmonizations of
a test tune into training. music21's metadata names only the file, so the tune is read from the
music: the **melody signature** of a piece is the sequence of the first ``TUNE_INTERVALS``
intervals (semitones) between successive different pitches of its soprano line (the part named
Soprano, else the first part with notes; at each onset its highest note), which no transposition,
rhythm or repeated note changes. Pieces with the same signature share a tune.

``CHORALE_TUNES`` (in :mod:`cadenza.data.chorale_tunes`, written by ``python -m
cadenza.data.tunes``) maps every Bach chorale whose tune has another harmonization in the corpus
to its tune; :func:`cadenza.data.corpora.split_of` splits those by tune and every other piece by
its id, as before.
"""

from __future__ import annotations

import symusic

TUNE_INTERVALS = 8


def soprano_track(score: symusic.Score) -> int | None:
    """Index of the soprano's track: the first named Soprano, else the first pitched one with notes."""
    tracks = [i for i, t in enumerate(score.tracks) if t.notes and not t.is_drum]
    named = [i for i in tracks if score.tracks[i].name.strip().lower().startswith("soprano")]
    return (named or tracks or [None])[0]


def soprano_line(score: symusic.Score) -> list[int]:
    """The soprano's pitches in time order: at each onset its highest note."""
    index = soprano_track(score)
    if index is None:
        return []
    highest: dict[int, int] = {}
    for note in score.tracks[index].notes:
        highest[note.time] = max(highest.get(note.time, -1), note.pitch)
    return [highest[time] for time in sorted(highest)]


def melody_signature(score: symusic.Score, intervals: int = TUNE_INTERVALS) -> str | None:
    """``tune:i1,i2,...``: the first ``intervals`` intervals between successive different pitches
    of the soprano line; None when the line has fewer."""
    pitches: list[int] = []
    for pitch in soprano_line(score):
        if not pitches or pitches[-1] != pitch:
            pitches.append(pitch)
    if len(pitches) <= intervals:
        return None
    return "tune:" + ",".join(str(b - a) for a, b in zip(pitches[:intervals], pitches[1:intervals + 1]))


def shared_tunes(signatures: dict[str, str | None]) -> dict[str, str]:
    """piece id -> tune for the pieces whose signature another piece shares."""
    count: dict[str, int] = {}
    for tune in signatures.values():
        if tune is not None:
            count[tune] = count.get(tune, 0) + 1
    return {pid: tune for pid, tune in sorted(signatures.items()) if tune is not None and count[tune] > 1}


def main() -> None:
    """Rewrite chorale_tunes.py from the exported bach-chorales corpus."""
    from pathlib import Path

    from .corpora import open_corpus

    pieces = open_corpus("bach-chorales").pieces()
    table = shared_tunes({p.id: melody_signature(symusic.Score(str(p.path))) for p in pieces})
    lines = ['"""Bach chorales that share a tune with another chorale of the corpus (written by',
             '``python -m cadenza.data.tunes``; see cadenza.data.tunes for how a tune is found)."""', "",
             "CHORALE_TUNES: dict[str, str] = {"]
    lines += [f"    {pid!r}: {tune!r}," for pid, tune in table.items()]
    lines.append("}")
    path = Path(__file__).with_name("chorale_tunes.py")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}: {len(table)} chorales on {len(set(table.values()))} shared tunes "
          f"(of {len(pieces)} chorales)")


if __name__ == "__main__":
    main()
