#!/bin/bash
# Session 8, job C (one GPU): dynamic evaluation (merge_every=2) with while loops and conditionals in command buffers.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step eval_while env PYTHONPATH=/tmp/site:/tmp/snap XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE python bench/eval_cost.py --config=configs/bench_ref.py --merge_every=2 --json=$R/eval_while.json
step eval_default env PYTHONPATH=/tmp/site:/tmp/snap python bench/eval_cost.py --config=configs/bench_ref.py --merge_every=2 --json=$R/eval_default.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
