#!/bin/bash
# Session 13, job B (four H100s): bench/scaling.py, data and FSDP layouts on 1, 2 and 4 GPUs (goal 6 on the cards the issue names).
source .gpujob/common.sh
step scaling python bench/scaling.py --config=configs/bench_ref.py --devices=1,2,4 --layouts=data,fsdp --steps=5 --warmup=2 --json=$R/scaling.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
