#!/usr/bin/env bash
# Run the official MCP conformance suite's client authorization scenarios against ncp-broker.
#
#   tests/conformance/run.sh [SPEC_VERSION...]      (default: 2025-03-26 2025-11-25 2026-07-28)
#   tests/conformance/run.sh --suite extensions     the six authorization extension scenarios (below)
#
# For each spec version it runs `conformance client --suite auth` (`--suite backcompat` for 2025-03-26,
# whose two legacy scenarios are not in the auth suite), then every other `auth/*` scenario
# that `conformance list --client --spec-version V` names for that version (the 2026-07-28 ones: resource
# mismatch, offline_access, AS migration, iss, metadata issuer), all at once as the suite does.
#
# --suite extensions runs the six client authorization extension scenarios (client credentials with a
# secret and with a key, enterprise-managed authorization, DPoP, DPoP with nonces, workload identity), each
# with `--scenario`, all at once, into results/extensions/. (`conformance client --suite extensions` would
# also run the sep-2640 scenarios, which are not about authorization.)
#
# The suite's own exit status is 1 on warnings too, so it is not used: report.py reads every scenario's
# checks.json and this script exits 1 exactly when a check has status FAILURE or an expected scenario left
# no results. Results stay in tests/conformance/results/<version>/ (the suite's checks.json, stdout.txt and
# stderr.txt per scenario, and its console output in suite.log and <scenario>.log).
#
# Needs: python3 with ncp-broker and the test extras installed (`pip install -e '.[test]'`), npm.
# Environment: PYTHON (default: python3 on PATH), NCP_CONFORMANCE_TIMEOUT_MS (per scenario, default 120000).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$(command -v "${PYTHON:-python3}")"
timeout_ms="${NCP_CONFORMANCE_TIMEOUT_MS:-120000}"
out="$here/results"
extensions=(auth/client-credentials-jwt auth/client-credentials-basic auth/enterprise-managed-authorization
            auth/dpop auth/dpop-nonce auth/wif-jwt-bearer)
suite=auth
if [[ "${1:-}" == "--suite" ]]; then
  [[ "${2:-}" == extensions && $# -eq 2 ]] || { echo "run.sh: usage: run.sh --suite extensions" >&2; exit 2; }
  suite=extensions
  set --
fi
if [[ $# -gt 0 ]]; then versions=("$@"); else versions=(2025-03-26 2025-11-25 2026-07-28); fi
case "$here" in *" "*) echo "run.sh: the suite splits --command on spaces; move the checkout to a path without spaces" >&2; exit 2 ;; esac

# ---- install: node_modules from the committed lockfile, once per lockfile ----------------------------
cd "$here"
stamp="node_modules/.ncp-lock-sha256"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" ]]; then
  command -v npm >/dev/null || { echo "run.sh: npm not found on PATH" >&2; exit 1; }
  echo "run.sh: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > "$stamp"
fi
node="$here/node_modules/node/bin/node"
conformance=("$node" "$here/node_modules/.bin/conformance")
"$node" --version | grep -q '^v22\.' || { echo "run.sh: $node is not Node 22" >&2; exit 1; }
"$py" -c 'import brokerd, ncp_client, mcp, httpx2' \
  || { echo "run.sh: $py lacks ncp-broker or mcp; run: pip install -e '.[test]'" >&2; exit 1; }

command="$py $here/adapter.py"
started=$SECONDS
if [[ "$suite" == extensions ]]; then
  dir="$out/extensions"
  rm -rf "$dir"
  mkdir -p "$dir"
  "${conformance[@]}" list --client > "$dir/list.txt" || exit 2
  for scenario in "${extensions[@]}"; do
    grep -q "^  - $scenario \[extension\]" "$dir/list.txt" \
      || { echo "run.sh: the suite lists no extension scenario $scenario" >&2; exit 2; }
    echo "$scenario" >> "$dir/expected.txt"
  done
  echo "run.sh: extensions: --scenario, in parallel: ${extensions[*]}"
  for scenario in "${extensions[@]}"; do
    "${conformance[@]}" client --command "$command" --scenario "$scenario" \
      --timeout "$timeout_ms" -o "$dir" > "$dir/${scenario//\//_}.log" 2>&1 &
  done
  wait || true
  echo "run.sh: ran in $((SECONDS - started)) s"
  exec "$py" "$here/report.py" "$out" extensions
fi
for version in "${versions[@]}"; do
  dir="$out/$version"
  rm -rf "$dir"
  mkdir -p "$dir"
  "${conformance[@]}" list --client --spec-version "$version" > "$dir/list.txt" || exit 2
  sed -n 's/^  - \(auth\/[^ ]*\) \[.*/\1/p' "$dir/list.txt" > "$dir/expected.txt"
  [[ -s "$dir/expected.txt" ]] || { echo "run.sh: the suite lists no auth scenario for '$version'" >&2; exit 2; }
  suite=auth
  [[ "$version" == 2025-03-26 ]] && suite=backcompat
  leg_started=$SECONDS
  echo "run.sh: $version: --suite $suite"
  "${conformance[@]}" client --command "$command" --suite "$suite" --spec-version "$version" \
    --timeout "$timeout_ms" -o "$dir" > "$dir/suite.log" 2>&1 || true
  extra=()
  while read -r scenario; do
    compgen -G "$dir/$scenario-*/checks.json" > /dev/null || extra+=("$scenario")
  done < "$dir/expected.txt"
  if [[ ${#extra[@]} -gt 0 ]]; then
    echo "run.sh: $version: --scenario, in parallel: ${extra[*]}"
    for scenario in "${extra[@]}"; do
      "${conformance[@]}" client --command "$command" --scenario "$scenario" --spec-version "$version" \
        --timeout "$timeout_ms" -o "$dir" > "$dir/${scenario//\//_}.log" 2>&1 &
    done
    wait || true
  fi
  echo "run.sh: $version: $((SECONDS - leg_started)) s"
done
echo "run.sh: ran in $((SECONDS - started)) s"
exec "$py" "$here/report.py" "$out" "${versions[@]}"
