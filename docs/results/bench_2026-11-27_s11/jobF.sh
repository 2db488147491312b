#!/bin/bash
# Session 11, job F (one GPU): the chunks' unembedding gradients summed apart (a barrier), against job B's code.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
rm -rf /tmp/old; cp -r /tmp/snap /tmp/old; for f in unembed fwl; do cp .gpujob/var/s11_b/$f.py /tmp/old/fwl_jax/ops/$f.py; done
V=plain,fwl_full,fwl_first_order
(cd /tmp/old && PYTHONPATH=/tmp/site:/tmp/old step heads_old python .gpujob/heads.py $V 512 $R/heads_old.json)
export PYTHONPATH=/tmp/site:/tmp/snap
step heads_new python .gpujob/heads.py $V 512 $R/heads_new.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
