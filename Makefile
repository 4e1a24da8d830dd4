# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cadenza-installed
TORCH  := torch==2.13.0

.PHONY: setup sysdeps sysdeps-test demo test bench clean

setup: $(STAMP) sysdeps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

sysdeps:
	@sh .ci/sysdeps.sh fluidsynth

sysdeps-test:
	@sh .ci/sysdeps.sh fluidsynth chromium

demo: setup
	$(BIN)/cadenza demo

test: $(STAMP) sysdeps-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

bench: setup
	@sh .ci/sysdeps.sh soundfonts
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m pip install -q --no-deps basic-pitch
	$(BIN)/python -m pip install -q librosa
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
