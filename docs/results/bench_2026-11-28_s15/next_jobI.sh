#!/bin/bash
# Prepared for session 16 (one H100, not run yet), about 7 minutes: goal 1 on the card it names,
# with session 15's change (train.py and the training benchmarks, bench/step.py among them, set
# --xla_gpu_dot_merger_threshold_mb=0).
# 1. the whole harness (all variants, the head rows) as it now runs;
# 2. the plain step with XLA's default merger threshold (32 MB), the A/B on the H100.
# Copy this directory's common.sh and wait5.sh and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobI.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
step step python bench/step.py --config=configs/bench_ref.py --json=$R/step.json
XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=32 step merged python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/merged.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
