#!/usr/bin/env bash
# Sets up a fresh machine: WordNet for METEOR (Debian package, no hub download), Chromium for the test extra's
# browser test, then the package.
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
# The report test opens our HTML page in a real browser: Debian's Chromium, driven by Playwright (test extra).
if [[ ",$extras," == *",test,"* ]] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "setup: could not install chromium; the browser test of textchem-report will skip" >&2
  else
    echo "setup: Chromium missing; the browser test of textchem-report skips until 'sudo apt-get install chromium'" >&2
  fi
fi
python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
