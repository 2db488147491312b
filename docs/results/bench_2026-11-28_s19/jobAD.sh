#!/bin/bash
# Session 19, job AD (one H200, about 3 minutes): does the card slow down as it runs? bench/step.py's plain step,
# eight means of 20 steps, the SM clock, temperature and power read after each (new train_gpu field).
source .gpujob/common.sh
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,power.limit,clocks_throttle_reasons.active --format=csv >> $R/progress.txt 2>&1
step step python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=1 --repeats=8 --steps=20 --json=$R/step.json
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,power.limit,clocks_throttle_reasons.active --format=csv >> $R/progress.txt 2>&1
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
