#!/bin/bash
# Session 7, job 5 (one GPU): the FWL full head with the chain covering g_U (E2) against E, and A/E2 at chunk 0.
R=/tmp/res; rm -rf $R; mkdir -p $R
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
export PYTHONUNBUFFERED=1
echo "start $(date -u)" > $R/progress.txt
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
run() { local v=$1; shift; rm -rf /tmp/var_$v; cp -r /tmp/snap /tmp/var_$v; cp .gpujob/var/unembed_$v.py /tmp/var_$v/fwl_jax/ops/unembed.py
  (cd /tmp/var_$v && PYTHONPATH=/tmp/site:/tmp/var_$v step heads_$v python .gpujob/heads.py fwl_full $1 $R/heads_$v.json); }
run E2 256,0
run E 256
run A 0
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
