#!/bin/bash
# Session 7, job 4 (one GPU): eval_cost with the per-window reset skipped when no lane starts a document.
R=/tmp/res; rm -rf $R; mkdir -p $R
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/snap
echo "start $(date -u)" > $R/progress.txt
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; echo "$(date -u +%T) end $n rc=$?" >> $R/progress.txt; }
step eval_cost python bench/eval_cost.py --config=configs/bench_ref.py --json=$R/eval_cost.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
