# clsflow: the two set-up-and-go commands are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export GST_PLUGIN_PATH := $(CURDIR)/target/debug$(if $(GST_PLUGIN_PATH),:$(GST_PLUGIN_PATH))

.PHONY: setup test test-alone lint unit pipeline-test install-test install demo bench probes eval eval-all clean-runs

setup:
	scripts/setup.sh

# Everything `make test` runs: setup, formatting, lints, every test of every crate, a real
# gst-launch pipeline, and an install into a temporary prefix used with the checkout hidden.
test: setup lint unit pipeline-test install-test

# the default members only: the measurement programs in tools/ build with `make probes`
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings

# Tests on the real categories in ../shared/data skip, each with a line, when that folder is
# absent; the skipped ones are listed at the end (cargo shows no output of tests that pass).
SKIPPED := target/tmp/skipped-tests.txt
unit:
	@mkdir -p target/tmp && rm -f $(SKIPPED)
	$(CARGO) test
	@if [ -s $(SKIPPED) ]; then echo "unit: $$(wc -l < $(SKIPPED)) tests skipped for want of real data:"; sort $(SKIPPED) | sed 's/^/  /'; \
	else echo "unit: no test skipped"; fi

# Every test as on a user's clone: the shared folder beside the checkout hidden (CI runs it).
test-alone: setup
	scripts/test-alone.sh

pipeline-test:
	scripts/pipeline-test.sh

install-test:
	scripts/install-test.sh

# Install the programs, the plugin, the libtorch libraries they need and the ImageNet weights.
PREFIX ?= /usr/local
install: setup
	scripts/install.sh $(PREFIX)

demo: setup
	scripts/demo.sh

bench: setup
	scripts/bench.sh

# The measurement programs (tools/): built and linted, not part of make test.
probes: setup
	$(CARGO) clippy -p clsflow-tools --all-targets -- -D warnings
	$(CARGO) build --release -p clsflow-tools

# Train and evaluate one MVTec-style category: make eval DATA=../shared/data/magnetic_tile
# TRAIN_ARGS adds training options, e.g. TRAIN_ARGS="--backbone efficientnet_lite0" OUT=runs/mt-lite0
DATA ?= ../shared/data/magnetic_tile
CONFIG ?= configs/cpu-fast.toml
OUT ?= runs/$(notdir $(abspath $(DATA)))
TRAIN_ARGS ?=
eval: setup
	$(CARGO) run --release -p clsflow-train -- train --config $(CONFIG) --data $(DATA) --out $(OUT) $(TRAIN_ARGS)
	$(CARGO) run --release -p clsflow-train -- eval --model $(OUT)/model.clsflow --data $(DATA) --out $(OUT)/report

# Train and evaluate the default (or CONFIG / TRAIN_ARGS) on every category at hand, two seeds
# each; the summary table goes into docs/experiments.md. scripts/get-elpv.sh adds two categories.
eval-all: setup
	scripts/eval-all.sh
