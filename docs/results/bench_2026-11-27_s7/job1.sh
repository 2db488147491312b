#!/bin/bash
# Session 7, job 1 (one GPU): head memory variants (goal 3), eval_cost baseline, dynamic profile + HLO dump.
R=/tmp/res; rm -rf $R; mkdir -p $R
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
export PYTHONUNBUFFERED=1
echo "start $(date -u)" > $R/progress.txt
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; echo "$(date -u +%T) end $n rc=$?" >> $R/progress.txt; }
V=plain,fwl_full,fwl_first_order
for v in A B C D; do
  rm -rf /tmp/var_$v; cp -r /tmp/snap /tmp/var_$v; cp .gpujob/var/unembed_$v.py /tmp/var_$v/fwl_jax/ops/unembed.py
  (cd /tmp/var_$v && PYTHONPATH=/tmp/site:/tmp/var_$v step heads_$v python .gpujob/heads.py $V 256 $R/heads_$v.json)
done
export PYTHONPATH=/tmp/site:/tmp/snap
step eval_cost python bench/eval_cost.py --config=configs/bench_ref.py --json=$R/eval_cost.json
step dyn_profile env XLA_FLAGS="--xla_gpu_enable_command_buffer= --xla_dump_to=$R/dump --xla_dump_hlo_module_re=.*window.* --xla_dump_hlo_pass_re=NONE" python bench/eval_cost.py --config=configs/bench_ref.py --documents=16 --doc_len=1024 --profile=150 --json=$R/dyn_profile.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
