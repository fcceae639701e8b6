# OpenFlare — the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
E2E_TARGET ?= local

.DEFAULT_GOAL := help
# Feature areas add their own targets in mk/*.mk and append to TEST_EXTRA the checks that
# `make test` must also run (e.g. helm lint, chart tests, promtool).
TEST_EXTRA :=
-include mk/*.mk

.PHONY: help setup apt-deps run test lint typecheck unit e2e test-e2e smoke check-config clean

help:
	@echo "make run         origin + proxy on 127.0.0.1 (8000, 8080, admin 8081), foreground"
	@echo "make test        install everything, then lint, type check, unit and E2E tests"
	@echo "make lint | typecheck | unit | e2e | smoke | check-config | clean"
	@echo "make bench       nginx vs the Python ceiling vs OpenFlare (docs/12-performance.md)"
	@echo "make soak | fuzz | test-packaging | images | up | kind-e2e: see README.md"

setup:
	@bash scripts/bootstrap.sh

apt-deps:
	@bash scripts/apt-deps.sh

run: setup
	@bash scripts/run-local.sh

test: setup apt-deps lint typecheck unit e2e $(TEST_EXTRA)

lint: setup
	$(VENV)/bin/ruff check proxy testsite e2e benchmarks scripts
	$(VENV)/bin/ruff format --check proxy testsite e2e benchmarks scripts

typecheck: setup
	cd proxy && ../$(VENV)/bin/mypy

unit: setup
	cd proxy && ../$(PY) -m pytest -q tests
	cd testsite && ../$(PY) -m pytest -q tests

e2e: setup apt-deps
	cd e2e && ../$(PY) -m pytest -q --target $(E2E_TARGET)

test-e2e: e2e

smoke:
	@bash scripts/smoke.sh

check-config: setup
	$(PY) -m openflare check-config configs/proxy.dev.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache proxy/.mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
