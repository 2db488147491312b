#!/bin/bash
# Session 10, job A (one GPU): session 9's GPU tests; the plain train step's op profile; the plain step baseline.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/snap
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step gpu_tests env FWL_TEST_GPU=1 python -m pytest -o addopts="" -q -p no:cacheprovider tests/test_attention.py
step plain_profile env XLA_FLAGS=--xla_gpu_enable_command_buffer= python bench/step.py --config=configs/bench_ref.py --variants=plain --steps=5 --warmup=2 --profile=70 --json=$R/plain_profile.json
step plain_step python bench/step.py --config=configs/bench_ref.py --variants=plain --steps=10 --warmup=2 --json=$R/plain_step.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
