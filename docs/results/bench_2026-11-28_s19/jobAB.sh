#!/bin/bash
# Session 19, job AB (two H200s, about 5 minutes): the one-GPU harness with repeats (each time the median of
# three means, with its spread), one process a GPU: bench/step.py's three variants with rows inside one
# document (segment ids dropped, as train.py runs them), and bench/eval_cost.py's three modes.
source .gpujob/common.sh
(export CUDA_VISIBLE_DEVICES=0
 step step python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full,fwl_first_order --documents=1 --json=$R/step.json) &
(export CUDA_VISIBLE_DEVICES=1
 step evalcost python bench/eval_cost.py --config=configs/bench_ref.py --documents=32 --doc_len=2048 --json=$R/evalcost.json) &
wait
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
