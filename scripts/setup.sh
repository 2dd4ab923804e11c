#!/usr/bin/env bash
# Sets up a fresh machine: WordNet for METEOR (Debian package, no hub download), then the package.
# Usage: bash scripts/setup.sh [EXTRAS]   e.g. `bash scripts/setup.sh test`
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${TEXTCHEM_WORDNET_DIR:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base) >/dev/null \
      || echo "setup: could not install wordnet-base; METEOR will be reported as n/a" >&2
  else
    echo "setup: WordNet missing; METEOR will be n/a until 'sudo apt-get install wordnet-base'" >&2
  fi
fi
extras="${1:-}"
python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
