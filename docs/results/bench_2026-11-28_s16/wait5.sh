#!/bin/bash
# Wait up to $1 seconds for /tmp/res/DONE, then pack /tmp/res into $OUT.
end=$(( $(date +%s) + ${1:-560} ))
while [ ! -f /tmp/res/DONE ] && [ $(date +%s) -lt $end ]; do sleep 5; done
cat /tmp/res/progress.txt 2>/dev/null
tail -n 30 /tmp/job.out 2>/dev/null
tar czf $OUT/res.tgz -C /tmp/res . 2>/dev/null
cp /tmp/res/progress.txt $OUT/ 2>/dev/null
[ -f /tmp/res/DONE ] && echo ALLDONE || echo STILL_RUNNING
