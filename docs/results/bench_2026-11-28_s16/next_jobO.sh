#!/bin/bash
# Prepared for session 17 (one GPU, H100 if lent; not run yet), about 8-10 minutes (run it in the
# background and collect with a second `wait5.sh` call if it outlives the first): does dynamic
# evaluation's cost over standard fall with more lanes? Session 14's trace of it (H100) had about
# twice the device time that its bytes (the lanes' kernel copies) and its arithmetic (a forward and
# a backward at standard's rate) account for, which fits a fixed cost a segment step (hundreds of
# small kernels a segment of 16 lanes x 128 tokens) that more lanes would spread. The benchmark has
# always run 16 lanes (--documents=16); eval.py's default eval.batch_size is 32. Each lane keeps a
# float32 and a bfloat16 copy of the 124M parameters, about 0.75 GB: 64 lanes need about 48 GB.
# Copy docs/results/bench_2026-11-28_s15/common.sh and wait5.sh and this script to .gpujob/ (git-ignored), then run
# `bash .gpujob/next_jobO.sh` as the developers' guide says (carry .whl and .gpujob).
source .gpujob/common.sh
for n in 16 32 64; do
  step lanes$n python bench/eval_cost.py --config=configs/bench_ref.py --modes=standard,dynamic \
    --documents=$n --doc_len=2048 --config.eval.batch_size=$n --json=$R/lanes$n.json
done
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
