"""REMI tokenizer: cadenza's face over miditok's REMI (REMI+ with programs).

miditok does the work; this module only configures it and renumbers its ids so that the
scheme's own ids come first and PAD, BOS, EOS follow them, like every cadenza tokenizer.
miditok is given one special token (its PAD, id 0); cadenza's id = miditok's id - 1.

Defaults: beat resolution {(0, 4): 8, (4, 12): 4}, 32 velocities, tempo tokens at 1 qpm
resolution (miditok's 32 bins over 40-250 qpm turn 120 qpm into 121.3, which moves the onsets of
a chorale by about 1 %), time signature tokens, programs in one stream (so a multi-track piece
survives a round trip with its instruments; tracks with the same program are merged, as miditok does), no rests.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import symusic

from cadenza.data.errors import MissingDependencyError, TokenizerError

from .base import Tokenizer

DEFAULT_BEAT_RES = {"0_4": 8, "4_12": 4}
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _inside_repository(path: str) -> bool:
    """A path within cadenza's source tree, but not an installed package (a virtualenv there)."""
    resolved = Path(path or os.getcwd()).resolve()
    return resolved.is_relative_to(_REPO_ROOT) and "site-packages" not in resolved.parts


@contextlib.contextmanager
def repository_off_the_path():
    """Hide cadenza's source folders from the import path while Hugging Face code loads.

    When Python runs from the repository root, the folder ``tokenizers/`` (cadenza.tokenizers'
    source), and ``benchmarks/tokenizers.py`` run as a script, shadow the Hugging Face
    ``tokenizers`` package that miditok and transformers import. A shadowing module already
    imported is forgotten too.
    """
    shadow = sys.modules.get("tokenizers")
    if shadow is not None and _inside_repository(getattr(shadow, "__file__", None) or "/"):
        del sys.modules["tokenizers"]
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if not _inside_repository(p)]
    try:
        yield
    finally:
        sys.path[:] = saved


def import_miditok():
    """Import miditok even when Python runs from the repository root (see repository_off_the_path)."""
    if "miditok" in sys.modules:
        return sys.modules["miditok"]
    with repository_off_the_path():
        try:
            return importlib.import_module("miditok")
        except ImportError as exc:
            raise MissingDependencyError(f"the REMI tokenizer needs miditok ({exc}); "
                                         "pip install 'miditok>=3.1'") from None


def _beat_res_for_miditok(beat_res: dict) -> dict[tuple[int, int], int]:
    out = {}
    for key, resolution in beat_res.items():
        if isinstance(key, str):
            start, stop = (int(v) for v in key.split("_"))
        else:
            start, stop = (int(v) for v in key)
        out[(start, stop)] = int(resolution)
    return out


