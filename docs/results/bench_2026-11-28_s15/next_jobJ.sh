#!/bin/bash
# Prepared for session 16 (one H100, not run yet), about 8 minutes: does evaluation gain from the
# dot merger off too? bench/eval_cost.py keeps XLA's default (as eval.py does); dynamic evaluation's
# per-lane matmuls were never timed without the merger. If dynamic and FWL evaluation are not slower
# with it off, eval.py, demo.py and study.py can take TRAINING_FLAGS' MATMUL_FLAGS too.
# Copy this directory's common.sh and wait5.sh and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobJ.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
E="python bench/eval_cost.py --config=configs/bench_ref.py --documents=16 --doc_len=2048"
step default $E --json=$R/default.json
XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=0 step nomerge $E --json=$R/nomerge.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
