#!/bin/bash
# Prepared in session 18 for one H100, carried to session 19 (not run yet: no H100 was lent), about 9 minutes: goal 1 and the head on the card the issue
# names, with sessions 15-19's changes. bench/step.py now takes three repeats by default and logs
# the SM clock, temperature and power after each train mean (is the H100 power-capped too, as the H200 is?).
# 1. the whole harness as train.py's batches now run it (rows inside one document: no mask);
# 2. the plain step with packed rows of two documents (cuDNN's masked kernel);
# 3. the per-token gradient in chunks of 256 (the head's memory, 1.81x in session 14).
# Copy docs/results/bench_2026-11-28_s15/common.sh and wait5.sh and this script to .gpujob/ (git-ignored),
# then run `bash .gpujob/next_jobH100.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
step step python bench/step.py --config=configs/bench_ref.py --json=$R/step.json
step packed python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=2 --json=$R/packed.json
step gradchunk python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --config.fwl.gradient_chunk=256 --json=$R/gradchunk.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
