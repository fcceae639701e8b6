# The E2E runner of `make compose-e2e` (`docker compose --profile e2e run --rm e2e`): Python with
# the suite's test dependencies and the openflare CLI (the config tests run `openflare
# check-config` themselves) in a virtualenv; e2e/ and configs/ are mounted at run time.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
COPY requirements-dev.txt /src/requirements-dev.txt
COPY proxy /src/proxy
RUN python3 -m venv /opt/e2e \
 && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/e2e/bin/pip install --no-cache-dir \
      -r /src/requirements-dev.txt "redis>=5" "PyYAML>=6.0" /src/proxy
ENV PATH=/opt/e2e/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
WORKDIR /e2e
ENTRYPOINT ["python", "-m", "pytest"]
CMD ["-q", "--target", "compose"]
