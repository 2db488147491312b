#!/bin/bash
# Session 7, job 2 (two GPUs): heads A/E and bench/step.py on GPU 0, then bench/scaling.py on both.
R=/tmp/res; rm -rf $R; mkdir -p $R
rm -rf /tmp/snap; mkdir /tmp/snap; tar cf - --exclude=.whl --exclude=.git . | tar xf - -C /tmp/snap
cd /tmp/snap
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
echo "start $(date -u)" > $R/progress.txt
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> $R/progress.txt
step() { echo "$(date -u +%T) begin $1" >> $R/progress.txt; local n=$1; shift; "$@" > $R/$n.log 2>&1; echo "$(date -u +%T) end $n rc=$?" >> $R/progress.txt; }
V=plain,fwl_full,fwl_first_order
for v in A E; do
  rm -rf /tmp/var_$v; cp -r /tmp/snap /tmp/var_$v; cp .gpujob/var/unembed_$v.py /tmp/var_$v/fwl_jax/ops/unembed.py
  (cd /tmp/var_$v && PYTHONPATH=/tmp/site:/tmp/var_$v step heads_$v env CUDA_VISIBLE_DEVICES=0 python .gpujob/heads.py $V 256,512 $R/heads_$v.json)
done
export PYTHONPATH=/tmp/site:/tmp/snap
step step env CUDA_VISIBLE_DEVICES=0 python bench/step.py --config=configs/bench_ref.py --json=$R/step.json
step scaling python bench/scaling.py --config=configs/bench_ref.py --devices=1,2 --layouts=data,fsdp --steps=5 --warmup=2 --json=$R/scaling.json
step scaling_scan python bench/scaling.py --config=configs/bench_ref.py --config.model.scan_layers=True --config.model.remat=dots_saveable --devices=1,2 --layouts=data,fsdp --steps=5 --warmup=2 --json=$R/scaling_scan.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
