#!/bin/bash
# Session 8, job A (one GPU): dynamic evaluation with low-rank kernel steps (merge_every 1, 2, 4, 8)
# against the session 7 code (HEAD snapshot in .gpujob/head), eval_cost at bench_ref.
R=/tmp/res; rm -rf $R; mkdir -p $R
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
export PYTHONUNBUFFERED=1
echo "start $(date -u)" > $R/progress.txt
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step eval_new env PYTHONPATH=/tmp/site:/tmp/snap python bench/eval_cost.py --config=configs/bench_ref.py --merge_every=4,2,1 --json=$R/eval_new.json
step eval_old bash -c "cd .gpujob/head && PYTHONPATH=/tmp/site:/tmp/snap/.gpujob/head python bench/eval_cost.py --config=configs/bench_ref.py --json=$R/eval_old.json"
step eval_new8 env PYTHONPATH=/tmp/site:/tmp/snap timeout 300 python bench/eval_cost.py --config=configs/bench_ref.py --merge_every=8 --json=$R/eval_new8.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
