#!/bin/sh
# Device A/B: HEAD (perf_base) vs this change (perf_dev). PUB_CPUS, CLIENT_CPUS, PROCS overridable for a local dry run.
K=$PWD/bench/results/dev; W=${W:-/tmp/k}; OUT=${OUT:-/tmp/kout}; mkdir -p $W/bin $W/dd $OUT
xz -dc $K/deno.xz > $W/bin/deno; xz -dc $K/nats-server.xz > $W/bin/nats-server; chmod +x $W/bin/*
export PATH=$W/bin:$PATH DENO_DIR=$W/dd DENO_NO_UPDATE_CHECK=1
tar -C $W/dd -xJf $K/npm.txz; tar -C $W -xzf $K/trees.tgz
nproc > $OUT/machine.txt; lscpu | grep -i "model name" >> $OUT/machine.txt; deno --version >> $OUT/machine.txt
export BENCH_CLIENT=c BENCH_CLIENT_BIN=$K/client BENCH_CLIENT_PROCS=${PROCS:-6} BENCH_CLIENT_CPUS=${CLIENT_CPUS:-8-13}
export BENCH_N_SMALL=${NS:-1000} BENCH_FIXED_SECONDS=3 BENCH_STEP_SECONDS=2 BENCH_RATES=${RATES:-50,100,200,300,400,600}
b() { tree=$1; shift; echo "=== $tree $*" >> $OUT/bench.log
  (cd $W/$tree && env "$@" taskset -c ${PUB_CPUS:-14-15} deno run --allow-all bench/run.ts >> $OUT/bench.log 2>&1)
  cp $W/$tree/bench/results/*.json $OUT/ 2>/dev/null; rm -f $W/$tree/bench/results/*.json; }
b perf_dev BENCH_RELAYS='gateway@0,deno@0' BENCH_N_BIG=${NB:-5000}
b perf_base BENCH_RELAYS='gateway@0' BENCH_N_BIG=${NB:-5000}
b perf_dev BENCH_RELAYS='gateway@0+DIAG_MAXQ=1,gateway@0+DIAG_MAXQ=3' BENCH_N_BIG=${NB:-5000} BENCH_SCENARIOS=overload
b perf_dev BENCH_RELAYS='gateway@0,deno@0' BENCH_N_BIG=${NB2:-2000} BENCH_SCENARIOS=none
b perf_base BENCH_RELAYS='gateway@0' BENCH_N_BIG=${NB2:-2000} BENCH_SCENARIOS=none
b perf_dev BENCH_RELAYS='gateway@0,deno@0' BENCH_N_BIG=1000 BENCH_SCENARIOS=none
b perf_base BENCH_RELAYS='gateway@0' BENCH_N_BIG=1000 BENCH_SCENARIOS=none
cd $OUT && tar -czf results.tgz *.json && rm -f *.json
echo done >> $OUT/bench.log
