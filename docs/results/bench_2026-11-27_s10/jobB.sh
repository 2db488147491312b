#!/bin/bash
# Session 10, job B (one GPU): the head's new forward (unnormalised softmax written in the sum's pass,
# bias gradient as a matmul) against the old, side by side: head alone, then the train steps.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
rm -rf /tmp/old; cp -r /tmp/snap /tmp/old; cp .gpujob/var/unembed_old.py /tmp/old/fwl_jax/ops/unembed.py
V=plain,fwl_full,fwl_first_order
(cd /tmp/old && PYTHONPATH=/tmp/site:/tmp/old step heads_old python .gpujob/heads.py $V 512 $R/heads_old.json)
PYTHONPATH=/tmp/site:/tmp/snap step heads_new python .gpujob/heads.py $V 512 $R/heads_new.json
(cd /tmp/old && PYTHONPATH=/tmp/site:/tmp/old step step_old timeout 150 python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/step_old.json)
PYTHONPATH=/tmp/site:/tmp/snap step step_new env XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_module_re=.*train_step.* --xla_dump_hlo_pass_re=NONE" python bench/step.py --config=configs/bench_ref.py --json=$R/step_new.json
PYTHONPATH=/tmp/site:/tmp/snap step heads_profile env PROFILE=1 XLA_FLAGS=--xla_gpu_enable_command_buffer= python .gpujob/heads.py plain,fwl_full 512
mkdir -p $R/dump; for f in $(ls /tmp/dump/*after_optimizations.txt | head -4); do gzip -c $f > $R/dump/$(basename $f).gz; done
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
