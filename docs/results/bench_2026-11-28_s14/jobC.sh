#!/bin/bash
# XLA GEMM emitter flags on the plain step (new code), one H100.
source .gpujob/common.sh
S="python bench/step.py --config=configs/bench_ref.py --variants=plain"
step default1 $S --json=$R/default1.json
XLA_FLAGS=--xla_gpu_enable_triton_gemm=false step cublas_only $S --json=$R/cublas_only.json
XLA_FLAGS=--xla_gpu_triton_gemm_any=true step triton_any $S --json=$R/triton_any.json
step default2 $S --json=$R/default2.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
