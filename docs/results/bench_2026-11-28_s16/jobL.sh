#!/bin/bash
# Session 16, one H200, about 5 minutes: the whole one-GPU harness (all variants, head rows) with
# session 15's training flags (bench/step.py adds TRAINING_FLAGS itself).
source .gpujob/common.sh
step step python bench/step.py --config=configs/bench_ref.py --json=$R/step.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
