#!/bin/bash
# Session 17, job R (one H200, about 6 minutes): the whole step with fwl.gradient_chunk 0 (= unembed_chunk,
# 512) and 256. Copy docs/results/bench_2026-11-28_s15/common.sh and wait5.sh and this script to .gpujob/
# (git-ignored), then run `bash .gpujob/jobR.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
step chunk0 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --json=$R/chunk0.json
step chunk256 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --config.fwl.gradient_chunk=256 --json=$R/chunk256.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
