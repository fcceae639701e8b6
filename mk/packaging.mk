# Kubernetes and Docker packaging (docs/11-kubernetes.md).
#
#   make test-packaging  every packaging check below that needs no container engine; part of
#                        `make test` (TEST_EXTRA). Tools come from scripts/install-tools.sh.
#   make helm-lint       helm lint --strict: default values, ci/all-on-values.yaml, ci/kind-values.yaml
#   make chart-scan      checkov on the rendered manifests (skips explained in charts/tests/checkov.yaml)
#   make chart-test      pytest over `helm template` output (charts/tests): probes, security,
#                        config folders, RBAC, PDB, ServiceMonitor, schema, kubernetes-validate
#   make compose-check   docker-compose.yml against the compose-spec schema (+ `docker-compose
#                        config` when Debian's docker-compose is installed)
#   make workflow-lint   actionlint and the GitHub workflow schema on .github/workflows
#   make dockerfile-lint hadolint on the Dockerfiles
#   make image-test      build both images FROM a debootstrap base in a private docker engine and
#                        run them hardened (scripts/docker-image-test.sh; root; about 8 min from
#                        a cold cache on these machines); part of `make test` (TEST_EXTRA)
#   make images          build both images with the machine's docker (BASE_IMAGE, IMAGE_TAG)
#   make up | down | logs | compose-e2e     the docker-compose stack, and the E2E suite against it
#   make kind-e2e        a kind cluster: images loaded, chart installed, E2E suite (--target kind),
#                        live ConfigMap reload without restarts, helm test (needs kind, kubectl)

# Included before the Makefile's own first target: keep `make` alone meaning what it says.
_packaging_default_goal := $(.DEFAULT_GOAL)

TEST_EXTRA += test-packaging image-test

TOOLS_BIN := .tools/bin
TOOLS_PY := .tools/venv/bin/python
HELM := $(TOOLS_BIN)/helm
CHART := charts/openflare
CHART_RENDERED := .tools/rendered
MONITORING_APIS := --api-versions monitoring.coreos.com/v1/ServiceMonitor \
                   --api-versions monitoring.coreos.com/v1/PrometheusRule
SKIP_API_CHECKS := --set serviceMonitor.skipApiCheck=true --set prometheusRule.skipApiCheck=true
WORKFLOWS := $(wildcard .github/workflows/*.yaml)

BASE_IMAGE ?= python:3.11-slim-bookworm
IMAGE_TAG ?= dev
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
             else echo docker-compose; fi)

KIND_CLUSTER ?= openflare
KIND_NAMESPACE ?= openflare
KIND_NODE_IMAGE ?=
KIND_RELOAD ?= dir
PROMETHEUS_OPERATOR_VERSION ?= v0.81.0
PROMETHEUS_OPERATOR_CRDS := https://github.com/prometheus-operator/prometheus-operator/releases/download/$(PROMETHEUS_OPERATOR_VERSION)/stripped-down-crds.yaml

.PHONY: tools test-packaging helm-lint chart-render chart-scan chart-test compose-check \
        workflow-lint dockerfile-lint images image-test up down logs compose-e2e kind-e2e

tools:
	@bash scripts/install-tools.sh

test-packaging: helm-lint chart-scan chart-test compose-check workflow-lint dockerfile-lint

helm-lint: tools
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/all-on-values.yaml $(SKIP_API_CHECKS)
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/kind-values.yaml $(SKIP_API_CHECKS)

chart-render: tools
	@rm -rf $(CHART_RENDERED) && mkdir -p $(CHART_RENDERED)
	$(HELM) template of $(CHART) -n openflare > $(CHART_RENDERED)/default.yaml
	$(HELM) template of $(CHART) -n openflare -f $(CHART)/ci/all-on-values.yaml \
	  $(MONITORING_APIS) > $(CHART_RENDERED)/all-on.yaml

chart-scan: chart-render
	$(TOOLS_BIN)/checkov --config-file charts/tests/checkov.yaml -d $(CHART_RENDERED)

chart-test: tools setup apt-deps
	$(TOOLS_PY) -m pytest -q -p no:cacheprovider charts/tests --ignore=charts/tests/kind  # kind/: make kind-e2e

compose-check: tools
	$(TOOLS_BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@if command -v docker-compose >/dev/null 2>&1; then \
	  echo "docker-compose config -q"; docker-compose -f docker-compose.yml --profile e2e config -q; \
	else echo "compose-check: docker-compose not installed; the compose-spec schema check ran"; fi

workflow-lint: tools
	@test -n "$(WORKFLOWS)" || { echo "workflow-lint: no workflows found"; exit 1; }
	$(TOOLS_BIN)/actionlint '.github/workflows/*.yaml'
	$(TOOLS_BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)

dockerfile-lint: tools
	$(TOOLS_BIN)/hadolint proxy/Dockerfile testsite/Dockerfile compose/e2e.Dockerfile

images:
	docker build -f proxy/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t openflare-proxy:$(IMAGE_TAG) .
	docker build -f testsite/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t openflare-testsite:$(IMAGE_TAG) .

image-test:
	bash scripts/docker-image-test.sh

up:
	$(COMPOSE) up -d --build
	@echo "proxy http://127.0.0.1:8080  admin http://127.0.0.1:8081  origin http://127.0.0.1:8000"
	@echo "prometheus http://127.0.0.1:9090  grafana http://127.0.0.1:3000 (anonymous viewer)"

down:
	$(COMPOSE) --profile e2e down --remove-orphans

logs:
	$(COMPOSE) logs --follow --tail=200

compose-e2e:
	$(COMPOSE) --profile e2e build
	$(COMPOSE) --profile e2e run --rm e2e; rc=$$?; \
	  $(COMPOSE) --profile e2e rm --force --stop origin-e2e proxy-e2e >/dev/null; exit $$rc

kind-e2e: tools setup
	@for tool in kind kubectl docker; do command -v $$tool >/dev/null 2>&1 || \
	  { echo "kind-e2e: needs $$tool (see .github/workflows/e2e-kind.yaml)"; exit 1; }; done
	kind get clusters 2>/dev/null | grep -qx $(KIND_CLUSTER) || \
	  kind create cluster --name $(KIND_CLUSTER) $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE)) --wait 180s
	kubectl config use-context kind-$(KIND_CLUSTER)
	kubectl apply --server-side -f $(PROMETHEUS_OPERATOR_CRDS)
	$(MAKE) --no-print-directory images IMAGE_TAG=e2e
	kind load docker-image openflare-proxy:e2e openflare-testsite:e2e --name $(KIND_CLUSTER)
	$(TOOLS_PY) charts/tests/kind/e2e_values.py > .tools/kind-e2e-values.yaml
	$(HELM) upgrade --install of $(CHART) -n $(KIND_NAMESPACE) --create-namespace \
	  -f $(CHART)/ci/kind-values.yaml -f .tools/kind-e2e-values.yaml \
	  --set-file rules.rateLimit.content=configs/rate-limit.test.yaml \
	  --set reload.mode=$(KIND_RELOAD) --wait --timeout 5m
	kubectl -n $(KIND_NAMESPACE) rollout status deployment/of-openflare --timeout 180s
	KIND_NAMESPACE=$(KIND_NAMESPACE) bash charts/tests/kind/run-e2e.sh

.DEFAULT_GOAL := $(_packaging_default_goal)
