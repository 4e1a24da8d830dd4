"""Give generated music back the prompt's context: tempo, metre, key and parts.

A tokenizer keeps what its scheme can say: Event and Anticipatory ids hold notes in seconds
(decoded at 120 qpm, one track), REMI holds beats, bars and programs (so the four voices of a
chorale, all on one program, come back as one track). :func:`restore_context` puts a generated
Score back into the prompt's frame so that MIDI and MusicXML outputs keep the prompt's tempo,
time and key signatures, and a four-part prompt comes back as four parts.
"""

from __future__ import annotations

import numpy as np
import symusic

MIDI_DEFAULT_QPM = 120.0
MATCH_TOLERANCE_BEATS = 1 / 24   # a generated note this close to a prompt note of the same pitch is that note
BUSY_PENALTY = 24.0               # semitones: a part whose note still sounds is a poor home for a new one
SHARED_PENALTY = 48.0             # semitones: a second note for a part at the same instant (a chord in one part)
CROSS_PENALTY = 12.0              # semitones: per sounding part a new note would cross (above a higher part, below a lower)


def _tempo_map(score: symusic.Score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tick, seconds, seconds per tick) at each tempo change, 120 qpm before the first."""
    tpq = score.ticks_per_quarter
    tempos = sorted(((t.time, t.qpm) for t in score.tempos), key=lambda x: x[0])
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, MIDI_DEFAULT_QPM))
    ticks = np.array([t for t, _ in tempos], np.float64)
    seconds_per_tick = 60.0 / (np.array([q for _, q in tempos], np.float64) * tpq)
    starts = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * seconds_per_tick[:-1])])
    return ticks, starts, seconds_per_tick


def seconds_to_ticks(score: symusic.Score, seconds: np.ndarray) -> np.ndarray:
    """Ticks of ``score`` at the given times in seconds, under its tempo map (120 qpm before the
    first tempo event; the last tempo holds after the end)."""
    ticks, starts, seconds_per_tick = _tempo_map(score)
    seconds = np.asarray(seconds, np.float64)
    segment = np.clip(np.searchsorted(starts, seconds, side="right") - 1, 0, len(starts) - 1)
    return ticks[segment] + (seconds - starts[segment]) / seconds_per_tick[segment]


def ticks_to_seconds(score: symusic.Score, ticks_at: np.ndarray) -> np.ndarray:
    """Seconds at the given ticks of ``score`` (the inverse of ``seconds_to_ticks``)."""
    ticks, starts, seconds_per_tick = _tempo_map(score)
    ticks_at = np.asarray(ticks_at, np.float64)
    segment = np.clip(np.searchsorted(ticks, ticks_at, side="right") - 1, 0, len(ticks) - 1)
    return starts[segment] + (ticks_at - ticks[segment]) * seconds_per_tick[segment]


# Beat subdivisions a prompt's onsets are tried against, finest last: sixteenths, then sixteenths
# with eighth and sixteenth triplets.
GRID_SUBDIVISIONS = (4, 12)


def metric_grid(score: symusic.Score, *, subdivisions: tuple[int, ...] = GRID_SUBDIVISIONS,
                min_share: float = 0.9, tolerance: float = 0.1) -> tuple[float, float] | None:
    """The grid a prompt's notes keep, as ``(origin, period)`` in seconds, for music after it.

    A score whose note onsets lie (at least ``min_share`` of them, within ``tolerance`` of a
    step) on a grid of ``subdivisions`` steps per quarter, tried coarsest first, has metric
    timing; the grid is that subdivision under the score's last tempo, from the last tempo
    change on (its ``origin``). A performance with free timing, or a score without notes, gives
    None. Schemes that count time in seconds (Event, Anticipatory) keep sampled music on it.
    """
    starts = [track.notes.numpy()["time"] for track in score.tracks if track.notes]
    if not starts:
        return None
    onsets = np.concatenate(starts).astype(np.float64) / score.ticks_per_quarter
    for per_quarter in subdivisions:
        steps = onsets * per_quarter
        if np.mean(np.abs(steps - np.round(steps)) <= tolerance) >= min_share:
            break
    else:
        return None
    last_tick, qpm = _last_tempo(score)
    if not (np.isfinite(qpm) and qpm > 0):
        return None
    step = score.ticks_per_quarter / per_quarter
    origin = float(ticks_to_seconds(score, np.array([np.ceil(last_tick / step - 1e-9) * step]))[0])
    return origin, 60.0 / qpm / per_quarter


def beat_grid(score: symusic.Score) -> tuple[float, float] | None:
    """``(origin, beat)`` in seconds: the quarter-note beat of a prompt with metric timing
    (:func:`metric_grid`'s origin, its last tempo), the beat a phrase is counted in; None for
    free timing."""
    grid = metric_grid(score)
    if grid is None:
        return None
    return grid[0], 60.0 / _last_tempo(score)[1]


def _last_tempo(score: symusic.Score) -> tuple[int, float]:
    """(tick, qpm) of the score's last tempo change (0 and 120 qpm without one)."""
    tempos = sorted(score.tempos, key=lambda t: t.time)
    return (tempos[-1].time, tempos[-1].qpm) if tempos else (0, 120.0)


def _generated_notes(prompt: symusic.Score, generated: symusic.Score) -> list[dict[str, np.ndarray]]:
    """Each generated track's notes in the prompt's ticks. A Score with time signatures has
    musical timing (REMI: its quarters are the prompt's quarters); one without has performance
    timing (Event, Anticipatory: its seconds are the prompt's seconds, under the prompt's tempi)."""
    musical = len(generated.time_signatures) > 0
    timed = generated if musical else generated.to("second")
    out = []
    for track in timed.tracks:
        arr = track.notes.numpy() if track.notes else None
        if arr is None or len(arr["time"]) == 0:
            out.append({"start": np.zeros(0, np.int64), "end": np.zeros(0, np.int64),
                        "pitch": np.zeros(0, np.int64), "velocity": np.zeros(0, np.int64)})
            continue
        start, end = arr["time"].astype(np.float64), (arr["time"] + arr["duration"]).astype(np.float64)
        if musical:
            scale = prompt.ticks_per_quarter / generated.ticks_per_quarter
            start, end = start * scale, end * scale
        else:
            start, end = seconds_to_ticks(prompt, start), seconds_to_ticks(prompt, end)
        start = np.maximum(np.round(start), 0).astype(np.int64)
        end = np.maximum(np.round(end).astype(np.int64), start + 1)
        out.append({"start": start, "end": end, "pitch": arr["pitch"].astype(np.int64),
                    "velocity": arr["velocity"].astype(np.int64)})
    return out


def restore_context(prompt: symusic.Score, generated: symusic.Score, *,
                    fixed: dict[int, int] | None = None, avoid: tuple[int, ...] = (),
                    regenerated: tuple[float, float] | None = None) -> symusic.Score:
    """``generated`` in the prompt's frame: the prompt's ticks per quarter, tempi, time and key
    signatures, and one track per prompt part (a pitched or drum track holding notes, with its
    name and program).

    Generated notes go to parts this way: the tracks named in ``fixed`` (generated track index ->
    prompt track index) go whole to that part (an accompaniment's kept melody); when the prompt's
    parts have distinct programs and every other generated track's program is one of them, tracks
    go to the part of their program (REMI, Anticipatory with several instruments); otherwise notes
    are split into voices: a note at the onset and pitch of a prompt note is that note, and each
    new chord is spread over the parts in pitch order, each part continuing from its last pitch
    (a part still holding a note, or already given one at that instant, is avoided, and so is a
    part where the note would cross a part still sounding). Prompt tracks
    in ``avoid`` get no notes but the fixed ones (an accompaniment's new notes leave the melody's
    part alone); when no part is left, the other generated tracks are kept as tracks of their own.
    ``regenerated`` is a (start, end) in seconds whose prompt notes the generated music replaces
    (an infill's span, an accompaniment's parts after their prompt): a generated note there that
    happens to share an original note's onset and pitch is a new note of the new lines, not that
    note, so it does not take the original's part (which would cross the voices the model wrote)."""
    fixed = dict(fixed or {})
    out = symusic.Score(prompt.ticks_per_quarter)
    for source, target in ((prompt.tempos, out.tempos), (prompt.time_signatures, out.time_signatures),
                           (prompt.key_signatures, out.key_signatures)):
        for event in source:
            target.append(event.copy())
    if not out.tempos:
        out.tempos.append(symusic.Tempo(0, MIDI_DEFAULT_QPM))
    part_tracks = [i for i, t in enumerate(prompt.tracks) if t.notes]
    tracks = _generated_notes(prompt, generated)
    if not part_tracks:  # nothing to follow: keep the generated tracks, retimed
        for index, track in enumerate(generated.tracks):
            out.tracks.append(symusic.Track(track.name, track.program, track.is_drum))
            _add_notes(out.tracks[-1], tracks[index], np.ones(len(tracks[index]["start"]), bool))
        return out
    part_of_track = {track: k for k, track in enumerate(part_tracks)}
    for track_index in part_tracks:
        source = prompt.tracks[track_index]
        out.tracks.append(symusic.Track(source.name, source.program, source.is_drum))

    fixed_parts = {g: part_of_track[p] for g, p in fixed.items() if p in part_of_track and g < len(tracks)}
    taken = set(fixed_parts.values()) | {part_of_track[p] for p in avoid if p in part_of_track}
    free_parts = [k for k in range(len(part_tracks)) if k not in taken]
    for g, k in fixed_parts.items():
        _add_notes(out.tracks[k], tracks[g], np.ones(len(tracks[g]["start"]), bool))
    rest = [g for g in range(len(tracks)) if g not in fixed_parts]
    drum_parts = [k for k in free_parts if prompt.tracks[part_tracks[k]].is_drum]
    free_parts = [k for k in free_parts if k not in drum_parts]
    own = [g for g in rest if generated.tracks[g].is_drum and not drum_parts]
    for g in rest:
        if generated.tracks[g].is_drum and drum_parts:  # drums go to the prompt's drums, never into a voice
            _add_notes(out.tracks[drum_parts[0]], tracks[g], np.ones(len(tracks[g]["start"]), bool))
    rest = [g for g in rest if not generated.tracks[g].is_drum]
    if not free_parts:  # every part is taken (an accompaniment of a lone melody): new tracks of their own
        own, rest = own + rest, []
    for g in own:
        source = generated.tracks[g]
        out.tracks.append(symusic.Track(source.name, source.program, source.is_drum))
        _add_notes(out.tracks[-1], tracks[g], np.ones(len(tracks[g]["start"]), bool))
    if not rest:
        return _sorted(out)
    programs = [prompt.tracks[part_tracks[k]].program for k in free_parts]
    by_program = len(set(programs)) == len(programs) and len(free_parts) > 1 and \
        all(generated.tracks[g].program in programs or not len(tracks[g]["start"]) for g in rest)
    if by_program or len(free_parts) == 1:
        for g in rest:
            k = free_parts[programs.index(generated.tracks[g].program)] if by_program else free_parts[0]
            _add_notes(out.tracks[k], tracks[g], np.ones(len(tracks[g]["start"]), bool))
        return _sorted(out)
    notes = {key: np.concatenate([tracks[g][key] for g in rest]) for key in ("start", "end", "pitch", "velocity")}
    skip = None if regenerated is None else \
        tuple(int(t) if np.isfinite(t) else np.iinfo(np.int64).max for t in seconds_to_ticks(prompt, regenerated))
    part = _split_voices(prompt, [part_tracks[k] for k in free_parts], notes, skip)
    for j, k in enumerate(free_parts):
        _add_notes(out.tracks[k], notes, part == j)
    return _sorted(out)


def _add_notes(track: symusic.Track, notes: dict[str, np.ndarray], keep: np.ndarray) -> None:
    for start, end, pitch, velocity in zip(notes["start"][keep], notes["end"][keep], notes["pitch"][keep],
                                           notes["velocity"][keep]):
        track.notes.append(symusic.Note(int(start), int(end - start), int(pitch), int(velocity)))


def _sorted(score: symusic.Score) -> symusic.Score:
    for track in score.tracks:
        track.notes.sort()
    return score


def _split_voices(prompt: symusic.Score, part_tracks: list[int], notes: dict[str, np.ndarray],
                  skip: tuple[int, int] | None = None) -> np.ndarray:
    """The part (index into ``part_tracks``) of every note; see :func:`restore_context` (``skip``:
    the regenerated ticks [start, end), whose prompt notes are not matched)."""
    tolerance = max(1, int(round(MATCH_TOLERANCE_BEATS * prompt.ticks_per_quarter)))
    count = len(notes["start"])
    part = np.full(count, -1, np.int64)
    # 1. notes that are the prompt's own notes keep their part
    unused: dict[int, list[tuple[int, int]]] = {}
    for k, track_index in enumerate(part_tracks):
        for note in prompt.tracks[track_index].notes:
            if skip is None or not skip[0] <= note.time < skip[1]:
                unused.setdefault(note.pitch, []).append((note.time, k))
    for j in np.argsort(notes["start"], kind="stable"):
        candidates = unused.get(int(notes["pitch"][j]), [])
        for c, (time, k) in enumerate(candidates):
            if abs(time - int(notes["start"][j])) <= tolerance:
                part[j] = k
                del candidates[c]
                break
    # 2. the rest, instant by instant, continuing each part's line
    register = np.array([np.mean([n.pitch for n in prompt.tracks[t].notes]) for t in part_tracks])
    by_register = np.argsort(register)                      # parts from lowest to highest
    last = register.copy()
    busy_until = np.full(len(part_tracks), -1, np.int64)
    order = np.lexsort((notes["pitch"], notes["start"]))
    group_start = 0
    while group_start < count:
        onset = notes["start"][order[group_start]]
        group_end = group_start
        while group_end < count and notes["start"][order[group_end]] - onset <= tolerance:
            group_end += 1
        group = order[group_start:group_end]
        taken = np.zeros(len(part_tracks), bool)
        for j in group[part[group] >= 0]:
            taken[part[j]] = True
        new = group[part[group] < 0]                        # ascending pitch
        if len(new):
            busy = busy_until[by_register] > onset + tolerance
            sounding = np.where(busy, last[by_register], np.nan)   # by register, the pitches held on
            for j in group[part[group] >= 0]:
                sounding[np.flatnonzero(by_register == part[j])[0]] = notes["pitch"][j]
            cost = np.abs(notes["pitch"][new][:, None] - last[by_register][None]) \
                + BUSY_PENALTY * busy[None] + SHARED_PENALTY * taken[by_register][None] \
                + CROSS_PENALTY * _crossings(notes["pitch"][new], sounding)
            part[new] = by_register[monotone_assignment(cost, strict=len(new) <= len(part_tracks))]
        for j in group:
            last[part[j]] = notes["pitch"][j]
            busy_until[part[j]] = max(busy_until[part[j]], notes["end"][j])
        group_start = group_end
    return part


def _crossings(pitches: np.ndarray, sounding: np.ndarray) -> np.ndarray:
    """(notes, parts): how many sounding parts a note of each pitch would cross in each part
    (parts by ascending register; ``sounding`` their sounding pitch, NaN when silent): the
    parts above with a lower pitch and the parts below with a higher one."""
    parts = len(sounding)
    above = np.arange(parts)[None, :] > np.arange(parts)[:, None]       # [k, m]: part m is above part k
    with np.errstate(invalid="ignore"):
        lower = sounding[None, :] < pitches[:, None]                      # [note, m]: m sounds below the note
        higher = sounding[None, :] > pitches[:, None]
    return (lower[:, None, :] & above[None]).sum(-1) + (higher[:, None, :] & above.T[None]).sum(-1)


def monotone_assignment(cost: np.ndarray, strict: bool) -> np.ndarray:
    """Columns for the rows of ``cost`` (notes by ascending pitch, parts by ascending register),
    non-decreasing (increasing when ``strict``) down the rows, of least total cost."""
    rows, cols = cost.shape
    best = np.full((rows, cols), np.inf)
    came = np.zeros((rows, cols), np.int64)
    best[0] = cost[0]
    for i in range(1, rows):
        running, arg = np.inf, -1
        for k in range(cols):
            if not strict and best[i - 1, k] < running:
                running, arg = best[i - 1, k], k
            if running < np.inf:
                best[i, k], came[i, k] = cost[i, k] + running, arg
            if strict and best[i - 1, k] < running:
                running, arg = best[i - 1, k], k
    choice = np.zeros(rows, np.int64)
    choice[-1] = int(np.argmin(best[-1]))
    for i in range(rows - 1, 0, -1):
        choice[i - 1] = came[i, choice[i]]
    return choice
