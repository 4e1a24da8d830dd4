"""restore_context: generated music comes back with the prompt's tempo, metre, key and parts."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from cadenza.data.context import restore_context, seconds_to_ticks, ticks_to_seconds
from cadenza.tokenizers import get_tokenizer

TPQ = 480
QPM = 96.0
# four parts, 3/4, D major: soprano, alto, tenor, bass; bars of quarter-note chords
CHORDS = [(74, 66, 57, 50), (73, 64, 57, 45), (74, 66, 57, 50), (76, 67, 59, 43), (78, 69, 62, 50),
          (76, 67, 61, 45), (74, 66, 57, 50), (71, 67, 62, 43), (73, 64, 57, 45)]
NAMES = ("Soprano", "Alto", "Tenor", "Bass")


def chorale(chords, qpm=QPM) -> symusic.Score:
    score = symusic.Score(TPQ)
    score.tempos.append(symusic.Tempo(0, qpm))
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    score.key_signatures.append(symusic.KeySignature(0, 2, 0))
    for voice, name in enumerate(NAMES):
        track = symusic.Track(name, 52, False)
        for i, chord in enumerate(chords):
            track.notes.append(symusic.Note(i * TPQ, TPQ, chord[voice], 80))
        score.tracks.append(track)
    return score


PROMPT = chorale(CHORDS[:6])   # two bars
WHOLE = chorale(CHORDS)         # the prompt and a third bar, as a model might continue it


def parts_of(score):
    return [[(n.time, n.duration, n.pitch) for n in t.notes] for t in score.tracks]


def assert_context(restored):
    assert restored.ticks_per_quarter == TPQ
    assert [(t.time, t.qpm) for t in restored.tempos] == [(0, pytest.approx(QPM))]
    assert [(t.numerator, t.denominator) for t in restored.time_signatures] == [(3, 4)]
    assert [(k.key, k.tonality) for k in restored.key_signatures] == [(2, 0)]
    assert [t.name for t in restored.tracks] == list(NAMES)
    assert [t.program for t in restored.tracks] == [52] * 4


def test_seconds_to_ticks_follows_the_tempo_map():
    score = symusic.Score(TPQ)
    score.tempos.append(symusic.Tempo(0, 120.0))
    score.tempos.append(symusic.Tempo(2 * TPQ, 60.0))  # after 1 s, a quarter lasts 1 s
    assert seconds_to_ticks(score, np.array([0.0, 0.5, 1.0, 2.0, 3.5])).tolist() == \
        pytest.approx([0, 480, 960, 1440, 2160])
    assert seconds_to_ticks(symusic.Score(TPQ), np.array([1.0])).tolist() == [960]  # 120 qpm by default
    assert ticks_to_seconds(score, np.array([0, 480, 960, 1440, 2160])).tolist() == pytest.approx([0, 0.5, 1, 2, 3.5])


@pytest.mark.parametrize("scheme", ["event", "anticipatory"])
def test_a_seconds_scheme_output_gets_the_prompts_tempo_metre_key_and_parts(scheme):
    tok = get_tokenizer(scheme)
    ids = tok.encode(WHOLE, controls=None) if scheme == "anticipatory" else tok.encode(WHOLE)
    generated = tok.decode(ids)  # one track at 120 qpm, no metre: what the model's ids decode to
    assert len([t for t in generated.tracks if t.notes]) == 1 and not generated.time_signatures
    restored = restore_context(PROMPT, generated)
    assert_context(restored)
    # every note back in its part, on the prompt's beats (the tokenizers keep 10 ms)
    for got, want in zip(parts_of(restored), parts_of(WHOLE)):
        assert len(got) == len(want) == len(CHORDS)
        for (t1, d1, p1), (t2, d2, p2) in zip(got, want):
            assert p1 == p2 and abs(t1 - t2) <= 5 and abs(d1 - d2) <= 5
    # the third bar starts at bar 3 of 3/4: six quarters = 6 * 480 ticks
    assert restored.tracks[0].notes[6].time == pytest.approx(6 * TPQ, abs=5)


def test_a_remi_output_keeps_its_beats_and_gets_the_prompts_parts():
    tok = get_tokenizer("remi")
    generated = tok.decode(tok.encode(WHOLE))
    assert len([t for t in generated.tracks if t.notes]) == 1  # four voices on one program
    restored = restore_context(PROMPT, generated)
    assert_context(restored)
    assert parts_of(restored) == parts_of(WHOLE)


def test_new_voices_continue_by_pitch_proximity_when_a_part_rests():
    # after the prompt, three notes: soprano, tenor and bass go on; the alto rests
    generated = PROMPT.copy()
    merged = symusic.Track("all", 0, False)
    for track in generated.tracks:
        for note in track.notes:
            merged.notes.append(note.copy())
    for pitch in (74, 57, 50):
        merged.notes.append(symusic.Note(6 * TPQ, TPQ, pitch, 80))
    generated.tracks.clear()
    generated.tracks.append(merged)
    restored = restore_context(PROMPT, generated)
    last = [[n.pitch for n in t.notes if n.time == 6 * TPQ] for t in restored.tracks]
    assert last == [[74], [], [57], [50]]


def test_a_new_note_goes_where_it_crosses_no_part_still_sounding():
    # after the prompt a chord whose alto holds on (66, three beats); on the next beat one note,
    # 67: nearest the tenor's 62, but there it would sound above the held alto, so the soprano
    generated = PROMPT.copy()
    merged = symusic.Track("all", 0, False)
    for track in generated.tracks:
        merged.notes.extend(note.copy() for note in track.notes)
    for pitch, beats in ((74, 1), (66, 3), (62, 1), (50, 1)):
        merged.notes.append(symusic.Note(6 * TPQ, beats * TPQ, pitch, 80))
    merged.notes.append(symusic.Note(7 * TPQ, TPQ, 67, 80))
    generated.tracks.clear()
    generated.tracks.append(merged)
    restored = restore_context(PROMPT, generated)
    at = [[n.pitch for n in t.notes if n.time == 7 * TPQ] for t in restored.tracks]
    assert at == [[67], [], [], []]
    from cadenza.data.context import _crossings

    sounding = np.array([50.0, np.nan, 66.0, np.nan])       # bass and alto sound, by ascending register
    assert _crossings(np.array([67, 40]), sounding).tolist() == [[1, 1, 0, 0], [0, 1, 1, 2]]


def test_regenerated_notes_follow_the_new_lines_not_the_originals_they_happen_to_match():
    # the piece's bar 3 was regenerated; its first new chord is 74 62 57 45, and the original
    # there had a tenor of 45 (say), so the new bass would be taken for that note and the new
    # tenor put in the bass: parts crossed
    generated = PROMPT.copy()
    merged = symusic.Track("all", 0, False)
    for track in generated.tracks:
        merged.notes.extend(note.copy() for note in track.notes)
    for pitch in (74, 62, 57, 45):
        merged.notes.append(symusic.Note(6 * TPQ, TPQ, pitch, 80))
    generated.tracks.clear()
    generated.tracks.append(merged)
    piece = WHOLE.copy()
    piece.tracks[2].notes[6].pitch = 45
    crossed = restore_context(piece, generated)
    assert [[n.pitch for n in t.notes if n.time == 6 * TPQ] for t in crossed.tracks] == [[74], [62], [45], [57]]
    seconds = 6 * 60 / QPM
    restored = restore_context(piece, generated, regenerated=(seconds, float("inf")))
    assert [[n.pitch for n in t.notes if n.time == 6 * TPQ] for t in restored.tracks] == [[74], [62], [57], [45]]
    assert parts_of(restored)[0][:6] == parts_of(PROMPT)[0]      # the music before keeps its parts


def test_fixed_tracks_go_whole_to_their_part_and_the_rest_splits_over_the_others():
    melody = symusic.Track("melody", 0, False)
    for note in WHOLE.tracks[0].notes:
        melody.notes.append(note.copy())
    lower = symusic.Track("others", 0, False)
    for track in WHOLE.tracks[1:]:
        for note in track.notes:
            lower.notes.append(note.copy())
    generated = symusic.Score(TPQ)
    generated.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    generated.tracks.append(lower)
    generated.tracks.append(melody)
    restored = restore_context(PROMPT, generated, fixed={1: 0})
    assert parts_of(restored) == parts_of(WHOLE)


def test_a_prompt_with_one_part_gets_everything_in_that_part():
    single = PROMPT.copy()
    for track in list(single.tracks)[1:]:
        for note in track.notes:
            single.tracks[0].notes.append(note.copy())
    while len(single.tracks) > 1:
        single.tracks.pop(1)
    tok = get_tokenizer("event")
    restored = restore_context(single, tok.decode(tok.encode(WHOLE)))
    assert [t.name for t in restored.tracks] == ["Soprano"] and restored.note_num() == WHOLE.note_num()
    assert restored.time_signatures[0].numerator == 3


# -- every output keeps it: continue_score, MusicXML, engraving, the command ---------------------------
def _debug_model(vocab_size: int, **overrides):
    import torch

    from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig

    torch.manual_seed(0)
    return MusicTransformer(MusicTransformerConfig.debug(vocab_size, **overrides)).eval()


@pytest.mark.parametrize("scheme", ["event", "remi"])
def test_continue_score_returns_the_prompts_parts_and_metre(scheme):
    from cadenza.symbolic.sampling import continue_score

    tok = get_tokenizer(scheme)
    model = _debug_model(tok.vocab_size, max_relative_position=256)  # the whole prompt fits its context
    outputs = continue_score(model, tok, PROMPT, tokens=40, num_samples=2, seed=1)
    for out in outputs:
        assert_context(out)
        for got, want in zip(parts_of(out)[:4], parts_of(PROMPT)):  # the prompt's notes, each in its part
            assert [p for _, _, p in got[:6]] == [p for _, _, p in want]


def _signatures_per_part(xml_text: str) -> list[tuple[str, str, str]]:
    """(part id, beats/beat-type, fifths) of each part's first bar in MusicXML text."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(xml_text)
    out = []
    for part in root.iter("part"):
        attributes = part.find("measure").find("attributes")
        time, key = attributes.find("time"), attributes.find("key")
        out.append((part.get("id"), f"{time.findtext('beats')}/{time.findtext('beat-type')}", key.findtext("fifths")))
    return out


