#!/bin/bash
# Session 18, job U (four H200s, about 11 minutes): four one-GPU runs side by side, one process a GPU
# (each ratio is taken inside one process on one card), then bench/scaling.py over the four.
source .gpujob/common.sh
(export CUDA_VISIBLE_DEVICES=0
 step la_a python bench/linear_attention.py --grid="16,1024,768,3072;16,1024,3072,768;16,1024,1,5376" --json=$R/la_a.json) &
(export CUDA_VISIBLE_DEVICES=1
 step la_b python bench/linear_attention.py --grid="2,8192,768,3072;16,4096,64,64" --json=$R/la_b.json) &
(export CUDA_VISIBLE_DEVICES=2
 step step_docs1 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --documents=1 --json=$R/step_docs1.json
 step step_docs0 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --documents=0 --json=$R/step_docs0.json) &
(export CUDA_VISIBLE_DEVICES=3
 step attention python bench/attention.py --json=$R/attention.json
 XLA_FLAGS=--xla_gpu_enable_command_buffer= step optimizer python bench/optimizer.py --config=configs/bench_ref.py --json=$R/optimizer.json
 step step_plain_docs4 python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=4 --json=$R/step_plain_docs4.json
 step step_plain_docs0 python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=0 --json=$R/step_plain_docs0.json) &
wait
step scaling python bench/scaling.py --config=configs/bench_ref.py --devices=1,2,4 --layouts=data,fsdp --steps=5 --warmup=2 --json=$R/scaling.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
