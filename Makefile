# The two commands of the README's quick start: `make demo` and `make test`.
# Each creates the virtual environment it needs (.venv) on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data folder: MMGEN_DATA_DIR when set, else the shared folder beside the checkout.
export MMGEN_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: demo test lint bench gpu-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The [multivae], [digits], [svhn], [hf] and [webdataset] extras too, so that their tests
	# run rather than skip.
	$(BIN)/pip install --quiet -e '.[dev,multivae,digits,svhn,hf,webdataset]'
	touch $@

demo: $(BIN)/.installed  ## the study recipe recipes/demo.toml (train → generate → twins → truth → evaluate), into demo/
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh demo

test: $(BIN)/.installed  ## lint, then every test (the real-data ones read MMGEN_DATA_DIR)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

bench: $(BIN)/.installed  ## the measurements behind docs/performance.md
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_streaming.py
	$(BIN)/python benchmarks/bench_export.py

# The GPU path in one command, on a machine with a CUDA GPU: the CUDA tests (they skip, saying
# why, without one) and every benchmark on the GPU. Each benchmark prints its figures as JSON.
gpu-check: $(BIN)/.installed  ## CUDA tests + benchmarks with --device cuda
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else \
		'make gpu-check needs a CUDA GPU: torch ' + torch.__version__ + ' sees none')"
	$(BIN)/pytest -q -rs tests/test_gpu.py
	$(BIN)/python benchmarks/bench_train.py --device cuda
	$(BIN)/python benchmarks/bench_generate.py --device cuda
	$(BIN)/python benchmarks/bench_evaluate.py --device cuda

clean:
	rm -rf demo .pytest_cache .ruff_cache
