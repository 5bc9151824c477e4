# EdgeGuard: the two commands a fresh Debian / Raspberry Pi OS machine needs are
#   make run    start the appliance with embedded defaults (inbox on tmpfs, ./outbox)
#   make test   the whole test suite (installs what it needs: venvs, apt packages as root, models)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TFLITE_VENV ?= .venv-tflite
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TFLITE_STAMP := $(TFLITE_VENV)/.installed
MODELS_STAMP := models/.fetched
APT_STAMP := .cache/apt.done
PYTEST_ARGS ?=
# What runs again under tflite_runtime 2.14 (numpy 1.26, OpenCV 4.11) and the MediaPipe oracle.
TFLITE_TESTS := tests/test_runtime.py tests/test_oracle.py tests/test_cli.py tests/test_codec.py \
	tests/test_redact.py
# Debian packages: python3-venv (venv on Debian), systemd-container + debootstrap (system
# tests in a booted systemd), ca-certificates (downloads inside the test container),
# chromium (the web page's browser tests, driven by Playwright; never `playwright install`).
APT_PACKAGES := python3-venv systemd-container debootstrap ca-certificates chromium shellcheck

.PHONY: run test test-fast test-system test-arm test-tflite-env camera-test-env lint bench bench-quick peers soak fuzz models apt clean help

help:
	@echo "make run | test | test-fast | test-system | lint | bench | bench-quick | peers | soak | fuzz | models | clean"

# --- set-up ---------------------------------------------------------------------------
apt: $(APT_STAMP)
$(APT_STAMP):
	@mkdir -p .cache
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root (or no apt): skipping apt packages ($(APT_PACKAGES))"; fi
	@touch $@

$(STAMP): pyproject.toml | $(APT_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[litert,test,web,video]'
	@touch $@

models: $(MODELS_STAMP)
$(MODELS_STAMP): $(STAMP) models/manifest.toml
	$(VENV)/bin/edgeguard models fetch
	@touch $@

# tflite-runtime 2.14 is frozen (Python <= 3.11, numpy < 2): its own venv, which also holds
# the MediaPipe oracle (mediapipe 0.10.21 pins numpy < 2 too).
test-tflite-env: $(TFLITE_STAMP)
$(TFLITE_STAMP): pyproject.toml | $(APT_STAMP)
	@if $(PYTHON) -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then \
	  $(PYTHON) -m venv $(TFLITE_VENV) && \
	  $(TFLITE_VENV)/bin/python -m pip install -q --upgrade pip && \
	  $(TFLITE_VENV)/bin/python -m pip install -q -e '.[tflite,test,oracle]' && touch $@; \
	else echo "Python >= 3.12: tflite-runtime 2.14 has no wheels; its tests are skipped"; fi

# The real picamera2 on a build machine (Debian's python3-libcamera + a pykms stub in tests).
CAMERA_STAMP := $(VENV)/.camera-test
camera-test-env: $(CAMERA_STAMP)
$(CAMERA_STAMP): $(STAMP) tools/camera-test-env.sh
	bash tools/camera-test-env.sh $(VENV)
	@touch $@

# --- the two commands -----------------------------------------------------------------
run: $(MODELS_STAMP)
	$(VENV)/bin/edgeguard run

test: $(MODELS_STAMP) test-tflite-env camera-test-env
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
	@if [ -f $(TFLITE_STAMP) ]; then \
	  EDGEGUARD_REQUIRE_ORACLE=1 $(TFLITE_VENV)/bin/python -m pytest -q --runtime=tflite \
	    -m 'not system' -p no:cacheprovider $(PYTEST_ARGS) $(TFLITE_TESTS); \
	elif [ "$$EDGEGUARD_REQUIRE_SYSTEM" = 1 ]; then echo "tflite-runtime environment missing"; exit 1; fi

test-fast: $(MODELS_STAMP)
	$(VENV)/bin/python -m pytest -q -m 'not system' $(PYTEST_ARGS)

test-system: $(MODELS_STAMP)
	$(VENV)/bin/python -m pytest -q -m system $(PYTEST_ARGS)

# arm64 Debian userland under qemu-user (bookworm: Python 3.11 with both runtimes; trixie:
# 3.13): the model, pipeline and daemon tests with the real aarch64 wheels (root).
test-arm:
	bash tests/arm/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check edgeguard tests benchmarks tools fuzz
	$(VENV)/bin/mypy edgeguard

# --- measuring --------------------------------------------------------------------------
peers:
	bash benchmarks/peers.sh

bench: $(MODELS_STAMP)
	$(VENV)/bin/edgeguard bench --out bench-out

bench-quick: $(MODELS_STAMP)
	$(VENV)/bin/edgeguard bench --quick --out bench-out/quick

# --- robustness runs (minutes; not part of `make test`) ---------------------------------
SOAK_ARGS ?= --seconds 240
FUZZ_SECONDS ?= 300

soak: $(MODELS_STAMP)
	@mkdir -p .cache
	$(VENV)/bin/python benchmarks/soak.py $(SOAK_ARGS) --json .cache/soak.json

fuzz: $(STAMP)
	@mkdir -p .cache/fuzz-corpus .cache/fuzz-artifacts
	@if ! $(VENV)/bin/python -c 'import atheris' 2>/dev/null \
	    && ! $(VENV)/bin/pip install -q --only-binary=:all: atheris; then \
	  echo "no atheris wheel for this Python and platform: fuzzing skipped"; \
	else $(VENV)/bin/python fuzz/fuzz_decode.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	  -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix=.cache/fuzz-artifacts/ \
	  .cache/fuzz-corpus; fi

clean:
	rm -rf $(VENV) $(TFLITE_VENV) .cache models/*.tflite $(MODELS_STAMP) outbox
