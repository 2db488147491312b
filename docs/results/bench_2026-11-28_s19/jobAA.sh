#!/bin/bash
# Session 19, job AA (four H200s, about 11 minutes; collect with wait5.sh twice): the body's masked attention
# in Pallas's flash attention (one GPU, .gpujob/pallas_check.py), then goal 6 with the fixed bench/scaling.py
# and packed rows of two documents (the masked path whose FSDP rows failed in session 18).
source .gpujob/common.sh
(export CUDA_VISIBLE_DEVICES=0; step pallas_check python .gpujob/pallas_check.py)
step scaling_packed python bench/scaling.py --config=configs/bench_ref.py --devices=1,2,4 --layouts=data,fsdp --documents=2 --steps=5 --warmup=2 --json=$R/scaling_packed.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
