#!/bin/bash
# Session 12, job C (one GPU): dynamic evaluation with merge_impl xla and pallas (64x128 tiles), op profiles; pallas without the in-place alias.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
rm -rf /tmp/old; cp -r /tmp/snap /tmp/old; cp .gpujob/var/s12_noalias/low_rank.py /tmp/old/fwl_jax/ops/low_rank.py
export PYTHONPATH=/tmp/site:/tmp/snap
step eval_profile env XLA_FLAGS=--xla_gpu_enable_command_buffer= python bench/eval_cost.py --config=configs/bench_ref.py --modes=standard,dynamic --merge_impl=xla,pallas --profile=30 --json=$R/eval_profile.json
(cd /tmp/old && PYTHONPATH=/tmp/site:/tmp/old step eval_noalias env XLA_FLAGS=--xla_gpu_enable_command_buffer= python bench/eval_cost.py --config=configs/bench_ref.py --modes=dynamic --merge_impl=pallas --json=$R/eval_noalias.json)
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
