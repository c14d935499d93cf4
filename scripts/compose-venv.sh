#!/usr/bin/env bash
# Create a separate virtual environment holding docker-compose 1.29.2 (the Python
# implementation), used only to validate docker-compose.yml without a Docker engine:
#
#   bash scripts/compose-venv.sh [VENV]      # VENV defaults to .venv-compose
#   VENV/bin/docker-compose -f docker-compose.yml config -q
#
# docker-compose 1.29.2 needs PyYAML 5.x, which has no wheels for recent Pythons and
# builds from source; that build breaks with Cython 3, hence the `cython<3` constraint.
# Setting PIP_CONSTRAINT replaces any constraint file from a global pip.conf for this
# install only; that is intended (nothing here involves torch).
#
# Idempotent: does nothing when VENV/bin/docker-compose already works.
set -euo pipefail

VENV="${1:-.venv-compose}"
PYTHON="${PYTHON:-python3}"
COMPOSE_VERSION="1.29.2"

if "$VENV/bin/docker-compose" version >/dev/null 2>&1; then
    echo "docker-compose already installed in $VENV"
    exit 0
fi

constraints="$(mktemp "${TMPDIR:-/tmp}/compose-constraints.XXXXXX")"
trap 'rm -f "$constraints"' EXIT
echo 'cython<3' >"$constraints"

"$PYTHON" -m venv "$VENV"
PIP_CONSTRAINT="$constraints" "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "docker-compose==$COMPOSE_VERSION"

"$VENV/bin/docker-compose" version
