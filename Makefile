# Quick start: `make demo` and `make test`. Both bootstrap .venv from nothing and
# install the Debian packages they need (as root, with apt-get) when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests need; each issue adds its own (tshark, postgresql, ...).
DEB_PACKAGES ?= tshark postgresql iproute2 iptables iputils-ping iperf3 \
  libvirt-daemon-system libvirt-dev pkg-config qemu-system-x86 util-linux \
  linux-image-cloud-amd64 busybox-static chromium systemd
DEMO_ARGS ?=

.PHONY: demo test lint bench fuzz explore debs venv clean guest mutation

venv: $(STAMP)

$(STAMP): pyproject.toml | debs  # libvirt-python builds against libvirt-dev
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[sim,testbed,postgres,libvirt,geodata,dev]'  # every extra (docs/install.md)
	touch $@

debs:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: venv debs
	$(BIN)/pacao demo
	$(BIN)/pacao reproduce --quick $(DEMO_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The testbed's KVM guest: Debian's kernel + a busybox initramfs (no-op when up to date).
guest: venv debs
	$(BIN)/python -m pacao.testbed.vm.guest --out build/guest

# Every test, in two pytest runs (docs/testing.md, "How `make test` runs"): first the files
# tests/conftest.py marks parallel_safe (computation on in-memory inputs and tmp_path only)
# on two xdist workers, a file per worker (--dist loadfile: a module's fixtures built once),
# then all the others serially. Both always run; either failing fails the target.
test: venv debs lint guest
	status=0; \
	$(BIN)/pytest -m parallel_safe -n 2 --dist loadfile || status=$$?; \
	$(BIN)/pytest -m "not parallel_safe" || status=$$?; \
	exit $$status

bench: venv debs
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The hypothesis property tests again with a new random seed per run: CI draws the same
# examples every time (tests/conftest.py), so new ones are found here (docs/testing.md).
EXPLORE_RUNS ?= 10
PROPERTY_TESTS = $(shell grep -l '^from hypothesis' tests/test_*.py)
explore: venv
	@for i in $$(seq 1 $(EXPLORE_RUNS)); do \
	  seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	  echo "== run $$i of $(EXPLORE_RUNS): --hypothesis-seed=$$seed"; \
	  CI= $(BIN)/pytest -q --hypothesis-seed=$$seed $(PROPERTY_TESTS) || exit 1; \
	done

FUZZ_TIME ?= 600
fuzz: venv  # atheris on the LISP decoder/map-server path; corpus kept in .fuzz/
	$(BIN)/python tests/fuzz_lisp_decoder.py --seed .fuzz/corpus
	$(BIN)/python tests/fuzz_lisp_decoder.py -max_total_time=$(FUZZ_TIME) -artifact_prefix=.fuzz/ .fuzz/corpus

# mutmut over the core modules, each mutant against the fast tests that call the mutated
# function (settings in setup.cfg; what survives and why: docs/testing.md).
mutation: venv  # the selection and its sampling: setup.cfg [mutmut], docs/testing.md
	rm -rf mutants
	start=$$(date +%s); nice -n 10 $(BIN)/python tests/mutation_score.py --run 2 2>&1 \
	  | tr '\r' '\n' | grep -a 'mutations/second\|🎉 [0-9]\|[Ff]ailed' | tail -3; \
	  echo "mutmut run: $$(( $$(date +%s) - start )) s of wall time"
	$(BIN)/python tests/mutation_score.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .fuzz mutants
