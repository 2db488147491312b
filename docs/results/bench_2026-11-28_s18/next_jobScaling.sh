#!/bin/bash
# Prepared in session 18 for four GPUs (not run yet), about 10 minutes: goal 6 with the fixed bench/scaling.py
# (its memory rows compiled under the sharding rules), with packed rows of two documents (the masked path that
# failed there in session 18) and then with rows inside one document (no mask, as train.py now runs them);
# and goal 4's small shape with repeats. Run it with the wait5.sh of bench_2026-11-28_s15 twice if needed.
source .gpujob/common.sh
(export CUDA_VISIBLE_DEVICES=0
 step la_small python bench/linear_attention.py --grid="16,4096,64,64" --repeats=5 --json=$R/la_small.json)
step scaling_packed python bench/scaling.py --config=configs/bench_ref.py --devices=1,2,4 --layouts=data,fsdp --documents=2 --steps=5 --warmup=2 --json=$R/scaling_packed.json
step scaling python bench/scaling.py --config=configs/bench_ref.py --devices=1,2,4 --layouts=data,fsdp --steps=5 --warmup=2 --json=$R/scaling.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
