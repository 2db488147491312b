#!/bin/bash
# Prepared for session 16 (one GPU, not run yet), about 7 minutes: XLA options that might take the
# plain step's remaining memory-bound passes (session 15's H200 profile: LayerNorms' two passes
# forward and three backward, the GELU's own fusions, RoPE's concatenates), each on top of the
# flags bench/step.py now sets; and whether XLA puts the GELU in a cuBLASLt epilogue for any form.
# Run the plain step twice without a flag first and alternate if a flag looks better.
# Copy this directory's common.sh, wait5.sh, next_gelu_epilogue.py and this script to .gpujob/
# (git-ignored), then run `bash .gpujob/next_jobK.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
S="python bench/step.py --config=configs/bench_ref.py --variants=plain"
step gelu python .gpujob/next_gelu_epilogue.py
step base $S --json=$R/base.json
XLA_FLAGS=--xla_gpu_experimental_enable_triton_softmax_priority_fusion=true step softmax $S --json=$R/softmax.json
XLA_FLAGS=--xla_gpu_experimental_enable_triton_heroless_priority_fusion=true step heroless $S --json=$R/heroless.json
step base2 $S --json=$R/base2.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
