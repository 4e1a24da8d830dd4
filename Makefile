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
	@sh .ci/sysdeps.sh fluidsynth chromium heldout-soundfont

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

# Retrain and ship the Music Transformers as docs/models.md records (about seven hours on
# one core: three time-boxed runs of two hours, then classical-event; OMP_NUM_THREADS=1 keeps a loaded CPU from thrashing). The transcriber's commands are
# in docs/models.md too; they need the training SoundFonts (`make bench` installs them).
RUNS ?= runs
# $(call train-and-ship,NAME,TRAIN ARGUMENTS): train $(RUNS)/NAME and ship it, recording the command
define train-and-ship
	OMP_NUM_THREADS=1 $(BIN)/cadenza train $(2) --out $(RUNS)/$(1) --seed 0 --quiet
	$(BIN)/cadenza ship-model $(RUNS)/$(1) --name $(1) --command "cadenza train $(2) --out runs/$(1) --seed 0"
endef
RECIPE := --corpus bach-chorales --size cpu --seq-len 512 --steps 100000 --max-minutes 120 --checkpoint-every 500
models: setup
	$(call train-and-ship,bach-event,$(RECIPE) --scheme event --batch-size 8)
	$(call train-and-ship,bach-remi,$(RECIPE) --scheme remi --batch-size 8)
	$(call train-and-ship,bach-anticipatory,$(RECIPE) --scheme anticipatory --batch-size 4)
	$(call train-and-ship,classical-event,--init $(RUNS)/bach-event --corpus bach-chorales+classical --scheme event --steps 100000 --lr 5e-4 --warmup 50 --max-minutes 90 --checkpoint-every 250)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
