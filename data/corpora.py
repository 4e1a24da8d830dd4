"""Built-in corpora from the music21 package, exported once to MIDI in a cache; user directories.

Every piece has a stable id (``bwv66.6``, ``essenFolksong/altdeu10#3``) and a split decided by
a hash of that id, or of its tune when it harmonizes a melody that another piece harmonizes too,
identical on every machine and run. Export is incremental: each source
file gets a small manifest once it is done, so an interrupted export resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import is_temporary, locked, remove_temporaries, temporaries, write_bytes_atomic, write_text_atomic
from .chorale_tunes import CHORALE_TUNES
from .errors import CorpusError
from .io import MIDI_SUFFIXES, SUPPORTED_SUFFIXES
from .workers import worker_pool

SPLITS = ("train", "valid", "test")

# corpus name -> (music21 corpus folders, suffixes, optional file-name prefix)
BUILTIN: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "bach-chorales": (("bach",), (".mxl", ".xml"), "bwv"),
    "palestrina": (("palestrina",), (".krn",), ""),
    "folk": (("essenFolksong", "ryansMammoth", "oneills1850"), (".abc",), ""),
    "classical": (
        ("beethoven", "haydn", "mozart", "schubert", "schumann_robert", "schumann_clara", "chopin",
         "handel", "cpebach", "corelli", "weber", "joplin", "verdi", "beach"),
        (".mxl", ".xml", ".krn", ".musicxml"),
        "",
    ),
}

DESCRIPTIONS = {
    "bach-chorales": "J.S. Bach's four-part chorales",
    "palestrina": "Palestrina's masses and motets (kern)",
    "folk": "Essen, Ryan's Mammoth and O'Neill's folk tunes (ABC, monophonic)",
    "classical": "quartets, sonatas and other works of Beethoven, Haydn, Mozart, Schubert, ...",
}


def split_of(piece_id: str) -> str:
    """train / valid / test (90/5/5) by a stable hash of the piece's tune when another piece
    shares it (Bach's harmonizations of one chorale melody stay in one split; see
    cadenza.data.tunes), else of the piece id."""
    key = CHORALE_TUNES.get(piece_id, piece_id)
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def cache_root() -> Path:
    """Where corpora are exported: $CADENZA_CACHE, else the platform's user cache dir."""
    env = os.environ.get("CADENZA_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cadenza"))


@dataclass(frozen=True)
class Piece:
    id: str
    path: Path

    @property
    def split(self) -> str:
        return split_of(self.id)


@dataclass
class ExportReport:
    exported: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped_sources: int = 0


def _music21_corpus_dir() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def _safe_name(piece_id: str) -> str:
    return piece_id.replace("#", "-").replace("/", "__")


def source_piece_id(source: str) -> str:
    """The piece id of a single-piece source file (tunes of a collection add ``#number``)."""
    rel = Path(source)
    return str(Path(*rel.parts[1:]).with_suffix("")) if len(rel.parts) > 2 else rel.stem


