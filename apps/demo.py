"""The main job end to end: score → MIDI → model continuation → audio → transcription → MIDI.

Takes the opening of a test-split Bach chorale, continues it with the shipped Music
Transformer, writes MIDI, MusicXML, a FluidSynth WAV and an example sheet comparing prompt and
continuation, then transcribes the WAV with the shipped transcriber and scores the
transcription against the generated MIDI (onset F1), closing the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import symusic

from cadenza.data.errors import CadenzaError


@dataclass
class DemoResult:
    piece_id: str
    files: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)


def chorale_from_test_split(index: int = 0) -> tuple[str, Path]:
    """(piece id, MIDI path) of the index-th test-split Bach chorale, exporting only that one."""
    from cadenza.data.corpora import BuiltinCorpus, source_piece_id, split_of

    corpus = BuiltinCorpus("bach-chorales")
    tests = [s for s in corpus.sources() if split_of(source_piece_id(s)) == "test"]
    if not tests:
        raise CadenzaError("no test-split chorale found in the music21 corpus")
    pieces = corpus.pieces(sources=[tests[index % len(tests)]])
    return pieces[0].id, pieces[0].path


def opening(score: symusic.Score, bars: int) -> symusic.Score:
    """The first ``bars`` bars of a score (by its first time signature)."""
    numerator, denominator = 4, 4
    if score.time_signatures:
        numerator, denominator = score.time_signatures[0].numerator, score.time_signatures[0].denominator
    end = int(bars * numerator * 4 / denominator * score.ticks_per_quarter)
    return score.clip(0, end, clip_end=True)


def run_demo(out: str | Path = "demo-out", *, model: str | None = None, seconds: float = 12.0,
             prompt_bars: int = 4, seed: int = 0, temperature: float = 1.0, top_p: float = 0.95,
             device: str = "cpu", log=print) -> DemoResult:
    """Run the whole loop and return the files written and the figures measured."""
    from cadenza.data.io import read_score, write_midi, write_musicxml
    from cadenza.rendering.audio import write_audio
    from cadenza.rendering.fluidsynth import render
    from cadenza.rendering.sheet import write_continuation_sheet
    from cadenza.symbolic.checkpoint import load_checkpoint
    from cadenza.symbolic.device import resolve_device
    from cadenza.symbolic.registry import DEFAULT_MODEL, resolve_model
    from cadenza.symbolic.sampling import continue_score
    from cadenza.transcription.inference import load_transcriber, transcribe, transcription_scores

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    piece_id, path = chorale_from_test_split()
    result = DemoResult(piece_id)
    prompt = opening(read_score(path), prompt_bars)
    prompt_seconds = float(prompt.to("second").end())
    log(f"prompt: the first {prompt_bars} bars of {piece_id} (bach-chorales, test split), {prompt_seconds:.1f} s")

    model_dir = resolve_model(model or DEFAULT_MODEL)
    network, tokenizer, info = load_checkpoint(model_dir, device=resolve_device(device))
    log(f"model: {model_dir.name} ({tokenizer.name} tokens, {sum(p.numel() for p in network.parameters()) / 1e6:.1f} M "
        f"parameters, valid {info.get('valid_bits_per_note', float('nan')):.2f} bits/note)")
    generated = continue_score(network, tokenizer, prompt, seconds=seconds, temperature=temperature, top_p=top_p,
                               seed=seed)[0]
    result.figures["generation_seconds"] = time.perf_counter() - started
    total_seconds = float(generated.to("second").end())
    log(f"continued by {total_seconds - prompt_seconds:.1f} s: {generated.note_num()} notes in all "
        f"(seed {seed}, temperature {temperature}, top-p {top_p})")

    stem = f"{piece_id}-continued"
    result.files["prompt MIDI"] = write_midi(prompt, out / f"{piece_id}-prompt.mid")
    result.files["MIDI"] = write_midi(generated, out / f"{stem}.mid")
    result.files["MusicXML"] = write_musicxml(generated, out / f"{stem}.musicxml")
    audio = render(generated, sample_rate=44100)
    result.files["WAV"] = write_audio(out / f"{stem}.wav", audio, 44100)
    result.files["example sheet"] = write_continuation_sheet(
        out / f"{stem}.html", f"cadenza: {piece_id} continued", prompt, [generated], model=model_dir.name,
        metadata={"scheme": tokenizer.name, "seed": seed, "temperature": temperature, "top-p": top_p},
        prompt_description=f"The first {prompt_bars} bars of {piece_id}.", audio=[audio], sample_rate=44100)

    transcriber, codec, _ = load_transcriber(device="cpu")
    transcription = transcribe(str(result.files["WAV"]), transcriber, codec)
    result.files["transcription"] = write_midi(transcription.score, out / f"{stem}-transcribed.mid") \
        if transcription.score.note_num() else None
    scores = transcription_scores(generated, transcription.score)
    result.figures.update(onset_f1=scores["onset_f1"], onset_offset_f1=scores["onset_offset_f1"],
                          seconds=time.perf_counter() - started)
    log(f"transcribed the WAV back: {scores['estimated_notes']} notes vs {scores['reference_notes']} generated; "
        f"onset F1 {scores['onset_f1']:.3f}, onset+offset F1 {scores['onset_offset_f1']:.3f}")
    return result
