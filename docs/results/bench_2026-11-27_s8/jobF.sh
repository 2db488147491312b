#!/bin/bash
# Session 8, job F (4 GPUs): FSDP with unrolled layers (bench_ref), 1 and 4 GPUs.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name --format=csv >> $R/progress.txt
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step scaling_fsdp python bench/scaling.py --config=configs/bench_ref.py --devices=1,4 --layouts=fsdp --steps=5 --warmup=2 --json=$R/scaling_fsdp.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
