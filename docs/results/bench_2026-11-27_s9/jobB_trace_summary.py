"""Session 9, job B: a summary of the raw trace written by jobB_trace_plain.py (one pass of
dynamic evaluation of the plain bench_ref model, 16 random documents of 2,048 tokens, 24
segments of 128 tokens per lane, merge_every=2, cuDNN attention over the cache, command
buffers off). Prints the compute stream's busy time, the device time by JAX scope (the part
after `eval_jaxpr/`, `layers_N` for any layer; empty: XLA gave the op no scope, such as the
merges and the casts of the kernels between the segments of a group), and the largest op
families by (kernel name, launch grid): the grid tells which tensor an op works on.
Usage: python jobB_trace_summary.py plain9_dynamic.xplane.pb.gz"""
import collections
import gzip
import re
import sys

from jax.profiler import ProfileData

data = ProfileData.from_serialized_xspace(gzip.open(sys.argv[1]).read())
scopes, ops, counts = collections.Counter(), collections.Counter(), collections.Counter()
for plane in data.planes:
    if not plane.name.startswith("/device:GPU"):
        continue
    for line in plane.lines:
        events = sorted(line.events, key=lambda e: e.start_ns)
        if "Compute" not in line.name or not events:
            continue
        busy, end = 0, events[0].start_ns
        for e in events:
            busy += max(end, e.start_ns + e.duration_ns) - max(e.start_ns, end)
            end = max(end, e.start_ns + e.duration_ns)
            stats = dict(e.stats)
            parts = re.sub(r"layers_\d+", "layers_N", str(stats.get("name", ""))).split("/")
            scope = "/".join(parts[parts.index("eval_jaxpr") + 1:]) if "eval_jaxpr" in parts else ""
            scopes[scope] += e.duration_ns
            grid = re.search(r"grid:([\d,]+)", stats.get("kernel_details", ""))
            key = (scope[:60], re.sub(r"[._]\d+$", "", e.name)[:45], grid.group(1) if grid else "")
            ops[key] += e.duration_ns
            counts[key] += 1
        span = events[-1].start_ns + events[-1].duration_ns - events[0].start_ns
        print(f"{line.name}: {len(events)} events, busy {busy * 1e-6:.1f} ms of a {span * 1e-6:.1f} ms span")
total = sum(scopes.values())
print(f"\ndevice time {total * 1e-6:.1f} ms; by scope:")
for scope, ns in scopes.most_common(16):
    print(f"  {ns * 1e-6:7.2f} ms {100 * ns / total:5.1f}%  {scope or '(no scope)'}")
print("\nlargest op families (scope | kernel | grid): ms, calls, us a call")
for key, ns in ops.most_common(40):
    print(f"  {ns * 1e-6:7.2f} ms {counts[key]:5d} {ns / counts[key] * 1e-3:8.1f} us  {' | '.join(key)}")
