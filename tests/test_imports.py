"""What importing cadenza costs: the command line starts without torch or symusic, and the
folder tokenizers/ does not hide Hugging Face's ``tokenizers`` package from miditok."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import REPO

HEAVY = ("torch", "symusic", "music21", "miditok", "matplotlib", "verovio", "soundfile")


def _python(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_help_imports_no_heavy_library():
    code = ("import sys, contextlib, io\n"
            "from cadenza.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(['--help'])\n"
            "    except SystemExit:\n        pass\n"
            "import json; print(json.dumps({'help': out.getvalue(), 'modules': sorted(sys.modules)}))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "continue" in report["help"] and "transcribe" in report["help"]
    loaded = {name.split(".")[0] for name in report["modules"]}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_is_instant():
    """The bound holds on a 2-core machine with other work running: best of three under a second."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cadenza.cli.main", "--help"], capture_output=True,
                              text=True, timeout=60)
        times.append(time.perf_counter() - started)
        assert proc.returncode == 0 and "COMMAND" in proc.stdout
    assert min(times) < 1.0, times


def test_command_table_is_the_command_list():
    from cadenza.cli.main import COMMANDS, build_parser

    parser = build_parser()
    registered = parser._subparsers._group_actions[0].choices
    assert sorted(registered) == sorted(name for _, names in COMMANDS for name in names)
    assert {"continue", "infill", "render", "info", "tokenize", "train", "transcribe", "demo"} <= set(registered)


def test_miditok_and_transformers_import_from_the_repository_root():
    """With the repository root as working directory, ``tokenizers`` on sys.path is cadenza's folder;
    ``repository_off_the_path`` is the one place that works around it."""
    code = ("import importlib.util, tokenizers\n"
            "assert tokenizers.__file__.startswith(%r), tokenizers.__file__\n"
            "from cadenza.tokenizers.remi import repository_off_the_path\n"
            "with repository_off_the_path():\n"
            "    import miditok\n"
            "    has_transformers = importlib.util.find_spec('transformers') is not None\n"
            "    if has_transformers:\n"
            "        import transformers\n"
            "print(miditok.REMI.__name__, has_transformers)") % str(REPO)
    proc = _python(code, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "REMI"
