#!/bin/bash
# Session 16, one H200, about 4 minutes: the plain step with the gradient norm read in groups
# of 32 arrays, one group of all, and one reduction an array (optax.tree.norm), baseline between.
source .gpujob/common.sh
NORM_GROUP=32 step g32 python .gpujob/normab.py
NORM_GROUP=0 step g0 python .gpujob/normab.py
NORM_GROUP=256 step g256 python .gpujob/normab.py
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
