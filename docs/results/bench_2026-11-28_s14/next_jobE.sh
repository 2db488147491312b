#!/bin/bash
# Prepared for session 15 (one H100; not run yet), about 8 minutes:
# 1. bench/optimizer.py: the optimizer's update alone over bench_ref's parameters (tree, optax.flatten,
#    one hand-written pass): is its ~280-kernel count worth grouping (the plain step is 0.5 ms from 40% MFU)?
# 2. --xla_gpu_triton_gemm_any=true against none, alternating twice on the plain step (one run gave 0.8%).
# Copy this directory's common.sh and wait5.sh and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobE.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
step optimizer python bench/optimizer.py --config=configs/bench_ref.py --json=$R/optimizer.json
S="python bench/step.py --config=configs/bench_ref.py --variants=plain"
step default1 $S --json=$R/default1.json
XLA_FLAGS=--xla_gpu_triton_gemm_any=true step any1 $S --json=$R/any1.json
step default2 $S --json=$R/default2.json
XLA_FLAGS=--xla_gpu_triton_gemm_any=true step any2 $S --json=$R/any2.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
