#!/bin/bash
# Session 19, job Z (four H200s, about 6 minutes): is the masked cuDNN attention's extra cost the bias
# gradient jax always asks for? Each experiment twice in one process a GPU: as shipped and with
# should_export_dbias patched to False (.gpujob/nodbias.py). Also goal 4's small shape with repeats.
source .gpujob/common.sh
(export CUDA_VISIBLE_DEVICES=0
 step dbias_check python .gpujob/dbias_check.py
 step attention python bench/attention.py --segments=1,4 --impls=cudnn,cudnn_packed --json=$R/attention.json
 step attention_nodbias python .gpujob/nodbias.py bench/attention.py --segments=1,4 --impls=cudnn --json=$R/attention_nodbias.json
 step la_small python bench/linear_attention.py --grid="16,4096,64,64" --repeats=5 --json=$R/la_small.json) &
(export CUDA_VISIBLE_DEVICES=1
 step step_docs4 python bench/step.py --config=configs/bench_ref.py --variants=plain --documents=4 --json=$R/step_docs4.json
 step step_docs4_nodbias python .gpujob/nodbias.py bench/step.py --config=configs/bench_ref.py --variants=plain --documents=4 --json=$R/step_docs4_nodbias.json) &
(export CUDA_VISIBLE_DEVICES=2
 step cache python bench/attention.py --cache_segment=128 --shape=16,1024,12,64 --json=$R/cache.json
 step cache_nodbias python .gpujob/nodbias.py bench/attention.py --cache_segment=128 --shape=16,1024,12,64 --json=$R/cache_nodbias.json
 step evalcost python bench/eval_cost.py --config=configs/bench_ref.py --documents=32 --doc_len=2048 --modes=standard,dynamic --json=$R/evalcost.json) &
(export CUDA_VISIBLE_DEVICES=3
 step evalcost_nodbias python .gpujob/nodbias.py bench/eval_cost.py --config=configs/bench_ref.py --documents=32 --doc_len=2048 --modes=standard,dynamic --json=$R/evalcost_nodbias.json
 step step_docs0 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full --documents=0 --json=$R/step_docs0.json) &
wait
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
