#!/usr/bin/env bash
# Install what the test servers need, idempotently:
#   - node_modules from the committed package-lock.json (npm ci), skipped when already installed from
#     this exact lockfile (a stamp in node_modules records its sha256);
#   - Debian's chromium, only when /usr/bin/chromium is missing, we are root, and --no-chromium was not
#     given (Chromium is optional: the tests use the plain-HTTP browser driver by default).
# Needs: node and npm on PATH; for chromium, apt-get.
#
# Usage: tests/servers/install.sh [--no-chromium]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
want_chromium=1
for arg in "$@"; do
  case "$arg" in
    --no-chromium) want_chromium=0 ;;
    *) echo "usage: $0 [--no-chromium]" >&2; exit 2 ;;
  esac
done

cd "$here"
stamp="node_modules/.ncp-lock-sha256"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_sum" ]]; then
  echo "install.sh: node_modules is up to date"
else
  command -v npm >/dev/null || { echo "install.sh: npm not found on PATH" >&2; exit 1; }
  echo "install.sh: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > "$stamp"
fi

if [[ "$want_chromium" == 1 && ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "install.sh: apt-get install chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium
  else
    echo "install.sh: /usr/bin/chromium missing and not root: the Chromium driver stays unavailable (optional)"
  fi
fi
