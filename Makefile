# jndqa: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
# Debian packages the project needs (installed when run as root with apt).
APT_PACKAGES := libsndfile1 ffmpeg chromium espeak-ng fluidsynth timgm6mb-soundfont planetblupi-music-midi festival festvox-us-slt-hts festvox-kallpc16k alsa-utils fb-music-high swh-plugins swh-lv2

.PHONY: demo test lint bench setup sysdeps venv clean

demo: setup
	$(BIN)/jndqa demo

# Two pytest workers (a test file stays on one worker), torch on one thread each (tests/conftest.py);
# TEST_WORKERS=0 make test runs in one process, where JNDQA_TEST_THREADS=N sets torch's threads.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) --durations=15

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/bench_metric.py

# The official DPAM release (weights, sample audio, JND lists) into the jndqa cache.
setup: sysdeps venv
	$(BIN)/jndqa setup

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing system packages:$$missing (install them with apt as root)"; fi; \
	fi

venv: $(VENV)/.installed

# torch first, pinned to the CPU wheel; then the project with its test extras and the peer metrics.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,peers,plugins]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
