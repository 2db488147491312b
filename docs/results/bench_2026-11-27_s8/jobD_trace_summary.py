"""Session 8, job D: summaries of the raw traces written by jobD_trace_dyn.py (TAG_standard /
TAG_dynamic .xplane.pb.gz, one pass over 16 random documents of 2,048 tokens, bench_ref;
the dynamic scorer ran the model as bench_ref builds it, fast weights on, SGD on all
parameters, merge_every=2). Prints, per GPU stream, the events, the busy time (the union
of the events' intervals) and the span; then the device time by the op's JAX scope (the
part after `eval_jaxpr/`, `layers_N` for any layer) for the traces named on the command line.
Usage: python jobD_trace_summary.py DIR TAG_NAME [TAG_NAME ...]"""
import collections
import gzip
import re
import sys

from jax.profiler import ProfileData

folder = sys.argv[1]
for tag in sys.argv[2:]:
    data = ProfileData.from_serialized_xspace(gzip.open(f"{folder}/{tag}.xplane.pb.gz").read())
    scopes = collections.Counter()
    print(f"== {tag}")
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            events = sorted((e.start_ns, e.duration_ns, dict(e.stats)) for e in line.events)
            if not events:
                continue
            busy, end = 0, events[0][0]
            for start, duration, stats in events:
                busy += max(end, start + duration) - max(start, end)
                end = max(end, start + duration)
                name = re.sub(r"layers_\d+", "layers_N", str(stats.get("name", "")))
                parts = name.split("/")
                parts = parts[parts.index("eval_jaxpr") + 1:] if "eval_jaxpr" in parts else parts
                scopes["/".join(parts[:3])] += duration
            span = max(s + d for s, d, _ in events) - events[0][0]
            print(f"{line.name}: {len(events)} events, busy {busy * 1e-6:.1f} ms of a {span * 1e-6:.1f} ms span")
    total = sum(scopes.values())
    for scope, ns in scopes.most_common(15):
        print(f"  {ns * 1e-6:7.2f} ms {100 * ns / total:5.1f}%  {scope or '(no scope)'}")
