#!/bin/bash
# Session 12, job D (one GPU): bench/step.py (plain, fwl_full) with the head FLOP column.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
export PYTHONPATH=/tmp/site:/tmp/snap
step step_final python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --json=$R/step_final.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
