#!/usr/bin/env bash
# Installs what the app or the tests need, on Debian 12 or Ubuntu 24.04 with only the distribution's python3:
#
#     ./scripts/setup.sh app && .venv/bin/python app.py        # README, "Run it"
#     ./scripts/setup.sh test && .venv/bin/python -m pytest    # README, "Run the tests"
#
# The Python packages go to a virtual environment, .venv: Debian's python3 refuses pip installs into the system
# (PEP 668), and the distribution has no `python`. A second run installs nothing: apt packages already there are
# not asked for again, .venv is kept, pip finds every pin installed, and node_modules newer than its lockfile stays.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-venv: ensurepip, without which `python3 -m venv` makes no pip; python3-dev and g++: Annoy compiles
# against Python.h (requirements.txt)
packages=(python3-venv python3-dev g++)
case "${1:-}" in
  app) requirements=requirements.txt ;;
  test)
    requirements=requirements-dev.txt
    packages+=(chromium nodejs curl)  # the browser tests drive Debian's chromium; node and curl run the README's
    # JavaScript and curl examples
    # Debian's nodejs comes without npm; NodeSource's nodejs bundles it and conflicts with Debian's npm package
    command -v npm >/dev/null || packages+=(npm) ;;
  *) echo "usage: $0 app|test" >&2; exit 2 ;;
esac

missing=()
for package in "${packages[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null)" = "ii " ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)  # root needs no sudo (and a container often has none)
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

[ -x .venv/bin/pip ] || python3 -m venv .venv  # also repairs a .venv made before python3-venv was there (no pip)
.venv/bin/pip install --disable-pip-version-check -r "$requirements"

if [ "$1" = test ] && ! [ tests/js/node_modules/.package-lock.json -nt tests/js/package-lock.json ]; then
  # the pinned @gradio/client (the tests download nothing). --use-openssl-ca: npm trusts the system's certificates,
  # as apt does (a proxy's CA added with update-ca-certificates), not only those built into node
  NODE_OPTIONS="--use-openssl-ca ${NODE_OPTIONS:-}" npm ci --prefix tests/js --no-audit --no-fund --no-update-notifier
fi
