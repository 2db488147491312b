#!/bin/bash
source .gpujob/common.sh
export XLA_FLAGS="--xla_gpu_enable_command_buffer= --xla_dump_to=$R/dump --xla_dump_hlo_as_text --xla_dump_hlo_module_re=jit__train_step|.*nll_loss.*"
step profile python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --profile=60 --json=$R/profile.json
export XLA_FLAGS=--xla_gpu_enable_command_buffer=
step eval_profile python bench/eval_cost.py --config=configs/bench_ref.py --modes=standard,dynamic --documents=16 --doc_len=2048 --profile=60 --json=$R/eval_profile.json
du -sh $R/dump >> $R/progress.txt
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
