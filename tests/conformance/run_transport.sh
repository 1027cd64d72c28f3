#!/usr/bin/env bash
# The conformance suite's client *transport* scenarios, through ncp-broker proxy and, side by side, direct.
#
#   tests/conformance/run_transport.sh [SPEC_VERSION...]    (default: 2025-06-18 2025-11-25 2026-07-28)
#
# For each spec version, every client scenario `conformance list --client --spec-version V` names that is
# not an authorization one (auth/*) or an extension, run twice with the same host (transport_host.py: the
# mcp SDK's Client): `direct` (its own Streamable HTTP transport) and `proxy` (stdio to ncp-broker proxy,
# which speaks HTTP to the suite's server). report_transport.py then fails the run when a scenario passes
# direct and not through the proxy; a scenario the host fails either way is listed, not counted against
# the proxy (docs/conformance.md says which and why). Results: tests/conformance/results-transport/.
#
# Needs what run.sh needs (python3 with ncp-broker and the test extras, npm); it installs node_modules the
# same way. Environment: PYTHON, NCP_CONFORMANCE_TIMEOUT_MS (per scenario, default 90000).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$(command -v "${PYTHON:-python3}")"
timeout_ms="${NCP_CONFORMANCE_TIMEOUT_MS:-90000}"
out="$here/results-transport"
if [[ $# -gt 0 ]]; then versions=("$@"); else versions=(2025-06-18 2025-11-25 2026-07-28); fi
case "$here" in *" "*) echo "run_transport.sh: the suite splits --command on spaces; use a path without spaces" >&2; exit 2 ;; esac

cd "$here"
stamp="node_modules/.ncp-lock-sha256"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" ]]; then
  command -v npm >/dev/null || { echo "run_transport.sh: npm not found on PATH" >&2; exit 1; }
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > "$stamp"
fi
node="$here/node_modules/node/bin/node"
conformance=("$node" "$here/node_modules/.bin/conformance")
"$py" -c 'import brokerd, ncp_client.proxy, mcp' \
  || { echo "run_transport.sh: $py lacks ncp-broker or mcp; run: pip install -e '.[test]'" >&2; exit 1; }

started=$SECONDS
rm -rf "$out"
for version in "${versions[@]}"; do
  mkdir -p "$out/$version"
  "${conformance[@]}" list --client --spec-version "$version" > "$out/$version/list.txt" || exit 2
  sed -n 's/^  - \([^ ]*\) \[\(.*\)\]$/\1 \2/p' "$out/$version/list.txt" \
    | awk '$1 !~ /^auth\// && $2 !~ /extension/ {print $1}' > "$out/$version/expected.txt"
  [[ -s "$out/$version/expected.txt" ]] || { echo "run_transport.sh: no transport scenario for $version" >&2; exit 2; }
  leg=$SECONDS
  # Two at a time: the machine has two cores, and the sse-retry scenario measures reconnection delays.
  while read -r scenario; do
    for how in direct proxy; do
      dir="$out/$version/$how"
      mkdir -p "$dir"
      "${conformance[@]}" client --command "$py $here/transport_host.py $how" --scenario "$scenario" \
        --spec-version "$version" --timeout "$timeout_ms" -o "$dir" > "$dir/${scenario//\//_}.log" 2>&1 &
    done
    wait || true
  done < "$out/$version/expected.txt"
  echo "run_transport.sh: $version: $((SECONDS - leg)) s"
done
echo "run_transport.sh: ran in $((SECONDS - started)) s"
exec "$py" "$here/report_transport.py" "$out" "${versions[@]}"
