#!/bin/bash
# Prepared for session 14 (one H100; not run yet): where dynamic evaluation's time goes against standard
# evaluation's, by JAX module path (bench/eval_cost.py --profile now names each op's scope), command buffers off.
# Set up as next_jobE.sh says; about 6 minutes (the profiled window step is compiled once more for its text).
source .gpujob/common.sh
export XLA_FLAGS=--xla_gpu_enable_command_buffer=
step eval_profile python bench/eval_cost.py --config=configs/bench_ref.py --modes=standard,dynamic --documents=16 --doc_len=2048 --profile=60 --json=$R/eval_profile.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
