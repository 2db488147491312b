#!/bin/bash
# Prepared for session 17 (one GPU, H100 if lent; not run yet), about 3 minutes: the FWL head's
# memory with the per-token gradient in smaller chunks (next_gradchunk.py). Copy docs/results/bench_2026-11-28_s15/common.sh and wait5.sh, this directory's
# next_gradchunk.py and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobQ.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
step gradchunk python .gpujob/next_gradchunk.py
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
