#!/bin/bash
# Session 9, job B (same H200 as job A): job A again with the bias broadcast over the heads, the GPU tests run on the GPU.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/snap
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step gpu_tests env FWL_TEST_GPU=1 python -m pytest -o addopts="" -q -p no:cacheprovider tests/test_attention.py
step cached_bench python bench/attention.py --shape=16,1024,12,64 --cache_segment=128 --json=$R/cached_bench.json
step eval_new python bench/eval_cost.py --config=configs/bench_ref.py --json=$R/eval_new.json
step trace_plain env XLA_FLAGS=--xla_gpu_enable_command_buffer= python .gpujob/trace_plain.py plain9
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
