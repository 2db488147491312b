#!/bin/bash
# Prepared for session 16 (one H100, not run yet), about 9 minutes: evaluation's XLA flags.
# bench/eval_cost.py now adds OVERLAP_FLAGS as eval.py does (before session 15 it ran with XLA's
# defaults: goal 5's numbers so far); and dynamic evaluation's per-lane matmuls were never timed
# with the dot merger off. Three runs: as now; with the merger off too; with XLA's defaults (a flag
# file, which add_xla_flags leaves alone, naming only a default value). If dynamic and FWL
# evaluation are not slower with the merger off, eval.py, demo.py and study.py can take
# TRAINING_FLAGS too.
# Copy this directory's common.sh and wait5.sh and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobJ.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
E="python bench/eval_cost.py --config=configs/bench_ref.py --documents=16 --doc_len=2048"
step default $E --json=$R/default.json
XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=0 step nomerge $E --json=$R/nomerge.json
echo "--xla_gpu_dot_merger_threshold_mb=32" > /tmp/xla_default_flags.txt
XLA_FLAGS=/tmp/xla_default_flags.txt step xla_defaults $E --json=$R/xla_defaults.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
