#!/bin/bash
# Session 9, job C (one GPU): eval_cost with cuDNN attention over the cache, merges of 2 and 4 segments side by side.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/snap
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step eval_merge python bench/eval_cost.py --config=configs/bench_ref.py --merge_every=2,4 --json=$R/eval_merge.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
