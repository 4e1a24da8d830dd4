"""Audio to MIDI with an MT3-style transcriber: audio I/O, checkpoints, inference, evaluation.

``transcribe(path)`` reads any audio soundfile can (WAV, FLAC, OGG, MP3 where libsndfile has
it), mixes to mono and resamples to 16 kHz block by block, cuts 2.048 s segments, and decodes
them in batches (greedy, with a key/value cache); the segments' tokens are stitched into one
Score by the MT3 codec. Memory is bounded by the batch, not by the length of the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import symusic

from cadenza.data.errors import CadenzaError, MusicFileError
from cadenza.symbolic.registry import MODELS_DIR
from cadenza.tokenizers.mt3 import MT3Tokenizer

from . import SAMPLE_RATE  # defined once, in the package
SHIPPED_MODEL = MODELS_DIR / "transcriber-piano"
SILENCE_PEAK = 10 ** (-70 / 20)  # below -70 dBFS everywhere: nothing to transcribe


# -- audio -------------------------------------------------------------------------------
def _open_audio(path: str | os.PathLike):
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise MusicFileError(path, "no such file")
    try:
        return soundfile.SoundFile(str(path))
    except (RuntimeError, OSError, TypeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise MusicFileError(path, f"not a readable audio file ({str(exc).splitlines()[0]})") from exc


def audio_blocks(path: str | os.PathLike, block_seconds: float = 60.0,
                 sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``sample_rate``, read and resampled block by block."""
    from math import gcd

    from scipy.signal import resample_poly

    handle = _open_audio(path)
    with handle:
        source_rate = handle.samplerate
        divisor = gcd(source_rate, sample_rate)
        up, down = sample_rate // divisor, source_rate // divisor
        frames = max(down, int(block_seconds * source_rate) // down * down)
        try:
            while True:
                block = handle.read(frames, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                mono = block.mean(axis=1)
                yield mono if up == down else resample_poly(mono, up, down).astype(np.float32)
        except RuntimeError as exc:
            raise MusicFileError(path, f"audio data is damaged ({str(exc).splitlines()[0]})") from exc


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The whole file as mono float32 at ``sample_rate``."""
    blocks = list(audio_blocks(path, sample_rate=sample_rate))
    if not blocks:
        raise MusicFileError(path, "the audio file holds no samples")
    return np.concatenate(blocks)


# -- checkpoints -------------------------------------------------------------------------
def save_transcriber(directory: str | os.PathLike, model, tokenizer: MT3Tokenizer, info: dict,
                     half: bool = False) -> Path:
    """directory/config.json ({"model", "tokenizer", "info"}) + model.safetensors, atomically."""
    import torch
    from safetensors.torch import save_file

    from cadenza.data.atomic import atomic_path, write_text_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    config = {"model": model.config.to_dict(), "tokenizer": tokenizer.to_dict(), "info": info}
    write_text_atomic(directory / "config.json", json.dumps(config, indent=2))
    return directory


def load_transcriber(directory: str | os.PathLike | None = None, device="cpu"):
    """(model, tokenizer, info) from a checkpoint directory or a shipped model's name; the default
    piano transcriber when none is given. The model is a framewise transcriber or a sequence model,
    as the checkpoint's config says; ``transcribe`` runs either."""
    import torch

    from cadenza.symbolic.checkpoint import checkpoint_directory, load_model, read_checkpoint_config
    from cadenza.symbolic.registry import DEFAULT_TRANSCRIBER

    from .seq2seq import Transcriber, TranscriberConfig

    directory = checkpoint_directory(directory or DEFAULT_TRANSCRIBER)
    config = read_checkpoint_config(directory)  # one line for a missing or unreadable config
    if "n_mels" not in config["model"]:
        scheme = (config.get("tokenizer") or {}).get("scheme", "?")
        if scheme == "mt3":  # a transcriber's config that lost a field, not another kind of model
            raise CadenzaError(f"{directory / 'config.json'}: the model config has no n_mels (the mel bands "
                               "a transcriber reads); the config is damaged")
        raise CadenzaError(f"{directory}: not a transcription checkpoint (its tokenizer is {scheme})")
    try:
        tokenizer = MT3Tokenizer(**config["tokenizer"]["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CadenzaError(f"{directory / 'config.json'}: bad MT3 tokenizer config ({exc})") from None
    if config.get("kind") == "framewise":
        from .framewise import FramewiseConfig, FramewiseTranscriber

        from .framewise import DecodeSettings

        model = load_model(directory, FramewiseConfig, FramewiseTranscriber, config["model"],
                           build_config=FramewiseConfig.from_dict)
        try:
            model.decode_settings = DecodeSettings(**config.get("decode", {}))
        except TypeError as exc:
            raise CadenzaError(f"{directory / 'config.json'}: bad decode settings ({exc})") from None
    else:
        model = load_model(directory, TranscriberConfig, Transcriber, config["model"])
    model.to(torch.device(device)).eval()
    return model, tokenizer, config.get("info", {})


# -- inference ---------------------------------------------------------------------------
@dataclass
class TranscriptionResult:
    score: symusic.Score
    seconds: float
    segments: int
    notes: int
    silent: bool
    invalid_events: int = 0
    messages: list[str] = field(default_factory=list)
    tokens: list[np.ndarray] = field(default_factory=list)  # MT3 event ids per codec segment (framewise model)


def _segments(blocks: Iterator[np.ndarray], segment_samples: int) -> Iterator[np.ndarray]:
    buffer = np.zeros(0, dtype=np.float32)
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while len(buffer) >= segment_samples:
            yield buffer[:segment_samples]
            buffer = buffer[segment_samples:]
    if len(buffer):
        yield np.pad(buffer, (0, segment_samples - len(buffer)))


def transcribe(audio, model=None, tokenizer: MT3Tokenizer | None = None, batch_segments: int = 32,
               device="cpu", progress: bool = False, max_tokens: int = 256) -> TranscriptionResult:
    """Transcribe a path or a mono 16 kHz float array. Silence gives an empty Score.

    ``max_tokens`` caps each 2.048 s segment's decoding; 256 is well above the densest window
    of the piano training data (159 tokens), so it only cuts off a model that loops."""
    import torch
    from tqdm import tqdm

    from .framewise import FramewiseTranscriber
    from .seq2seq import HOP

    if model is None:
        model, tokenizer, _ = load_transcriber(device=device)
    if isinstance(model, FramewiseTranscriber):
        return transcribe_framewise(audio, model, tokenizer, device=device, progress=progress)
    segment_frames = model.config.segment_frames
    segment_samples = segment_frames * HOP
    if isinstance(audio, np.ndarray):
        blocks: Iterator[np.ndarray] = iter([audio.astype(np.float32)])
    else:
        blocks = audio_blocks(audio)
    allowed = torch.ones(model.config.vocab_size, dtype=torch.bool)
    allowed[[tokenizer.pad_id, tokenizer.bos_id]] = False
    allowed = allowed.to(device)
    tokens: list[list[int]] = []
    counted = {"samples": 0}

    def counting(source: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for block in source:
            counted["samples"] += len(block)
            yield block

    peak = 0.0
    batch: list[np.ndarray] = []
    bar = tqdm(desc="transcribing", unit="segment", disable=not progress)

    def flush() -> None:
        sounding = [i for i, seg in enumerate(batch) if np.abs(seg).max() > SILENCE_PEAK]
        results: list[list[int]] = [[tokenizer.tie_id] for _ in batch]  # silent segment: nothing sounds
        if sounding:
            audio_batch = torch.as_tensor(np.stack([batch[i] for i in sounding])).to(device)
            # decoding is many tiny matrix products: on the CPU, intra-op threads cost more than
            # they give (measured 53x vs 0.7x real time with 1 vs 2 threads on a busy 2-core box)
            threads = torch.get_num_threads()
            if torch.device(device).type == "cpu":
                torch.set_num_threads(1)
            try:
                with torch.inference_mode():
                    mel = model.frontend(audio_batch)[:, :segment_frames]
                    decoded = model.generate(mel, tokenizer.bos_id, tokenizer.eos_id, max_len=max_tokens,
                                             allowed=allowed)
            finally:
                torch.set_num_threads(threads)
            for i, ids in zip(sounding, decoded):
                results[i] = ids
        tokens.extend(results)
        bar.update(len(batch))
        batch.clear()

    for segment in _segments(counting(blocks), segment_samples):
        peak = max(peak, float(np.abs(segment).max()))
        batch.append(segment)
        if len(batch) == batch_segments:
            flush()
    if batch:
        flush()
    bar.close()
    seconds_per_segment = segment_samples / SAMPLE_RATE
    starts = [i * seconds_per_segment for i in range(len(tokens))]
    score = tokenizer.decode_segments(tokens, starts)
    notes = sum(len(t.notes) for t in score.tracks)
    silent = peak <= SILENCE_PEAK
    if not tokens:
        raise MusicFileError("<array>" if isinstance(audio, np.ndarray) else audio, "the audio holds no samples")
    messages = _messages(silent, notes)
    return TranscriptionResult(score=score, seconds=counted["samples"] / SAMPLE_RATE, segments=len(tokens),
                               notes=notes, silent=silent, invalid_events=tokenizer.last_invalid,
                               messages=messages)


def _messages(silent: bool, notes: int) -> list[str]:
    if silent:
        return ["the audio is silent (peak below -70 dBFS): wrote an empty MIDI file"]
    if notes == 0:
        return ["no notes were found in the audio: wrote an empty MIDI file"]
    return []


class _Meter:
    """Samples and peak of the audio a stream has delivered so far."""

    def __init__(self):
        self.samples, self.peak = 0, 0.0


def framewise_probabilities(audio, model, chunk_seconds: float = 20.0, device="cpu",
                            meter: _Meter | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Sigmoid activations (frames, 88) of the framewise model, ``chunk_seconds`` at a time.

    Each chunk is computed with enough audio either side (the model's receptive field) that its
    frames equal those of the whole file, so memory is bounded by the chunk, whatever the file's
    length. ``audio`` is a path (any rate and channel count) or a mono 16 kHz array."""
    import torch

    config = model.config
    hop = config.hop
    margin = 0 if config.rnn else max(16, config.receptive_frames) * hop  # a recurrent model: the whole file at once
    chunk_frames = max(1, int(chunk_seconds * SAMPLE_RATE) // hop)
    chunk_samples = chunk_frames * hop
    meter = meter or _Meter()
    blocks = iter([audio.astype(np.float32)]) if isinstance(audio, np.ndarray) else audio_blocks(audio)
    buffer = np.zeros(margin, dtype=np.float32)  # global sample -margin onwards (zeros before the file)
    done_frames = 0

    def run(segment: np.ndarray, frames: int) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = model(model.features(torch.as_tensor(segment[None]).to(device)))
            skip = margin // hop
            return {k: torch.sigmoid(v[0, skip: skip + frames]).float().cpu().numpy() for k, v in outputs.items()}

    for block in blocks:
        meter.samples += len(block)
        if len(block):
            meter.peak = max(meter.peak, float(np.abs(block).max()))
        buffer = np.concatenate([buffer, block])
        while margin and len(buffer) >= margin + chunk_samples + margin:
            yield run(buffer[: margin + chunk_samples + margin], chunk_frames)
            buffer = buffer[chunk_samples:]
            done_frames += chunk_frames
    if meter.samples == 0:
        raise MusicFileError("<array>" if isinstance(audio, np.ndarray) else audio, "the audio holds no samples")
    frames = meter.samples // hop + 1 - done_frames
    if frames > 0:
        needed = margin + frames * hop + margin
        yield run(np.pad(buffer, (0, max(0, needed - len(buffer))))[:needed], frames)


def transcribe_framewise(audio, model, tokenizer: MT3Tokenizer, device="cpu", progress: bool = False,
                         chunk_seconds: float = 20.0, settings=None) -> TranscriptionResult:
    """The framewise model over a path or an array: activations chunk by chunk
    (:func:`framewise_probabilities`) into the streaming note decoder, which carries its open
    notes across chunks. Notes go through the MT3 codec: the result holds the event ids of every
    2.048 s segment, and its score is their decoding."""
    import torch
    from tqdm import tqdm

    from cadenza.tokenizers.mt3 import notes_to_score

    from .framewise import NoteDecoder

    decoder = NoteDecoder(model.config.frame_seconds, settings or getattr(model, "decode_settings", None))
    meter = _Meter()
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)  # small convolutions: one thread is fastest per second of work on a shared CPU
    try:
        for probabilities in tqdm(framewise_probabilities(audio, model, chunk_seconds, device, meter),
                                  desc="transcribing", unit="chunk", disable=not progress):
            decoder.feed(probabilities)
    finally:
        torch.set_num_threads(threads)
    silent = meter.peak <= SILENCE_PEAK
    notes = [] if silent else decoder.finish()
    seconds = meter.samples / SAMPLE_RATE
    segment_count = max(1, int(np.ceil(seconds / tokenizer.segment_seconds)))
    tokens = tokenizer.encode_segments(notes_to_score([(s, e, p, v, 0, False) for s, e, p, v in notes]),
                                       num_segments=segment_count)
    score = tokenizer.decode_segments(tokens)
    count = sum(len(t.notes) for t in score.tracks)
    return TranscriptionResult(score=score, seconds=seconds, segments=len(tokens), notes=count, silent=silent,
                               invalid_events=tokenizer.last_invalid, messages=_messages(silent, count),
                               tokens=tokens)


# -- evaluation --------------------------------------------------------------------------
def note_table(score: symusic.Score, program: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intervals (n, 2) seconds, pitches (n,) Hz, velocities (n,)) of a score's non-drum notes,
    optionally of one program, sorted by onset."""
    import mir_eval

    seconds = score.to("second")
    rows = [(n.time, n.time + n.duration, n.pitch, n.velocity) for t in seconds.tracks if not t.is_drum
            and (program is None or t.program == program) for n in t.notes]
    if not rows:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    rows.sort()
    array = np.asarray(rows, dtype=np.float64)
    intervals = array[:, :2].copy()
    intervals[:, 1] = np.maximum(intervals[:, 1], intervals[:, 0] + 1e-3)
    return intervals, mir_eval.util.midi_to_hz(array[:, 2]), array[:, 3]


def note_arrays(score: symusic.Score, program: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mir_eval's (intervals (n, 2) seconds, pitches (n,) Hz) of a score, optionally of one program."""
    return note_table(score, program)[:2]


def velocity_errors(reference: symusic.Score, estimate: symusic.Score) -> dict:
    """Mean absolute velocity error (MIDI units) over onset-matched notes: as given, and after the
    best affine map of estimated onto reference velocities (loudness is only known up to the
    recording's gain and the instrument's response, so the fitted figure is the comparable one)."""
    import mir_eval

    ref, est = note_table(reference), note_table(estimate)
    if not len(ref[1]) or not len(est[1]):
        return {"velocity_mae": None, "velocity_mae_fitted": None, "velocity_pairs": 0}
    pairs = mir_eval.transcription.match_notes(ref[0], ref[1], est[0], est[1], onset_tolerance=0.05, offset_ratio=None)
    if not pairs:
        return {"velocity_mae": None, "velocity_mae_fitted": None, "velocity_pairs": 0}
    truth = np.array([ref[2][i] for i, _ in pairs])
    guess = np.array([est[2][j] for _, j in pairs])
    design = np.stack([guess, np.ones_like(guess)], axis=1)
    fitted = design @ np.linalg.lstsq(design, truth, rcond=None)[0]
    return {"velocity_mae": float(np.abs(truth - guess).mean()), "velocity_mae_fitted": float(np.abs(truth - fitted).mean()),
            "velocity_pairs": len(pairs)}


def transcription_scores(reference: symusic.Score, estimate: symusic.Score) -> dict:
    """Onset F1 (50 ms), onset+offset F1 (50 ms, offsets within 20% or 50 ms) and, when the
    reference has several programs, onset+offset F1 per program (MT3's multi-instrument F1)."""
    import mir_eval

    def f1s(ref, est, offsets: bool) -> tuple[float, float, float]:
        if len(ref[1]) == 0 and len(est[1]) == 0:
            return 1.0, 1.0, 1.0
        if len(ref[1]) == 0 or len(est[1]) == 0:
            return 0.0, 0.0, 0.0
        p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref[0], ref[1], est[0], est[1], onset_tolerance=0.05, offset_ratio=0.2 if offsets else None,
            offset_min_tolerance=0.05)
        return p, r, f

    ref, est = note_arrays(reference), note_arrays(estimate)
    p, r, f = f1s(ref, est, False)
    _, _, f_off = f1s(ref, est, True)
    out = {"onset_precision": p, "onset_recall": r, "onset_f1": f, "onset_offset_f1": f_off,
           "reference_notes": len(ref[1]), "estimated_notes": len(est[1])}
    programs = sorted({t.program for t in reference.tracks if not t.is_drum and len(t.notes)})
    if len(programs) > 1:
        out["program_f1"] = {p: f1s(note_arrays(reference, p), note_arrays(estimate, p), True)[2] for p in programs}
    return out


def evaluate(model, tokenizer: MT3Tokenizer, pairs: list[tuple[Path, Path]], batch_segments: int = 32,
             progress: bool = True) -> dict:
    """Mean scores over (audio, midi) pairs, note-weighted sums, and the speed vs real time."""
    import time

    from tqdm import tqdm

    per_piece = []
    audio_seconds = compute_seconds = 0.0
    totals = {"tp_onset": 0.0, "ref": 0, "est": 0}
    for audio_path, midi_path in tqdm(pairs, desc="evaluating", unit="piece", disable=not progress):
        began = time.perf_counter()
        result = transcribe(audio_path, model, tokenizer, batch_segments=batch_segments)
        compute_seconds += time.perf_counter() - began
        audio_seconds += result.seconds
        scores = transcription_scores(symusic.Score(str(midi_path)), result.score)
        scores["piece"] = Path(audio_path).stem
        per_piece.append(scores)
        totals["ref"] += scores["reference_notes"]
        totals["est"] += scores["estimated_notes"]
    mean = {key: float(np.mean([s[key] for s in per_piece])) if per_piece else 0.0
            for key in ("onset_precision", "onset_recall", "onset_f1", "onset_offset_f1")}
    by_program: dict[int, list[float]] = {}
    for scores in per_piece:
        for program, value in scores.get("program_f1", {}).items():
            by_program.setdefault(program, []).append(value)
    programs = {program: {"onset_offset_f1": float(np.mean(values)), "pieces": len(values)}
                for program, values in sorted(by_program.items())}
    return {**mean, "programs": programs, "pieces": len(per_piece), "audio_seconds": audio_seconds, "compute_seconds": compute_seconds,
            "speed_x_realtime": audio_seconds / max(compute_seconds, 1e-9), "per_piece": per_piece,
            "reference_notes": totals["ref"], "estimated_notes": totals["est"]}
