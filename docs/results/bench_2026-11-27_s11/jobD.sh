#!/bin/bash
# Session 11, job D (one GPU): G-first backward without a barrier on G, against job B's code; train steps if the head got leaner.
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
XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_module_re=jit_nll_loss" step heads_new python .gpujob/heads.py $V 512 $R/heads_new.json
mkdir -p $R/dump; cp /tmp/dump/*memory-usage-report* $R/dump/ 2>/dev/null; cp $(ls -S /tmp/dump/*after_optimizations.txt | head -1) $R/dump/
if python -c "import json,sys; o=json.load(open('$R/heads_old.json')); n=json.load(open('$R/heads_new.json')); sys.exit(0 if n['fwl_full/512']['head_temp_gib'] < o['fwl_full/512']['head_temp_gib'] - 0.02 else 1)"; then
  step step_new python bench/step.py --config=configs/bench_ref.py --json=$R/step_new.json
fi
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
