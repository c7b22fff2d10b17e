#!/usr/bin/env sh
# `deno task bench:scaling`: the gateway with 1, 2, 4 and 8 workers (GATEWAY_WORKERS) on a
# machine with at least 16 CPUs. Relays on CPUs 0-7 (worker count = CPUs), compiled load
# clients on 8-13, this process (publisher) and nats-server on 14-15. Every BENCH_* variable
# of bench/run.ts can override the defaults below.
set -eu
cd "$(dirname "$0")/.."
if [ "$(nproc)" -lt 16 ]; then
  echo "bench:scaling needs 16 CPUs (this machine has $(nproc)); use deno task bench" >&2
  exit 2
fi
export BENCH_CLIENT=c
export BENCH_CLIENT_PROCS="${BENCH_CLIENT_PROCS:-6}"
export BENCH_CLIENT_CPUS="${BENCH_CLIENT_CPUS:-8-13}"
export BENCH_N_SMALL="${BENCH_N_SMALL:-1000}"
export BENCH_N_BIG="${BENCH_N_BIG:-5000}"
export BENCH_FIXED_SECONDS="${BENCH_FIXED_SECONDS:-3}"
export BENCH_STEP_SECONDS="${BENCH_STEP_SECONDS:-3}"
export BENCH_RATES="${BENCH_RATES:-50,100,200,300,400,600,800,1000,1200,1600}"
export BENCH_RELAYS="${BENCH_RELAYS:-gateway@0,gateway:2@0-1,gateway:4@0-3,gateway:8@0-7}"
exec taskset -c 14-15 deno run --allow-all bench/run.ts
