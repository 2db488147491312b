#!/bin/bash
# Session 12, job A (one GPU): time session 11's review fixes (softmax_gradient's backward) against the code before them, and bench/step.py.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
rm -rf /tmp/old; cp -r /tmp/snap /tmp/old; cp .gpujob/var/s12_prefix/unembed.py /tmp/old/fwl_jax/ops/unembed.py
V=plain,fwl_full,fwl_first_order
(cd /tmp/old && PYTHONPATH=/tmp/site:/tmp/old step heads_prefix python .gpujob/heads.py $V 512 $R/heads_prefix.json)
export PYTHONPATH=/tmp/site:/tmp/snap
step heads_final python .gpujob/heads.py $V 512 $R/heads_final.json
step step_final python bench/step.py --config=configs/bench_ref.py --json=$R/step_final.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
