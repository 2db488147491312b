#!/bin/bash
# Prepared for session 14 (one H100; not run yet): where the plain and FWL train steps' memory-bound time goes,
# by JAX module path (bench/step.py --profile now names each op's scope), command buffers off.
# Copy this directory's common.sh and wait5.sh and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobE.sh` as the developers' guide says (carry .whl and .gpujob); about 4 minutes.
source .gpujob/common.sh
export XLA_FLAGS=--xla_gpu_enable_command_buffer=
step profile python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --profile=60 --json=$R/profile.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
