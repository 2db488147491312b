#!/bin/bash
source .gpujob/common.sh
step optimizer python bench/optimizer.py --config=configs/bench_ref.py --json=$R/optimizer.json
S="python bench/step.py --config=configs/bench_ref.py --variants=plain"
step default1 $S --json=$R/default1.json
XLA_FLAGS=--xla_gpu_triton_gemm_any=true step any1 $S --json=$R/any1.json
step default2 $S --json=$R/default2.json
XLA_FLAGS=--xla_gpu_triton_gemm_any=true step any2 $S --json=$R/any2.json
XLA_FLAGS="--xla_dump_to=$R/dump --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*nll_loss.*" step headdump python .gpujob/headdump.py
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
