#!/bin/bash
# Session 18, job W (four H200s, about 8 minutes): the GPU test of the sharded masked train step; bench/step.py's
# plain row with one document a row (the ids dropped, as train.py now does) and with two; bench/scaling.py with
# two documents a row (the masked path that failed under FSDP in job U) over data and FSDP on 1, 2 and 4 GPUs.
source .gpujob/common.sh
step gpu_tests python -m pytest -o addopts="" -q -p no:cacheprovider tests/test_attention.py -k "sharded or cudnn_matches"
(export CUDA_VISIBLE_DEVICES=0
 step step_plain_docs1 python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=1 --json=$R/step_plain_docs1.json) &
(export CUDA_VISIBLE_DEVICES=1
 step step_plain_docs2 python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=2 --json=$R/step_plain_docs2.json) &
wait
step scaling python bench/scaling.py --config=configs/bench_ref.py --devices=1,2,4 --layouts=fsdp,data --documents=2 --steps=5 --warmup=2 --json=$R/scaling.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