def _export_source(source: str, out_dir: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Parse one music21 corpus file (possibly an ABC collection) and write each piece as MIDI."""
    import warnings

    import music21

    from .io import m21_to_score

    warnings.simplefilter("ignore")
    root = _music21_corpus_dir()
    rel = Path(source)
    base_id = source_piece_id(source)
    ok: list[str] = []
    failed: list[tuple[str, str]] = []
    try:
        parsed = music21.converter.parse(str(root / rel), forceSource=True)
    except Exception as exc:  # a broken corpus file is skipped and reported
        return ok, [(base_id, f"parse error: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}")]
    if isinstance(parsed, music21.stream.Opus):
        items = []
        for number, sc in enumerate(parsed.scores):
            ref = sc.metadata.number if sc.metadata is not None and sc.metadata.number else number + 1
            items.append((f"{base_id}#{ref}", sc))
    else:
        items = [(base_id, parsed)]
    seen: set[str] = set()
    for piece_id, stream in items:
        while piece_id in seen:
            piece_id += "b"
        seen.add(piece_id)
        try:
            score = m21_to_score(stream, source)
            if score.note_num() == 0:
                raise ValueError("no notes")
            write_bytes_atomic(Path(out_dir) / (_safe_name(piece_id) + ".mid"), score.dumps_midi(),
                               stale=False)  # the export cleared the folder of temporaries under its lock
            ok.append(piece_id)
        except Exception as exc:
            failed.append((piece_id, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__))
    return ok, failed


class Corpus:
    """A named collection of pieces with deterministic splits."""

    name: str

    def pieces(self, split: str | None = None, limit: int | None = None) -> list[Piece]:
        raise NotImplementedError

    def ensure(self, limit: int | None = None, workers: int | None = None, progress: bool = True) -> ExportReport:
        return ExportReport()


class BuiltinCorpus(Corpus):
    """A corpus exported from the music21 package to MIDI files in the cache."""

    def __init__(self, name: str):
        if name not in BUILTIN:
            raise CorpusError(f"unknown corpus {name!r}; built-in corpora: {', '.join(BUILTIN)}")
        self.name = name
        self.dir = cache_root() / "corpora" / name

    def sources(self) -> list[str]:
        folders, suffixes, prefix = BUILTIN[self.name]
        root = _music21_corpus_dir()
        found = []
        for folder in folders:
            for path in (root / folder).rglob("*"):
                if path.suffix.lower() in suffixes and path.name.startswith(prefix):
                    found.append(str(path.relative_to(root)))
        return sorted(found)

    def _manifest(self, source: str) -> Path:
        return self.dir / "sources" / (source.replace("/", "__") + ".json")

    def is_cached(self) -> bool:
        return all(self._manifest(s).exists() for s in self.sources())

    def ensure(self, limit: int | None = None, workers: int | None = None, progress: bool = True,
               sources: list[str] | None = None) -> ExportReport:
        """Export the first ``limit`` source files (all by default), or the given ``sources``,
        that are not yet in the cache.

        A source counts as exported once its manifest exists, and its manifest is written after
        its MIDI files, each file under a temporary name renamed into place. The export holds a
        lock on the corpus directory (a second process waits, then finds the work done) and
        first removes the temporary files a killed export left behind, so an interrupted export
        resumes to exactly the files of an uninterrupted one.
        """
        sources = self.sources()[:limit] if sources is None else sources
        folders = (self.dir / "midi", self.dir / "sources")
        if all(self._manifest(s).exists() for s in sources) and not any(temporaries(f) for f in folders):
            return ExportReport(skipped_sources=len(sources))
        with locked(self.dir, "exporting to"):
            return self._export(sources, workers, progress)

    def _export(self, sources: list[str], workers: int | None, progress: bool) -> ExportReport:
        from tqdm import tqdm

        for folder in (self.dir / "midi", self.dir / "sources"):
            folder.mkdir(parents=True, exist_ok=True)
            remove_temporaries(folder)
        todo = [s for s in sources if not self._manifest(s).exists()]
        report = ExportReport(skipped_sources=len(sources) - len(todo))
        if not todo:
            return report
        workers = workers or min(len(todo), os.cpu_count() or 1)
        with tqdm(total=len(todo), desc=f"exporting {self.name}", unit="file", disable=not progress) as bar, \
                worker_pool(workers) as pool:  # the bar closes before an interruption is reported
            futures = {pool.submit(_export_source, s, str(self.dir / "midi")): s for s in todo}
            for future in as_completed(futures):
                source = futures[future]
                ok, failed = future.result()
                report.exported += len(ok)
                report.failed.extend(failed)
                write_text_atomic(self._manifest(source), json.dumps({"pieces": ok, "failed": failed}), stale=False)
                bar.update(1)
        return report

    def pieces(self, split: str | None = None, limit: int | None = None,
               sources: list[str] | None = None) -> list[Piece]:
        """Exported pieces (exporting what is missing first), optionally of one split."""
        sources = self.sources()[:limit] if sources is None else sources
        self.ensure(sources=sources)
        out = []
        for source in sources:
            manifest = json.loads(self._manifest(source).read_text())
            out.extend(Piece(pid, self.dir / "midi" / (_safe_name(pid) + ".mid")) for pid in manifest["pieces"])
        return [p for p in out if split is None or p.split == split]

    def failures(self) -> list[tuple[str, str]]:
        out = []
        for source in self.sources():
            m = self._manifest(source)
            if m.exists():
                out.extend(tuple(x) for x in json.loads(m.read_text())["failed"])
        return out


class DirectoryCorpus(Corpus):
    """Every MIDI, MusicXML, kern and ABC file under a directory, recursively (the first tune of an
    ABC collection); ids are paths relative to it without the suffix, which a score file keeps
    when another file shares its name."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root)
        self.name = self.dir.name
        if not self.dir.is_dir():
            raise CorpusError(f"{root}: not a directory and not a built-in corpus ({', '.join(BUILTIN)})")

    def pieces(self, split: str | None = None, limit: int | None = None) -> list[Piece]:
        files = sorted(p for p in self.dir.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file()
                       and not is_temporary(p))  # a killed writer's leftovers are no pieces
        if not files:
            raise CorpusError(f"{self.dir}: no MIDI files found, nor MusicXML, kern or ABC")
        stems = [p.relative_to(self.dir).with_suffix("") for p in files]
        shared = {stem for stem, count in Counter(stems).items() if count > 1}
        pieces = [Piece(str(stem if p.suffix.lower() in MIDI_SUFFIXES or stem not in shared else p.relative_to(self.dir)), p)
                  for p, stem in zip(files[:limit], stems)]
        return [p for p in pieces if split is None or p.split == split]


class UnionCorpus(Corpus):
    """Several built-in corpora as one (``bach-chorales+classical``); ids stay unique per corpus."""

    def __init__(self, names: list[str]):
        self.parts = [BuiltinCorpus(name) for name in names]
        self.name = "+".join(names)

    def ensure(self, limit: int | None = None, workers: int | None = None, progress: bool = True) -> ExportReport:
        report = ExportReport()
        for part in self.parts:
            sub = part.ensure(limit=limit, workers=workers, progress=progress)
            report.exported += sub.exported
            report.failed.extend(sub.failed)
            report.skipped_sources += sub.skipped_sources
        return report

    def pieces(self, split: str | None = None, limit: int | None = None) -> list[Piece]:
        return [p for part in self.parts for p in part.pieces(split=split, limit=limit)]


def open_corpus(name_or_dir: str | os.PathLike) -> Corpus:
    """A built-in corpus by name (several joined with ``+``), or a directory of MIDI files."""
    name = str(name_or_dir)
    if name in BUILTIN:
        return BuiltinCorpus(name)
    if "+" in name and all(part in BUILTIN for part in name.split("+")):
        return UnionCorpus(name.split("+"))
    return DirectoryCorpus(name_or_dir)
