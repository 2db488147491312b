#!/bin/bash
# Session 8, job E (one GPU): eval_cost with the final code (merge_every default = 2), and the op profile
# of dynamic evaluation (plain model, command buffers off, the fixed op_profile) for the breakdown.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/snap
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step eval_final python bench/eval_cost.py --config=configs/bench_ref.py --json=$R/eval_final.json
step dyn_profile env XLA_FLAGS=--xla_gpu_enable_command_buffer= python bench/eval_cost.py --config=configs/bench_ref.py --documents=16 --doc_len=2048 --profile=40 --json=$R/dyn_profile.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
