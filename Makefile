# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cadenza-installed
TORCH  := torch==2.13.0

.PHONY: setup sysdeps sysdeps-test demo test bench models clean

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

# Retrain and ship the Music Transformers exactly as docs/models.md records (about three hours on
# one core; OMP_NUM_THREADS=1 keeps a loaded CPU from thrashing). The transcriber's commands are
# in docs/models.md too; they need the training SoundFonts (`make bench` installs them).
RUNS ?= runs
# $(call train-and-ship,NAME,TRAIN ARGUMENTS): train $(RUNS)/NAME and ship it, recording the command
define train-and-ship
	OMP_NUM_THREADS=1 $(BIN)/cadenza train $(2) --out $(RUNS)/$(1) --seed 0 --quiet
	$(BIN)/cadenza ship-model $(RUNS)/$(1) --name $(1) --command "cadenza train $(2) --out runs/$(1) --seed 0"
endef
ANTICIPATORY := train --corpus bach-chorales --scheme anticipatory --size cpu --batch-size 4
ANTICIPATORY_1 := $(ANTICIPATORY) --steps 2400 --checkpoint-every 300
ANTICIPATORY_2 := $(ANTICIPATORY) --steps 4400 --checkpoint-every 300 --resume
models: setup
	$(call train-and-ship,classical-event,--corpus bach-chorales+classical --scheme event --size cpu --steps 6000)
	$(call train-and-ship,bach-event,--corpus bach-chorales --scheme event --size cpu --steps 1800)
	$(call train-and-ship,bach-remi,--corpus bach-chorales --scheme remi --size cpu --steps 1800)
	OMP_NUM_THREADS=1 $(BIN)/cadenza $(ANTICIPATORY_1) --out $(RUNS)/bach-anticipatory --seed 0 --quiet
	OMP_NUM_THREADS=1 $(BIN)/cadenza $(ANTICIPATORY_2) --out $(RUNS)/bach-anticipatory --seed 0 --quiet
	$(BIN)/cadenza ship-model $(RUNS)/bach-anticipatory --name bach-anticipatory --command "cadenza $(ANTICIPATORY_1) --out runs/bach-anticipatory --seed 0 && cadenza $(ANTICIPATORY_2) --out runs/bach-anticipatory --seed 0"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
