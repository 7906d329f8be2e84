# The front door: each target creates .venv when missing and installs the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What each target needs, installed once (a stamp file each): training needs the package, the plots and the
# notebook's kernel;
# the suite and the benchmark add their own extras.
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install train train-mlp2 train-robust evaluate test test-fast notebook bench reproduce lint clean

$(STAMP): setup.cfg setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[plot,notebook]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[plot,notebook,test,parity,keras,tensorboard,web,export]'
	touch $(TEST_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[plot,parity,export,peers]'
	touch $(BENCH_STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/python scripts/train.py --out ckpt.pt

# Keras' classic mnist_mlp example: two hidden layers of 512, dropout 0.2, RMSprop, 20 epochs.
train-mlp2: $(STAMP)
	mkdir -p runs/mlp2
	$(BIN)/python scripts/train.py --hidden 512 512 --dropout 0.2 --out runs/mlp2/ckpt.pt

# A model for your own digits: the same MLP trained on digits distorted afresh every epoch (turned, scaled,
# sheared, shifted, elastically warped, thicker or thinner pen) with a cosine learning rate: docs/robust.md.
train-robust: $(STAMP)
	$(BIN)/python scripts/train.py --distort affine elastic pen --lr-schedule cosine --epochs 60 --out robust.pt

evaluate: $(STAMP)
	$(BIN)/python scripts/evaluate.py --checkpoint ckpt.pt

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# Every module on synthetic data, in this process: no real-data epochs, torchrun, torch.compile, Keras,
# script subprocesses or fuzzing (see setup.cfg's markers).
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not (slow or torchrun or compile or keras or scripts or fuzz or notebook)"

# docs/walkthrough.ipynb run top to bottom, its outputs stored in it (3 epochs; WALKTHROUGH_EPOCHS=20 for all).
notebook: $(TEST_STAMP)
	cd docs && ../$(BIN)/jupyter execute --inplace walkthrough.ipynb

bench: $(BENCH_STAMP)
	$(BIN)/python scripts/benchmark.py --out bench.json

reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py --seeds 5 --out-dir runs/reproduce

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check --select E,F,W --line-length 120 torch_mnist scripts tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache ckpt.pt ckpt.json ckpt.curves.png ckpt.confusion.png bench.json runs
	rm -f robust.pt robust.json robust.curves.png robust.confusion.png
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
