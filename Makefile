# ccproxy — build / run / test entry points.
#
#   make start   build (release) and run the proxy with conf/ccproxy.yaml
#   make test    run the whole test suite (unit, integration, doc tests)
#   make lint    rustfmt check + clippy with warnings denied
#   make bench   run the benchmarks
#   make fuzz    run every fuzz target for FUZZ_SECONDS (default 60) each (cargo-fuzz, nightly)
#   make deps    install the system packages the build needs (Debian/Ubuntu)

CARGO ?= cargo
# Where cargo puts build output; honours CARGO_TARGET_DIR when it is set.
TARGET ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
CONFIG_DIR ?= conf
# --locked only makes sense once Cargo.lock exists.
LOCKED := $(if $(wildcard Cargo.lock),--locked,)

BIN := $(TARGET)/release/ccproxy

# System packages needed to build (BoringSSL is compiled by boring-sys with
# cmake; bindgen needs libclang). Format: <command-to-probe>:<debian-package>.
DEP_CMDS := cmake:cmake pkg-config:pkg-config git:git perl:perl g++:g++ curl:curl
DEP_PKGS := libclang-dev ca-certificates

export DEBIAN_FRONTEND := noninteractive

# Fuzz targets (tests/fuzz/fuzz_targets/*.rs) and how long each runs.
FUZZ_TARGETS := sse_decoder translate_request translate_response translate_stream tool_schema config request_body
FUZZ_SECONDS ?= 60

.PHONY: all deps test-deps build start test lint fmt clippy bench fuzz clean help

all: build

help:
	@sed -n '2,9p' Makefile | sed 's/^# \{0,1\}//'

deps:
	@set -e; \
	missing=""; \
	for pair in $(DEP_CMDS); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v "$$cmd" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if command -v dpkg >/dev/null 2>&1; then \
	  for pkg in $(DEP_PKGS); do \
	    dpkg -s "$$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$pkg"; \
	  done; \
	else \
	  echo "deps: dpkg not found (not Debian/Ubuntu?); make sure libclang is installed yourself."; \
	fi; \
	if [ -z "$$missing" ]; then \
	  echo "deps: system packages OK"; \
	else \
	  echo "deps: missing:$$missing"; \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "deps: apt-get not available; install these packages with your package manager:$$missing" >&2; \
	    exit 1; \
	  fi; \
	  if [ "$$(id -u)" = 0 ]; then \
	    SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1; then \
	    SUDO="sudo"; \
	  else \
	    echo "deps: need root or sudo to install:$$missing" >&2; \
	    echo "      run as root: apt-get update && apt-get install -y --no-install-recommends$$missing" >&2; \
	    exit 1; \
	  fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$$missing; \
	fi; \
	if ! command -v $(CARGO) >/dev/null 2>&1; then \
	  echo "deps: '$(CARGO)' not found. Install Rust via rustup:" >&2; \
	  echo "      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \$$HOME/.cargo/env" >&2; \
	  exit 1; \
	fi

build: deps
	$(CARGO) build --release $(LOCKED)

start: build
	$(BIN) --config $(CONFIG_DIR) start

# Headless Chromium for the web viewer's test; a machine where it cannot be installed runs
# the suite anyway (that test prints why it skips).
# Programs the tests drive, as <command>:<debian-package>: Chromium (web viewer, TLS
# fingerprints) and npm (Claude Code, installed by the jail test on first use).
TEST_CMDS := chromium:chromium npm:npm

test-deps: deps
	@missing=""; \
	for pair in $(TEST_CMDS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO="none"; fi; \
	  if [ "$$SUDO" != none ]; then \
	    echo "test-deps: installing$$missing"; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1 || \
	    { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 && \
	      $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1; } || \
	    echo "test-deps: could not install$$missing; the tests that need them will skip"; \
	  fi; \
	fi

test: test-deps
	$(CARGO) test $(LOCKED)

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --all-targets $(LOCKED) -- -D warnings

bench: deps
	$(CARGO) bench $(LOCKED)

fuzz: deps
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p tests/fuzz/corpus/$$t; \
	  echo "==> fuzz $$t for $(FUZZ_SECONDS) s"; \
	  $(CARGO) +nightly fuzz run --fuzz-dir tests/fuzz $$t tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1; \
	done

clean:
	$(CARGO) clean
