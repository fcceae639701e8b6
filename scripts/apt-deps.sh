#!/usr/bin/env bash
# Installs the Debian packages the test suite uses, when missing. Runs as root (CI and the dev
# machines are root); elsewhere it uses sudo when available, or says what to install.
set -euo pipefail

# one Debian package per line in scripts/apt-packages.txt (comments with #)
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$(dirname "$0")/apt-packages.txt")

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "apt-deps: please install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "apt-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
