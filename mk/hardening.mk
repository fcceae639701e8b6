# Hardening (docs/05-threat-model.md). Neither target is part of `make test`: nothing here is
# added to TEST_EXTRA.
#
#   make fuzz   the request-head fuzz target (proxy/tests/fuzz/fuzz_request_head.py) for
#               FUZZ_SECONDS (60): coverage-guided with atheris when it installs, otherwise
#               hypothesis-driven; its seeds also run in the unit suite
#   make soak   scripts/soak.py: SOAK_SECONDS (600) of mixed traffic on loopback (hits, misses,
#               WAF blocks, 429s, purges, reloads), then the cache memory soak; reports requests,
#               errors, RSS and open fds; fails on RSS growth >= 10 % after warm-up, fd growth,
#               errors, or cache bytes / RSS beyond their bounds. Also SOAK_WORKERS (8),
#               SOAK_CACHE_MB (64), SOAK_CACHE_FILL_MULTIPLE (4), SOAK_OUT, SOAK_PHASES (1,2;
#               `make soak SOAK_PHASES=2 SOAK_CACHE_MB=32` runs the cache memory phase alone).

# Included before the Makefile's first target: keep `make` alone meaning what the Makefile says.
_hardening_default_goal := $(.DEFAULT_GOAL)
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 600

.PHONY: fuzz soak

fuzz: setup
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install --quiet 'atheris==3.0.0' \
		|| echo "fuzz: atheris does not install here; the hypothesis engine runs instead"
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) proxy/tests/fuzz/fuzz_request_head.py

soak: setup apt-deps
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) scripts/soak.py

.DEFAULT_GOAL := $(_hardening_default_goal)