def test_musicxml_and_engraving_give_every_staff_the_metre_and_key(tmp_path):
    from cadenza.data.io import write_musicxml
    from cadenza.rendering.score import musicxml_text, svg_pages

    written = write_musicxml(WHOLE, tmp_path / "out.musicxml").read_text()
    for text in (written, musicxml_text(WHOLE)):
        signatures = _signatures_per_part(text)
        assert len(signatures) == 4 and all(s[1:] == ("3/4", "2") for s in signatures)
    pytest.importorskip("verovio")
    svg = "".join(svg_pages(WHOLE))
    assert svg.count('class="staff"') == 4 * 3          # four staves in each of the three bars
    assert svg.count('class="meterSig') == svg.count('class="keySig') == 4  # 3/4 and D major on each staff


def test_cli_continue_musicxml_prompt_gives_four_staves_in_its_metre(tmp_path):
    from conftest import run_cli

    from cadenza.data.io import read_score, write_musicxml
    from cadenza.symbolic.checkpoint import save_checkpoint

    tok = get_tokenizer("event")
    save_checkpoint(tmp_path / "ckpt", _debug_model(tok.vocab_size), tok, {"step": 0})
    prompt = write_musicxml(PROMPT, tmp_path / "chorale.musicxml")
    assert len(read_score(prompt).tracks) >= 4
    run_cli("continue", prompt, "-o", tmp_path / "out.mid", "--checkpoint", tmp_path / "ckpt", "--seconds", "2",
            "--musicxml", "--seed", "0", "--device", "cpu")
    midi = symusic.Score(str(tmp_path / "out.mid"))
    assert [t.name for t in midi.tracks if t.notes][:4] == list(NAMES)
    assert (midi.time_signatures[0].numerator, round(midi.tempos[0].qpm)) == (3, 96)
    signatures = _signatures_per_part((tmp_path / "out.musicxml").read_text())
    assert len(signatures) == 4 and all(s[1:] == ("3/4", "2") for s in signatures)


def test_drums_stay_drums_and_pitched_notes_stay_out_of_them():
    prompt = PROMPT.copy()
    drums = symusic.Track("Drums", 0, True)
    drums.notes.append(symusic.Note(0, TPQ, 36, 80))
    prompt.tracks.append(drums)
    generated = symusic.Score(TPQ)
    generated.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    merged = symusic.Track("all", 0, False)
    for track in WHOLE.tracks:
        for note in track.notes:
            merged.notes.append(note.copy())
    kit = symusic.Track("kit", 0, True)
    kit.notes.append(symusic.Note(6 * TPQ, TPQ, 38, 80))
    generated.tracks.append(merged)
    generated.tracks.append(kit)
    restored = restore_context(prompt, generated)
    assert parts_of(restored)[:4] == parts_of(WHOLE)
    assert restored.tracks[4].is_drum and [n.pitch for n in restored.tracks[4].notes] == [38]
    no_kit = restore_context(PROMPT, generated)                  # a prompt without drums: the kit keeps its track
    assert [t.name for t in no_kit.tracks] == [*NAMES, "kit"] and no_kit.tracks[4].is_drum
