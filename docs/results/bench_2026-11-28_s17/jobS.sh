#!/bin/bash
# Session 17, job S (one H200, about 4 minutes): bench/eval_cost.py as fixed this session (whole windows, the
# second pass timed whole): 32 documents of 2,048 targets (two whole windows each), one lane each (bench_ref's
# eval.batch_size is 32). Copy docs/results/bench_2026-11-28_s15/common.sh and wait5.sh and this script to .gpujob/
# (git-ignored), then run `bash .gpujob/jobS.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
step evalcost python bench/eval_cost.py --config=configs/bench_ref.py --documents=32 --doc_len=2048 --json=$R/evalcost.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
