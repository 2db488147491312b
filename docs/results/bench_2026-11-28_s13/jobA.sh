#!/bin/bash
# Session 13, job A (one H100): the harness at the reference shape on the card the issue names: bench/step.py (all variants) and bench/eval_cost.py.
source .gpujob/common.sh
step step python bench/step.py --config=configs/bench_ref.py --json=$R/step.json
step eval_cost python bench/eval_cost.py --config=configs/bench_ref.py --json=$R/eval_cost.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
