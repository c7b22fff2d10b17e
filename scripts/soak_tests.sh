#!/usr/bin/env bash
# Soak for the suite itself: N times, clone the repository's committed HEAD into a fresh temp dir
# and run `bash .ci/run` there, as a new user would; optionally with one core kept busy by a
# plain CPU loop. Prints each run's result, wall time and failing tests, then a summary line.
#
# Usage: scripts/soak_tests.sh N [--busy]
#   --busy   keep core 0 busy (`taskset -c 0 sh -c 'while :; do :; done'`) for every run
# Only committed work is tested (a clone of HEAD): commit first. Logs of failed runs are kept
# under $SOAK_LOG_DIR (default: a temp dir, printed at the end).
set -uo pipefail

usage() {
  echo "usage: $0 N [--busy]   (N: how many fresh-clone runs of .ci/run)" >&2
  exit 2
}
[ $# -ge 1 ] || usage
runs=$1
shift
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || usage
busy=""
for arg in "$@"; do
  case "$arg" in
    --busy) busy=1 ;;
    *) usage ;;
  esac
done

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel) || exit 2
head=$(git -C "$repo" rev-parse --short HEAD) || exit 2
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  echo "note: uncommitted changes in $repo are not tested (a clone of HEAD $head is)" >&2
fi
log_dir=${SOAK_LOG_DIR:-$(mktemp -d -t soak-logs.XXXXXX)}
mkdir -p "$log_dir"

clone=""
busy_pid=""
cleanup() {
  if [ -n "$busy_pid" ]; then
    kill "$busy_pid" 2>/dev/null
    wait "$busy_pid" 2>/dev/null
    busy_pid=""
  fi
  if [ -n "$clone" ]; then
    rm -rf "$clone"
    clone=""
  fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

if [ -n "$busy" ]; then
  taskset -c 0 sh -c 'while :; do :; done' &
  busy_pid=$!
  echo "core 0 kept busy by pid $busy_pid" >&2
fi

# The names of failing tests in a deno test log: "name ... FAILED (…)" lines (steps included)
# and the FAILURES section's "name => file:line:col" lines.
failing_tests() {
  {
    grep -E ' \.\.\. FAILED( \(|$)' "$1" | sed -E 's/^\.\/[^ ]+ => //; s/ \.\.\. FAILED.*$//'
    sed -n '/^ FAILURES/,$p' "$1" | grep -E ' => .+:[0-9]+:[0-9]+$' |
      sed -E 's/ => [^ ]+:[0-9]+:[0-9]+$//; s/^\.\/[^ ]+ => //'
  } | sort -u
}

passes=0
failures=0
total_s=0
declare -A failed_counts=()
for ((i = 1; i <= runs; i++)); do
  clone=$(mktemp -d -t soak-clone.XXXXXX)
  git clone -q "$repo" "$clone/repo" || {
    echo "run $i: cannot clone $repo" >&2
    exit 1
  }
  log="$log_dir/run-$i.log"
  start=$(date +%s.%N)
  (cd "$clone/repo" && NO_COLOR=1 bash .ci/run) >"$log" 2>&1
  rc=$?
  wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
  total_s=$((total_s + wall))
  tally=$(grep -E '^tests: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    passes=$((passes + 1))
    echo "run $i/$runs: pass  ${wall}s  ${tally}"
    rm -f "$log"
  else
    failures=$((failures + 1))
    echo "run $i/$runs: FAIL  ${wall}s  ${tally:-no tally line} (log: $log)"
    if grep -q '^deno task ok FAILED' "$log"; then
      echo "    deno task ok (fmt, lint, check)"
      failed_counts["deno task ok"]=$((${failed_counts["deno task ok"]:-0} + 1))
    fi
    while IFS= read -r name; do
      [ -n "$name" ] || continue
      echo "    $name"
      failed_counts["$name"]=$((${failed_counts["$name"]:-0} + 1))
    done < <(failing_tests "$log")
  fi
  rm -rf "$clone"
  clone=""
done

echo "soak of $head: ${passes}/${runs} passed, ${failures} failed$([ -n "$busy" ] && echo ", one core busy"), mean $((total_s / runs))s per run"
for name in "${!failed_counts[@]}"; do
  echo "  failed ${failed_counts[$name]}x: $name"
done
[ "$failures" -eq 0 ] && rmdir "$log_dir" 2>/dev/null
[ "$failures" -eq 0 ]
