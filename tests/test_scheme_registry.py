"""A tokenization owns its scheme: a new scheme is one class plus one registry line, and no code
outside ``tokenizers/`` tests a scheme's name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import symusic
import torch

from cadenza.tokenizers import SCHEMES, Tokenizer, get_tokenizer, scheme_class
from cadenza.tokenizers.grammar import Grammar, SamplingConstraints

REPO = Path(__file__).resolve().parent.parent
SECONDS_PER_NOTE = 0.5


class ToyTokenizer(Tokenizer):
    """A melody as one id per note (its pitch), each note a quarter at 120 bpm, one after another."""

    name = "toy"

    @property
    def base_vocab_size(self) -> int:
        return 128

    def encode(self, score) -> np.ndarray:
        notes = [n for track in self.as_score(score).tracks for n in track.notes]
        return np.array([n.pitch for n in sorted(notes, key=lambda n: (n.time, n.pitch))], np.int64)

    def decode(self, ids) -> symusic.Score:
        score = symusic.Score(480)
        track = symusic.Track(program=0)
        for i, pitch in enumerate(self.check_ids(ids)):
            track.notes.append(symusic.Note(i * 480, 480, int(pitch), 80))
        score.tracks.append(track)
        return score

    def ranges(self) -> list[tuple[str, int, int]]:
        return [("PITCH 0-127", 0, 128)]

    def _base_token_to_str(self, token_id: int) -> str:
        return f"PITCH_{token_id}"

    def grammar(self, constraints: SamplingConstraints | None = None) -> Grammar:
        return ToyGrammar(self, constraints)


class ToyGrammar(Grammar):
    """Any pitch may follow; every id is half a second of music."""

    def _reset_state(self) -> None:
        self.count = np.zeros(self.batch, np.int64)

    def _consume(self, row: int, token: int) -> None:
        self.count[row] += 1

    def _allow(self, row: int, mask: np.ndarray) -> None:
        mask[:self.tokenizer.base_vocab_size] = True

    def seconds(self, row: int) -> float:
        return self.count[row] * SECONDS_PER_NOTE


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(SCHEMES, "toy", ToyTokenizer)     # the one registry line
    return get_tokenizer("toy")


def _melody(pitches) -> symusic.Score:
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    for i, pitch in enumerate(pitches):
        track.notes.append(symusic.Note(i * 480, 480, pitch, 80))
    score.tracks.append(track)
    return score


def test_a_new_scheme_trains_one_step_and_samples_through_the_library(toy, tmp_path):
    from cadenza.data.datasets import ArrayPieces, RandomCrops, collate, training_dataset
    from cadenza.symbolic.checkpoint import load_checkpoint, save_checkpoint
    from cadenza.symbolic.sampling import continue_score
    from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig

    assert scheme_class("toy") is ToyTokenizer and toy.vocab_size == 131
    scores = [_melody([60, 62, 64, 65, 67, 65, 64, 62] * 3), _melody([67, 69, 71, 72] * 5)]
    source = ArrayPieces(toy, [toy.encode(s) for s in scores], [s.note_num() for s in scores], [12.0, 10.0])
    crops = training_dataset(source, 16, seed=0)
    assert isinstance(crops, RandomCrops)                          # the base: crops, not packing
    inputs, targets = collate([crops[n] for n in range(4)])
    assert inputs.shape == (4, 16) and set(inputs[:, 0].tolist()) <= {toy.bos_id, *range(60, 73)}

    torch.manual_seed(0)
    model = MusicTransformer(MusicTransformerConfig.debug(toy.vocab_size))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(inputs, targets)[1]
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    save_checkpoint(tmp_path / "toy-run", model, toy, {"step": 1})
    model, tokenizer, _ = load_checkpoint(tmp_path / "toy-run")
    assert isinstance(tokenizer, ToyTokenizer)
    prompt = _melody([60, 64, 67])
    by_tokens = continue_score(model, tokenizer, prompt, tokens=5, num_samples=2, seed=0)
    by_seconds = continue_score(model, tokenizer, prompt, seconds=1.0, seed=0)
    assert [s.note_num() for s in by_tokens] == [8, 8] and by_seconds[0].note_num() == 3 + 2
    first = [n.pitch for n in by_tokens[0].tracks[0].notes]
    assert first[:3] == [60, 64, 67] and all(0 <= p < 128 for p in first)
    again = continue_score(model, tokenizer, prompt, tokens=5, num_samples=2, seed=0)
    assert [[n.pitch for n in s.tracks[0].notes] for s in again] == [[n.pitch for n in s.tracks[0].notes]
                                                                     for s in by_tokens]


def test_the_base_defaults_frame_with_bos_and_eos_and_augment_through_a_score(toy):
    assert toy.frame() == ([toy.bos_id], [toy.eos_id]) and not toy.packs_sequences and not toy.takes_controls
    melody = _melody([60, 62, 64])
    assert toy.prompt_ids(melody).tolist() == [toy.bos_id, 60, 62, 64]
    assert toy.augment_ids(np.array([60, 62, 64]), 2, 1.0).tolist() == [62, 64, 66]
    with pytest.raises(Exception, match="toy scheme trains on crops"):
        toy.pack_sequences([melody], 16)


def test_every_shipped_scheme_hands_out_its_grammar_and_frame():
    from cadenza.tokenizers import anticipation_ops as ops

    for name in SCHEMES:
        tok = get_tokenizer(name)
        grammar = tok.grammar()
        start, end = tok.frame()
        grammar.reset(np.asarray([start], np.int64))
        mask = grammar.allowed()
        assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (1, tok.vocab_size)
        assert mask[0].any() and not mask[0, tok.base_vocab_size:].any()      # never a special id
    assert get_tokenizer("anticipatory").frame() == ([ops.AUTOREGRESS] + [ops.SEPARATOR] * 3, [ops.SEPARATOR] * 3)
    assert get_tokenizer("anticipatory").packs_sequences and get_tokenizer("anticipatory").takes_controls


def test_grammars_import_no_torch():
    import subprocess
    import sys

    code = ("import sys; import cadenza.tokenizers.grammar, cadenza.tokenizers.event; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- no scheme names outside tokenizers/ ---------------------------------------------------------
def _scheme_name_tests(source: str) -> list[str]:
    names = "|".join(re.escape(n) for n in SCHEMES)
    quoted = rf"""["'](?:{names})["']"""
    patterns = [
        rf"(?:==|!=)\s*{quoted}", rf"{quoted}\s*(?:==|!=)",          # name == "event"
        rf"\bin\s*[(\[{{]\s*{quoted}",                                # name in ("event", ...)
        rf"[{{,]\s*{quoted}\s*:",                                     # {"event": ...} tables
        r"\.name\s*(?:==|!=)",                                         # tokenizer.name == ...
    ]
    return [line.strip() for line in source.splitlines() if any(re.search(p, line) for p in patterns)]


def test_the_check_finds_what_it_looks_for():
    found = _scheme_name_tests('if tok.name == "x":\nif scheme != "remi":\nT = {"event": f}\nif s in ("anticipatory", "b"):\n'
                               'ok = get_tokenizer("event")\np.add_argument(default="event")')
    assert len(found) == 4


def test_no_module_outside_tokenizers_tests_a_scheme_name():
    packages = [p for p in REPO.iterdir() if (p / "__init__.py").exists() and p.name not in ("tokenizers", "tests")]
    assert {"symbolic", "data", "cli"} <= {p.name for p in packages}
    offenders = []
    for package in packages:
        for path in package.rglob("*.py"):
            offenders += [f"{path.relative_to(REPO)}: {line}" for line in _scheme_name_tests(path.read_text())]
    assert offenders == []
