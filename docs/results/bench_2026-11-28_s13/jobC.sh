#!/bin/bash
# Session 13, job C (one H100): bench/linear_attention.py over its default grid (goal 4 on the card the issue names).
source .gpujob/common.sh
step linear_attention python bench/linear_attention.py --json=$R/linear_attention.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
