#!/bin/bash
# Session 12, job B (one GPU): the fused low-rank merge (Pallas/Triton): GPU tests, bench/low_rank.py, eval_cost with merge_impl xla and pallas.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
export PYTHONPATH=/tmp/site:/tmp/snap
step gpu_tests python -m pytest -o addopts="" -p no:cacheprovider -q tests/test_low_rank.py tests/test_eval.py -k "low_rank or pallas_merge"
step low_rank python bench/low_rank.py --tiles=64x128:4,128x64:4,128x128:4,64x256:4 --json=$R/low_rank.json
step eval_cost python bench/eval_cost.py --config=configs/bench_ref.py --merge_impl=xla,pallas --json=$R/eval_cost.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