class REMITokenizer(Tokenizer):
    """miditok REMI with its config exposed.

    Config: ``beat_res`` ({"0_4": 8, "4_12": 4}: positions per beat for durations in beats
    0-4 and 4-12; tuple keys accepted), ``num_velocities`` (32), ``use_tempos`` (True),
    ``num_tempos`` (one bin per quarter note per minute over ``tempo_range``, 211 by default,
    so the integer tempi of real files keep their value and a round trip keeps times in seconds),
    ``tempo_range`` ((40, 250)), ``use_time_signatures`` (True),
    ``use_programs`` (True: Program tokens in one stream; False: all tracks merged into one
    piano track before encoding), ``use_rests`` (False), ``pitch_range`` ((21, 109), half-open
    as in miditok), and ``miditok`` (a dict of further ``miditok.TokenizerConfig`` arguments).
    """

    name = "remi"

    def __init__(self, beat_res: dict | None = None, num_velocities: int = 32, use_tempos: bool = True,
                 num_tempos: int | None = None, tempo_range=(40, 250), use_time_signatures: bool = True,
                 use_programs: bool = True, use_rests: bool = False, pitch_range=(21, 109),
                 miditok: dict | None = None, **extra: Any):
        if extra:
            raise TokenizerError(f"unknown REMI tokenizer option(s): {', '.join(sorted(extra))}")
        beat_res = {f"{a}_{b}": r for (a, b), r in _beat_res_for_miditok(beat_res or DEFAULT_BEAT_RES).items()}
        if num_tempos is None:  # one bin per qpm: the ends of the range and every integer tempo between
            num_tempos = int(tempo_range[1]) - int(tempo_range[0]) + 1
        super().__init__(beat_res=beat_res, num_velocities=int(num_velocities), use_tempos=bool(use_tempos),
                         num_tempos=int(num_tempos), tempo_range=[int(v) for v in tempo_range],
                         use_time_signatures=bool(use_time_signatures), use_programs=bool(use_programs),
                         use_rests=bool(use_rests), pitch_range=[int(v) for v in pitch_range],
                         miditok=dict(miditok or {}))
        lib = import_miditok()
        try:
            config = lib.TokenizerConfig(
                pitch_range=tuple(self.config["pitch_range"]),
                beat_res=_beat_res_for_miditok(beat_res),
                num_velocities=self.config["num_velocities"],
                special_tokens=["PAD"],
                use_tempos=self.config["use_tempos"],
                num_tempos=self.config["num_tempos"],
                tempo_range=tuple(self.config["tempo_range"]),
                use_time_signatures=self.config["use_time_signatures"],
                use_programs=self.config["use_programs"],
                one_token_stream_for_programs=True,
                use_rests=self.config["use_rests"],
                **self.config["miditok"],
            )
            self.miditok = lib.REMI(config)
        except (TypeError, ValueError, AssertionError) as exc:
            raise TokenizerError(f"invalid REMI configuration: {exc}") from None
        self._names = [None] * len(self.miditok)
        for token, index in self.miditok.vocab.items():
            self._names[index] = token
        if self._names[0] != "PAD_None":
            raise TokenizerError("miditok did not put PAD at id 0; this miditok version is not supported")

    @property
    def base_vocab_size(self) -> int:
        return len(self.miditok) - 1

    def _base_token_to_str(self, token_id: int) -> str:
        return self._names[token_id + 1]

    def ranges(self) -> list[tuple[str, int, int]]:
        """Runs of consecutive ids of one token type (Bar, Pitch, Velocity, Duration, Position, ...)."""
        out: list[tuple[str, int, int]] = []
        for index, token in enumerate(self._names[1:]):
            kind = token.split("_")[0]
            if out and out[-1][0] == kind and out[-1][2] == index:
                out[-1] = (kind, out[-1][1], index + 1)
            else:
                out.append((kind, index, index + 1))
        return out

    def describe_notes(self) -> str:
        return ("  built on miditok REMI; ids are miditok's minus one (its PAD moves after the scheme);\n"
                "  tracks of one program are merged; drums kept as program -1 tokens when programs are on;\n"
                "  decode skips tokens out of REMI's grammar, as miditok does")

    def _prepare(self, score: symusic.Score) -> symusic.Score:
        if score.note_num() == 0:
            raise TokenizerError("no notes to encode (the score is empty)")
        if self.config["use_programs"] or len(score.tracks) == 1:
            return score
        merged = score.copy()
        track = symusic.Track(name="merged", program=0, is_drum=False)
        for tr in score.tracks:
            track.notes.extend(tr.notes)
        merged.tracks = [track]
        merged.tracks[0].sort()
        return merged

    def encode(self, score: symusic.Score | str | os.PathLike) -> np.ndarray:
        score = self._prepare(self.as_score(score))
        sequence = self.miditok.encode(score)
        if isinstance(sequence, list):
            sequence = sequence[0]
        ids = np.asarray(sequence.ids, dtype=np.int64) - 1
        if ids.size == 0:
            raise TokenizerError("no notes to encode within REMI's pitch range and programs")
        return ids

    def decode(self, ids) -> symusic.Score:
        miditok_ids = (self.check_ids(ids) + 1).tolist()
        if not miditok_ids:
            return symusic.Score(self.miditok.time_division)
        if self.config["use_programs"]:
            return self.miditok.decode(miditok_ids)
        return self.miditok.decode([miditok_ids])
