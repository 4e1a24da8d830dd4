"""Sampling: filters, the KV cache, seeds, grammars that keep every output decodable, lengths."""

from __future__ import annotations

import numpy as np
import pytest
import symusic
import torch

from cadenza.data.errors import CadenzaError
from cadenza.symbolic.decoding import TopP
from cadenza.symbolic.sampling import continue_score, filter_logits, generate, prompt_ids
from cadenza.symbolic.transformer import MusicTransformer, MusicTransformerConfig
from cadenza.tokenizers import get_tokenizer
from cadenza.tokenizers.grammar import SamplingConstraints



def _model(vocab_size: int, seed: int = 0, **overrides) -> MusicTransformer:
    torch.manual_seed(seed)
    return MusicTransformer(MusicTransformerConfig.debug(vocab_size, **overrides)).eval()


def _prompt_score() -> symusic.Score:
    """Two bars of quarter notes at 120 bpm in 4/4 (1 s per bar), a C major arpeggio."""
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(program=0)
    for i, pitch in enumerate([60, 64, 67, 72, 67, 64, 60, 55]):
        track.notes.append(symusic.Note(i * 480, 480, pitch, 80))
    score.tracks.append(track)
    return score


def _onsets_seconds(score: symusic.Score) -> np.ndarray:
    seconds = score.to("second")
    return np.sort(np.array([n.time for t in seconds.tracks for n in t.notes]))


# -- filters ---------------------------------------------------------------------------------
def test_top_k_and_top_p_keep_the_right_ids():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    kept = lambda filtered: torch.isfinite(filtered[0]).nonzero().flatten().tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [1, 3]
    assert kept(filter_logits(logits, top_p=0.8)) == [1, 3]          # 0.5 + 0.3 reach 0.8
    assert kept(filter_logits(logits, top_p=0.81)) == [1, 2, 3]
    assert kept(filter_logits(logits, top_p=0.1)) == [1]             # the best id always stays
    spared = TopP(0.8, keep=torch.tensor([True, False, False, False]))(None, logits)
    assert kept(spared) == [0, 1, 3]                                 # a kept id survives the cut, the rest as before
    sharp = torch.softmax(filter_logits(logits, temperature=0.5), -1)
    assert torch.allclose(sharp, torch.softmax(logits * 2, -1))


# -- generate ----------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["relative", "absolute"])
def test_cache_and_recompute_sample_the_same_ids(attention):
    model = _model(40, attention=attention, max_relative_position=16)
    prompt = torch.randint(0, 40, (3, 20), generator=torch.Generator().manual_seed(0))
    cached = generate(model, prompt, 30, seed=7, top_k=20)
    recomputed = generate(model, prompt, 30, seed=7, top_k=20, use_cache=False)
    assert cached.shape == (3, 50)
    assert torch.equal(cached[:, :20], prompt)
    assert torch.equal(cached, recomputed)


def test_seeds_reproduce_and_batch_rows_differ():
    model = _model(40)
    prompt = torch.zeros(4, 3, dtype=torch.long)
    first, again = generate(model, prompt, 25, seed=3), generate(model, prompt, 25, seed=3)
    assert torch.equal(first, again)
    assert not torch.equal(first, generate(model, prompt, 25, seed=4))
    assert len({tuple(row.tolist()) for row in first}) == 4
    greedy = generate(model, prompt, 10, temperature=0)
    assert torch.equal(greedy[0], greedy[1])


