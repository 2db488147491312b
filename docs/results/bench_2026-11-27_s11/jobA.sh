#!/bin/bash
# Session 11, job A (one GPU): re-time session 10's final head; dump and profile the FWL full head alone.
R=/tmp/res; rm -rf $R; mkdir -p $R
echo "start $(date -u)" > $R/progress.txt
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
export PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/site:/tmp/snap
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; local rc=$?; echo "$(date -u +%T) end $n rc=$rc" >> $R/progress.txt; }
step heads python .gpujob/heads.py plain,fwl_full,fwl_first_order 512 $R/heads.json
XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_module_re=jit_nll_loss" step dump python .gpujob/heads.py fwl_full,plain 512
mkdir -p $R/dump; cp /tmp/dump/*memory-usage-report* /tmp/dump/*buffer-assignment.txt /tmp/dump/*after_optimizations.txt $R/dump/ 2>/dev/null; ls /tmp/dump | head -50 > $R/dump/listing.txt
PROFILE=90 XLA_FLAGS=--xla_gpu_enable_command_buffer= step profile python .gpujob/heads.py fwl_full,plain 512 $R/profile.json
step step_plain python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/step_plain.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
