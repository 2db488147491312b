#!/bin/bash
# Session 16, one H200, under a minute: the single-kernel softmax prototype (softmax_kernel.py),
# job M2: more rows a program and deeper pipelining (job M1 ran `python .gpujob/softmax_kernel.py`,
# the defaults, with the plain head alone patched to use the kernel).
source .gpujob/common.sh
ROWS=16,32 HEAD=0 step kernel python .gpujob/softmax_kernel.py
ROWS=8,16 STAGES=4 HEAD=0 step kernel4 python .gpujob/softmax_kernel.py
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
