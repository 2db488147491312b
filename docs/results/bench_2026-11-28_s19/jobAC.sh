#!/bin/bash
# Session 19, job AC (one H200, alone on its host, about 5 minutes): bench/step.py's three variants with five
# repeats, after job AB's run beside bench/eval_cost.py had a 22.6% spread in the FWL step.
source .gpujob/common.sh
step step python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full,fwl_first_order --documents=1 --repeats=5 --json=$R/step.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
