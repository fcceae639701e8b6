# The built-in admin dashboard (docs/13-admin-dashboard.md). Its tests are part of `make e2e`
# (e2e/test_dashboard.py: Debian's chromium, headless, driven by Playwright; no browser is
# ever downloaded). These targets run them alone.
#
#   make dashboard-test        the browser tests only, against a local stack; screenshots of
#                              every page land in pytest's tmp dir (printed)
#   make dashboard-screenshot  rewrite docs/images/admin-dashboard.png (the README's picture)
#                              from a live overview under mixed traffic (about a minute)

# Included before the Makefile's own first target: keep `make` alone meaning what the Makefile
# says (the goal is restored at the end of this file).
_dashboard_default_goal := $(.DEFAULT_GOAL)

.PHONY: dashboard-test dashboard-screenshot

dashboard-test: setup apt-deps
	cd e2e && ../$(PY) -m pytest -q -rA test_dashboard.py --target local

dashboard-screenshot: setup apt-deps
	cd e2e && OPENFLARE_UPDATE_DASHBOARD_SCREENSHOT=1 ../$(PY) -m pytest -q \
		test_dashboard.py -k overview --target local

.DEFAULT_GOAL := $(_dashboard_default_goal)
