#!/bin/bash
# Prepared for session 17 (one GPU, H100 if lent; not run yet), about 5 minutes: the gradient norm
# in two levels (next_normrows.py) against optax's, alternating. Copy docs/results/bench_2026-11-28_s15/common.sh,
# wait5.sh and trainonly.py, this directory's next_normrows.py and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobP.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
for run in 1 2; do
  NORM=optax step optax$run python .gpujob/next_normrows.py
  NORM=rows step rows$run python .gpujob/next_normrows.py
done
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
