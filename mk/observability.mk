# Observability checks (issue #6): alert rules, their unit tests, a real scrape through
# promtool, dashboards in sync with their generator, lint of the generator.
# `make test` runs all of them through TEST_EXTRA; promtool comes from the Debian package
# `prometheus` (scripts/apt-packages.txt).

# an included file must not change the default goal (restored at the end)
_observability_default_goal := $(.DEFAULT_GOAL)

PROMTOOL ?= promtool
ALERT_RULES := dashboards/alerts/openflare-alerts.yaml
ALERT_TESTS := dashboards/alerts/openflare-alerts.test.yaml

.PHONY: observability-check promtool-check promtool-test promtool-metrics dashboards \
	dashboards-check lint-dashboards

observability-check: promtool-check promtool-test promtool-metrics dashboards-check lint-dashboards

promtool-check: apt-deps
	$(PROMTOOL) check rules $(ALERT_RULES)

promtool-test: apt-deps
	$(PROMTOOL) test rules $(ALERT_TESTS)

# a real scrape: origin + proxy started, traffic of every kind, `promtool check metrics`
promtool-metrics: setup apt-deps
	cd e2e && ../$(PY) prometheus_support.py check-metrics

dashboards: setup
	$(PY) dashboards/generate.py

dashboards-check: setup
	$(PY) dashboards/generate.py --check

lint-dashboards: setup
	$(VENV)/bin/ruff check dashboards
	$(VENV)/bin/ruff format --check dashboards

TEST_EXTRA += promtool-check promtool-test promtool-metrics dashboards-check lint-dashboards

.DEFAULT_GOAL := $(_observability_default_goal)