def test_a_trained_model_continues_its_pattern():
    model = _model(12).train()
    pattern = torch.tensor([[1, 5, 2, 7, 3, 9] * 6])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model(pattern[:, :-1], pattern[:, 1:])[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = generate(model, pattern[:, :8], 16, temperature=0)
    assert out[0].tolist() == pattern[0, :24].tolist()


def test_eos_stops_a_row_and_fills_it():
    model = _model(10)
    prompt = torch.tensor([[1, 2], [4, 4]])
    free = generate(model, prompt, 8, temperature=0)
    eos = int(free[0, 3])                        # the second id row 0 generates plays EOS
    out = generate(model, prompt, 8, eos_id=eos, temperature=0)
    assert torch.equal(out[0, :4], free[0, :4]) and (out[0, 4:] == eos).all()
    hits = (free[1, 2:] == eos).nonzero()
    stop = 2 + int(hits[0]) + 1 if len(hits) else 10
    assert torch.equal(out[1, :stop], free[1, :stop]) and (out[1, stop:] == eos).all()


# -- grammars ----------------------------------------------------------------------------------
def test_event_grammar_only_closes_sounding_notes():
    tok = get_tokenizer("event")
    model = _model(tok.vocab_size)
    grammar = tok.grammar()
    prompt = torch.tensor([[tok.bos_id, 60, 300]])      # NOTE_ON 60, a shift
    out = generate(model, prompt.repeat(2, 1), 120, seed=0, grammar=grammar)[:, 1:].numpy()
    for row in out:
        sounding = np.zeros(128, int)
        for previous, token in zip([-1, *row[:-1]], row):
            assert token < tok.base_vocab_size            # no special ids
            if 356 <= previous < 388:
                assert token < 128                         # VELOCITY -> NOTE_ON
            if token < 128:
                sounding[token] += 1
            elif token < 256:
                assert sounding[token - 128] > 0
                sounding[token - 128] -= 1
    assert (out[:, 1:] >= 128).any() and (out[:, 1:] < 256).any()   # it did close notes


def test_event_grammar_measures_seconds_and_stops():
    tok = get_tokenizer("event")
    grammar = tok.grammar()
    grammar.set_limits(seconds=1.5)
    grammar.reset(np.array([[tok.bos_id, 60, 355, 188]]))  # ON 60, 1 s, OFF 60
    assert grammar.seconds(0) == 1.0
    grammar.advance([64])
    grammar.advance([355])                                   # +1 s: 2.0 - 1.0 < 1.5
    assert not grammar.finished[0]
    grammar.advance([305])                                   # +0.5 s
    assert grammar.finished[0] and grammar.valid_length[0] == 3
    with pytest.raises(CadenzaError, match="no bars"):
        grammar.set_limits(bars=2)


def test_anticipatory_grammar_triples_and_time_order():
    from cadenza.tokenizers import anticipation_ops as v

    tok = get_tokenizer("anticipatory")
    grammar = tok.grammar(SamplingConstraints.off())      # the grammar alone (constraints: test_constraints.py)
    grammar.set_limits(seconds=2.0)
    start = [v.AUTOREGRESS, v.SEPARATOR, v.SEPARATOR, v.SEPARATOR]
    grammar.reset(np.array([start + [v.TIME_OFFSET + 100, v.DUR_OFFSET + 50, v.NOTE_OFFSET + 60]]))
    assert grammar.seconds(0) == 1.0
    mask = grammar.allowed()[0]
    assert not mask[v.TIME_OFFSET + 99] and mask[v.TIME_OFFSET + 100] and mask[v.TIME_OFFSET + 9999]
    assert mask.sum() == v.MAX_TIME - 100                  # only times, none earlier
    assert not grammar.advance([v.TIME_OFFSET + 150])[0]
    mask = grammar.allowed()[0]
    assert mask.sum() == v.MAX_DUR and mask[v.DUR_OFFSET:v.NOTE_OFFSET].all()
    grammar.advance([v.DUR_OFFSET + 10])
    mask = grammar.allowed()[0]
    assert mask[v.NOTE_OFFSET:v.REST + 1].all() and mask.sum() == v.REST + 1 - v.NOTE_OFFSET
    assert grammar.valid_length[0] == 0                     # mid-triple
    grammar.advance([v.NOTE_OFFSET + 64])
    assert grammar.valid_length[0] == 3 and grammar.seconds(0) == 1.5
    dropped = grammar.advance([v.TIME_OFFSET + 300])        # 3.0 s: past 1.0 + 2.0
    assert dropped[0] and grammar.finished[0] and grammar.valid_length[0] == 3


def test_anticipatory_continuations_decode_in_time_order():
    from cadenza.tokenizers import anticipation_ops as v

    tok = get_tokenizer("anticipatory")
    model = _model(tok.vocab_size)
    score = _prompt_score()
    prompt = prompt_ids(tok, score)
    outs = continue_score(model, tok, score, tokens=30, num_samples=2, seed=0)
    for out in outs:
        assert out.note_num() == score.note_num() + 10     # 30 ids = 10 notes (no RESTs drawn here)
    # The raw ids: whole triples, times never going backwards.
    grammar = tok.grammar()
    grammar.set_limits(tokens=30)
    ids = generate(model, torch.as_tensor(prompt)[None], 40, seed=0, grammar=grammar)[0, len(prompt):].numpy()
    triples = ids[:30].reshape(-1, 3)
    assert ((triples[:, 0] >= v.TIME_OFFSET) & (triples[:, 0] < v.DUR_OFFSET)).all()
    assert ((triples[:, 1] >= v.DUR_OFFSET) & (triples[:, 1] < v.NOTE_OFFSET)).all()
    assert ((triples[:, 2] >= v.NOTE_OFFSET) & (triples[:, 2] <= v.REST)).all()
    times = triples[:, 0]
    assert (np.diff(times) >= 0).all() and times[0] >= 350  # the prompt's last onset is 3.5 s
    assert (ids[30:] == tok.pad_id).all()


def _remi_errors(tok, ids) -> float:
    from miditok import TokSequence

    names = [tok.token_to_str(i) for i in ids if i < tok.base_vocab_size]
    return tok.miditok.tokens_errors(TokSequence(tokens=names))


class _FondOfBars(MusicTransformer):
    """An untrained model nudged towards REMI's Bar token (id 0), so bars come round quickly."""

    def forward(self, *args, **kwargs):
        logits, loss = super().forward(*args, **kwargs)
        logits[..., 0] += 4.0
        return logits, loss


def test_remi_continuations_follow_miditok_grammar_and_bar_counts():
    tok = get_tokenizer("remi")
    torch.manual_seed(0)
    model = _FondOfBars(MusicTransformerConfig.debug(tok.vocab_size)).eval()
    score = _prompt_score()
    prompt = prompt_ids(tok, score)
    bar = tok.token_to_str(0) == "Bar_None" and 0
    grammar = tok.grammar()
    grammar.set_limits(bars=2)
    out = generate(model, torch.as_tensor(prompt)[None].repeat(2, 1), 400, seed=1, grammar=grammar)
    for row in range(2):
        ids = out[row, :len(prompt) + grammar.valid_length[row]].numpy()
        assert _remi_errors(tok, ids[1:]) == 0
        new = ids[len(prompt):]
        assert (new == bar).sum() == 2 and grammar.finished[row]
        assert (out[row, len(ids):] == tok.pad_id).all()    # the third Bar was dropped
        # positions rise within each bar
        names = [tok.token_to_str(i) for i in new]
        last = -1
        for name in names:
            if name == "Bar_None":
                last = -1
            elif name.startswith("Position_"):
                assert int(name.split("_")[1]) > last
                last = int(name.split("_")[1])


def test_remi_seconds_limit_and_prompt_kept():
    tok = get_tokenizer("remi")
    torch.manual_seed(2)
    model = _FondOfBars(MusicTransformerConfig.debug(tok.vocab_size)).eval()
    score = _prompt_score()
    prompt_onsets = _onsets_seconds(tok.decode(tok.encode(score)))
    for out in continue_score(model, tok, score, seconds=2.0, num_samples=2, seed=0, max_tokens=600):
        onsets = _onsets_seconds(out)
        assert np.allclose(onsets[:len(prompt_onsets)], prompt_onsets)
        assert onsets.max() < prompt_onsets.max() + 2.0 + 1e-6


def test_event_continuation_by_seconds_keeps_the_prompt():
    tok = get_tokenizer("event")
    model = _model(tok.vocab_size)
    score = _prompt_score()
    prompt_decoded = tok.decode(tok.encode(score))
    outs = continue_score(model, tok, score, seconds=1.0, num_samples=3, seed=5, top_p=0.9)
    assert len(outs) == 3
    base = _onsets_seconds(prompt_decoded)
    for out in outs:
        onsets = _onsets_seconds(out)
        assert np.allclose(onsets[:len(base)], base, atol=0.011)
        assert onsets.max() < 4.0 + 1.0 + 1e-6              # the prompt ends at 4 s
        assert out.note_num() >= prompt_decoded.note_num()
    assert len({tuple(_onsets_seconds(o)) for o in outs}) > 1


def test_continue_score_rejects_bad_lengths():
    tok = get_tokenizer("event")
    model = _model(tok.vocab_size)
    with pytest.raises(CadenzaError):
        continue_score(model, tok, _prompt_score(), tokens=5, seconds=2)
    with pytest.raises(CadenzaError, match="no bars"):
        continue_score(model, tok, _prompt_score(), bars=2)
    with pytest.raises(CadenzaError, match="do not belong"):
        continue_score(_model(50), tok, _prompt_score(), tokens=5)


# -- the command ----------------------------------------------------------------------------------
def test_cli_continue_writes_numbered_continuations(tmp_path):
    from conftest import run_cli

    from cadenza.data.io import write_midi
    from cadenza.symbolic.checkpoint import save_checkpoint

    tok = get_tokenizer("event")
    save_checkpoint(tmp_path / "ckpt", _model(tok.vocab_size), tok, {"step": 0})
    prompt = write_midi(_prompt_score(), tmp_path / "prompt.mid")
    result = run_cli("continue", prompt, "-o", tmp_path / "out.mid", "--checkpoint", tmp_path / "ckpt",
                     "--seconds", "1.5", "--num-samples", "2", "--seed", "3", "--device", "cpu")
    assert "2 continuation(s)" in result.stdout.splitlines()[-1]
    outputs = [symusic.Score(str(tmp_path / f"out-{i}.mid")) for i in (1, 2)]
    base = tok.decode(tok.encode(_prompt_score()))
    for out in outputs:
        onsets = _onsets_seconds(out)
        assert out.note_num() > base.note_num() and onsets.max() < 4.0 + 1.5 + 1e-3
    assert not (tmp_path / "out.mid").exists()


def test_cli_continue_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from cadenza.cli.main import main
    from cadenza.data.io import write_midi

    prompt = write_midi(_prompt_score(), tmp_path / "prompt.mid")
    status = main(["continue", str(prompt), "-o", str(tmp_path / "x.mid"), "--checkpoint", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert status == 2 and "not a checkpoint" in err and len(err.splitlines()) == 1


# -- the sampling core: processors, rows that stop on their own, budgets ------------------------
def test_the_sampler_draws_what_torch_multinomial_draws_and_rows_do_not_depend_on_each_other():
    from cadenza.symbolic.decoding import Sampler, StepState

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1)) * 3
    probs = torch.softmax(logits, -1)
    reference = torch.Generator().manual_seed(9)
    sampler = Sampler(3, 9, "cpu")
    alone = Sampler(3, 9, "cpu")
    for _ in range(20):
        expected = torch.multinomial(probs, 1, generator=reference).squeeze(1)
        assert torch.equal(sampler(StepState(3, torch.arange(3)), logits), expected)
        # row 2 alone, as when rows 0 and 1 have left the batch: the same id as in the batch
        assert int(alone(StepState(3, torch.tensor([2])), logits[2:])[0]) == int(expected[2])
    assert Sampler(3, 0, "cpu", greedy=True)(StepState(3, torch.arange(3)), logits).tolist() == \
        logits.argmax(-1).tolist()


class _CountingModel(MusicTransformer):
    """Records the batch size of every forward pass."""

    def forward(self, ids, *args, **kwargs):
        self.batches = getattr(self, "batches", []) + [ids.shape[0]]
        return super().forward(ids, *args, **kwargs)


def test_finished_rows_leave_the_batch_and_the_cache():
    torch.manual_seed(0)
    model = _CountingModel(MusicTransformerConfig.debug(10)).eval()
    prompt = torch.tensor([[1, 2], [4, 4], [3, 1]])
    free = generate(model, prompt, 12, temperature=0)
    eos = int(free[0, 2])                                  # row 0's first new id plays EOS
    model.batches = []
    out = generate(model, prompt, 12, eos_id=eos, temperature=0)
    assert (out[0, 3:] == eos).all() and torch.equal(out[0, :3], free[0, :3])
    live = [3 - int(((out[:, 2:2 + step] == eos).any(1)).sum()) for step in range(1, 12)]
    assert model.batches[1:] == [n for n in live if n > 0][:len(model.batches) - 1]
    assert min(model.batches) < 3                            # the stopped row cost nothing more


def test_a_budget_cuts_every_running_row_and_says_so():
    from cadenza.symbolic.decoding import Budget

    model = _model(40)
    lines = []
    budget = Budget(tokens=5, report=lines.append)
    out = generate(model, torch.zeros(2, 3, dtype=torch.long), 50, seed=0, budget=budget)
    assert out.shape == (2, 8)
    assert lines == [f"sample {i} hit its budget of 5 ids after 5 ids and was cut there" for i in (1, 2)]
    lines.clear()
    tok = get_tokenizer("event")
    outs = continue_score(_model(tok.vocab_size), tok, _prompt_score(), seconds=30.0, num_samples=2, seed=0,
                          max_seconds=0.0, report=lines.append, progress=False)
    assert len(lines) == 2 and all("hit its budget of 0 s after 1 ids" in line for line in lines)
    prompt_notes = tok.decode(tok.encode(_prompt_score())).note_num()
    assert all(out.note_num() == prompt_notes for out in outs)   # cut at once, the prompt is kept whole


def _long_prompt(bars: int) -> symusic.Score:
    """``bars`` bars of the arpeggio, each bar's first pitch a step higher (so bars are told apart)."""
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(program=0)
    for bar in range(bars):
        for beat, pitch in enumerate([48 + bar, 64, 67, 72]):
            track.notes.append(symusic.Note((4 * bar + beat) * 480, 480, pitch, 80))
    score.tracks.append(track)
    return score


@pytest.mark.parametrize("scheme", ["event", "remi", "anticipatory"])
def test_a_long_prompt_keeps_the_whole_bars_at_its_end_that_fit(scheme):
    from cadenza.symbolic.sampling import fit_prompt

    tok = get_tokenizer(scheme)
    score = _long_prompt(40)
    lines = []
    cut, ids, start = fit_prompt(tok, score, max_ids=60, report=lines.append)
    assert len(ids) <= 60 and len(lines) == 1 and "kept its last" in lines[0]
    bars = cut.note_num() // 4
    assert bars >= 2 and cut.note_num() == 4 * bars and start == (40 - bars) * 4 * 480   # whole bars
    assert len(tok.prompt_ids(fit_prompt(tok, score, bars=bars + 1)[0])) > 60   # one more would not fit
    notes = sorted((n.time, n.pitch) for n in cut.tracks[0].notes)
    assert notes[0] == (0, 48 + 40 - bars)                            # the bar 40 - bars, now at 0
    assert cut.tempos[0].qpm == pytest.approx(120.0) and cut.time_signatures[0].numerator == 4
    assert fit_prompt(tok, score, bars=2)[0].note_num() == 8
    seconds_cut = fit_prompt(tok, score, seconds=3.0)[0]             # 1.5 bars: from an onset on
    assert seconds_cut.note_num() == 6 and seconds_cut.to("second").end() == pytest.approx(3.0)
    short = _prompt_score()
    assert fit_prompt(tok, short, max_ids=1000, report=lines.append)[0] is short and len(lines) == 1


def test_continue_score_cuts_a_long_prompt_and_continues_it():
    from collections import Counter

    tok = get_tokenizer("remi")
    torch.manual_seed(2)
    model = _FondOfBars(MusicTransformerConfig.debug(tok.vocab_size)).eval()
    lines = []
    prompt = _long_prompt(30)
    # the untrained model spreads its notes over every program; keeping to the prompt's one would
    # leave it only bars to write
    anywhere = SamplingConstraints(keep_prompt_programs=False)
    outs = continue_score(model, tok, prompt, bars=1, num_samples=2, seed=0, report=lines.append,
                          progress=False, constraints=anywhere)     # context 64: three quarters is 48 ids
    assert len(lines) == 1 and "kept its last" in lines[0] and len(tok.encode(prompt)) > 48
    given = sorted((n.time, n.pitch) for n in prompt.tracks[0].notes)
    for out in outs:
        # the whole prompt, then the continuation of its last bars after it (60 s = 30 bars)
        notes = sorted((n.time, n.pitch) for t in out.tracks for n in t.notes)
        new = list((Counter(notes) - Counter(given)).elements())
        assert not Counter(given) - Counter(notes) and new and out.tempos[0].qpm == pytest.approx(120.0)
        assert min(time for time, _ in new) >= given[-1][0]            # new music comes after the prompt


def test_cli_continue_takes_the_last_bars_of_a_prompt(tmp_path):
    from conftest import run_cli

    from cadenza.data.io import write_midi
    from cadenza.symbolic.checkpoint import save_checkpoint

    tok = get_tokenizer("event")
    save_checkpoint(tmp_path / "ckpt", _model(tok.vocab_size), tok, {"step": 0})
    prompt = write_midi(_long_prompt(12), tmp_path / "long.mid")
    result = run_cli("continue", prompt, "-o", tmp_path / "out.mid", "--checkpoint", tmp_path / "ckpt",
                     "--seconds", "1", "--prompt-bars", "2", "--seed", "1", "--device", "cpu")
    out = symusic.Score(str(tmp_path / "out.mid"))
    onsets = _onsets_seconds(out)
    assert onsets.min() == 0.0 and 24.0 <= onsets.max() < 24.0 + 1.0 + 1e-3    # all 12 bars, then 1 s more
    assert out.note_num() > 48 and f"({out.note_num() - 48} new)" in result.stdout


def test_a_prompt_whose_last_bar_holds_no_onset_is_not_cut_to_nothing():
    from cadenza.symbolic.sampling import fit_prompt

    tok = get_tokenizer("event")
    score = _long_prompt(4)
    score.tracks[0].notes.append(symusic.Note(4 * 4 * 480, 8 * 480, 60, 80))   # held through a fifth bar
    cut, ids, start = fit_prompt(tok, score, max_ids=8, report=lambda line: None)
    assert cut.note_num() >= 1 and len(ids) <= 8 and start > 0
