#!/bin/bash
# Session 18, job Y (two H200s, about 4 minutes): the shardings cuDNN's partitioner sees under FSDP at bench_ref.
source .gpujob/common.sh
step diag2 python .gpujob/fsdpdiag2.py
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
