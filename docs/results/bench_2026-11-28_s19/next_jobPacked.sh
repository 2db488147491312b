#!/bin/bash
# Prepared in session 19 for two GPUs (Hopper or newer; not run yet), about 9 minutes: cudnn_packed with a kernel
# per capacity (new in session 19), before `auto` may take it for packed rows.
# 1. the GPU tests of tests/test_attention.py (outputs and gradients against xla, capacity 1 and 4 and the masked
#    fallback; the sharded train step with cudnn_packed, FSDP and data-parallel);
# 2. bench/attention.py, one process: cudnn (masked) against cudnn_packed at 1, 2, 4 and 16 documents a row;
# 3. bench/step.py with 4 and 2 documents a row, cudnn then cudnn_packed, one after the other on the same GPU.
# Copy docs/results/bench_2026-11-28_s15/common.sh and wait5.sh and this script to .gpujob/ (git-ignored),
# then run it as the developers' guide says (carry .whl and .gpujob; kind nvidia-h200-x2 or nvidia-h100-x2).
source .gpujob/common.sh
step gpu_tests env FWL_TEST_GPU=1 python -m pytest -o addopts="" -q -p no:cacheprovider tests/test_attention.py
(export CUDA_VISIBLE_DEVICES=0
 step attention python bench/attention.py --segments=1,2,4,16 --impls=cudnn,cudnn_packed --json=$R/attention.json
 step step_docs2 python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=2 --json=$R/step_docs2.json
 step step_docs2_packed python bench/step.py --config=configs/bench_ref.py --config.model.attention_impl=cudnn_packed --variants=plain --documents=2 --json=$R/step_docs2_packed.json) &
(export CUDA_VISIBLE_DEVICES=1
 step step_docs4 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --documents=4 --json=$R/step_docs4.json
 step step_docs4_packed python bench/step.py --config=configs/bench_ref.py --config.model.attention_impl=cudnn_packed --variants=plain,fwl_full --documents=4 --json=$R/step_docs4_packed.json) &
wait
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
