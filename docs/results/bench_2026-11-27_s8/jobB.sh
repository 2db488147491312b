#!/bin/bash
# Session 8, job B (one GPU): op profile of dynamic evaluation with merge_every=4 (1,024-token documents).
R=/tmp/res; rm -rf $R; mkdir -p $R
cd /tmp/snap
export PYTHONUNBUFFERED=1
echo "start $(date -u)" > $R/progress.txt
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step dyn_profile env PYTHONPATH=/tmp/site:/tmp/snap XLA_FLAGS=--xla_gpu_enable_command_buffer= python bench/eval_cost.py --config=configs/bench_ref.py --documents=16 --doc_len=1024 --merge_every=4 --profile=60 --json=$R/dyn_profile.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
