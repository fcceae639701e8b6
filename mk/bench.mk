# Benchmarks (docs/12-performance.md). Never part of `make test`: nothing here is added to
# TEST_EXTRA, and no test asserts on time.
#
#   make bench          nginx vs the Python ceiling vs OpenFlare, interleaved rounds, memory
#                       check, cost per stage → benchmarks/results/latest.{md,png} and the table
#                       in docs/12-performance.md (about 9-10 minutes)
#   make bench-quick    the same harness, 1 round × 2 s, smoke run (< 60 s; docs untouched)
#   make bench-micro    cost per pipeline stage only (µs per request)
#   make bench-profile  sampling profile (py-spy) of the cache HIT path under load
#
# Tunable from the environment: BENCH_ROUNDS (3), BENCH_SECONDS (8), BENCH_WARMUP (1),
# BENCH_CONNECTIONS (64), BENCH_MEMORY_ENTRIES (10000, 0 skips), BENCH_MICRO (1),
# BENCH_ONLY (scenario keys), BENCH_KEEP (1 keeps the temp dir), BENCH_UPDATE_DOCS (1).

# This file is included before the Makefile's own first target: keep `make` alone meaning what
# the Makefile says (the goal is restored at the end of this file).
_bench_default_goal := $(.DEFAULT_GOAL)
BENCH_STAMP := $(VENV)/.openflare-bench-deps

.PHONY: bench bench-quick bench-micro bench-profile bench-deps

$(BENCH_STAMP): benchmarks/requirements.txt
	$(VENV)/bin/python -m pip install --quiet -r benchmarks/requirements.txt
	@touch $@

bench-deps: setup apt-deps
	@$(MAKE) --no-print-directory $(BENCH_STAMP)

bench: bench-deps
	$(PY) -m benchmarks.run

bench-quick: bench-deps
	$(PY) -m benchmarks.run --quick

bench-micro: setup
	$(PY) -m benchmarks.micro

bench-profile: bench-deps
	$(PY) -m benchmarks.profile_hit

.DEFAULT_GOAL := $(_bench_default_goal)
