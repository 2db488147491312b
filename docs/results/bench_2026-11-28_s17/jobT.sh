#!/bin/bash
# Session 17, job T (one H200, about 3 minutes): bench/step.py plain and fwl_full with h W1 shared by the head's passes.
source .gpujob/common.sh
step sharedw1 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --json=$R/sharedw1.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
