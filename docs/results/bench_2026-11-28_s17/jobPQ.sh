#!/bin/bash
# Session 17, jobs Q and P in one call (one H200, about 6 minutes): next_jobQ.sh then next_jobP.sh of
# docs/results/bench_2026-11-28_s16/. Copy that folder's next_gradchunk.py and next_normrows.py,
# docs/results/bench_2026-11-28_s15/common.sh, wait5.sh and trainonly.py, and this script to .gpujob/
# (git-ignored), then run `bash .gpujob/jobPQ.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
step gradchunk python .gpujob/next_gradchunk.py
for run in 1 2; do
  NORM=optax step optax$run python .gpujob/next_normrows.py
  NORM=rows step rows$run python .gpujob/next_normrows.py
done
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
