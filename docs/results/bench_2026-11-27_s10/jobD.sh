#!/bin/bash
# Session 10, job D (one GPU): softmax_gradient's backward in two halves of each chunk: head alone
# (against job C's code for the FWL heads, same machine), then the plain and FWL `full` train steps.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
rm -rf /tmp/old; cp -r /tmp/snap /tmp/old; cp .gpujob/var/unembed_c.py /tmp/old/fwl_jax/ops/unembed.py
PYTHONPATH=/tmp/site:/tmp/snap step heads_new python .gpujob/heads.py plain,fwl_full,fwl_first_order 512 $R/heads_new.json
(cd /tmp/old && PYTHONPATH=/tmp/site:/tmp/old step heads_jobC python .gpujob/heads.py fwl_full,fwl_first_order 512 $R/heads_jobC.json)
PYTHONPATH=/tmp/site:/tmp/snap step step_new python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --json=$R/step_new.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
