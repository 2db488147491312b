#!/bin/bash
# Session 8, job D (one GPU): raw traces of standard and dynamic evaluation (merge_every=2), command buffers off and on.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/snap
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step trace_on python .gpujob/trace_dyn.py on
step trace_off env XLA_FLAGS=--xla_gpu_enable_command_buffer= python .gpujob/trace_dyn.py off
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
