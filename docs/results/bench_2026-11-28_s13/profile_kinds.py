"""Session 13: the plain train step's traced device time (job D, `bench/step.py --profile=800`,
one H100, command buffers off) summed by kind of kernel, read from the HLO op names:
matmuls (cuBLAS custom calls, cuBLASLt, Triton GEMM fusions), cuDNN attention, and the
memory-bound fusions (loop_*, input_*, wrapped_*), the last listed by fusion name.
Usage: python profile_kinds.py jobD_plain_profile.json"""
import collections
import json
import re
import sys

profile = json.load(open(sys.argv[1]))["rows"]["plain"]["train_profile"]
kinds, fusions = collections.defaultdict(float), collections.defaultdict(lambda: [0.0, 0])
for op in profile["ops"]:
    name = re.sub(r"\.\d+$", "", op["op"])
    if name.startswith(("custom-call", "cublas", "gemm_fusion")):
        kind = "matmul (cuBLAS, cuBLASLt, Triton GEMM)"
    elif name.startswith("dot_product_attention"):
        kind = "attention (cuDNN)"
    elif name.startswith(("loop_", "input_", "wrapped_", "fusion")):
        kind = "memory-bound fusions"
        fusions[name][0] += op["seconds"]
        fusions[name][1] += op["calls"]
    else:
        kind = name
    kinds[kind] += op["seconds"]
listed = sum(o["seconds"] for o in profile["ops"])
print(f"{profile['total_s'] * 1e3:.1f} ms traced, {listed * 1e3:.1f} ms in the {len(profile['ops'])} ops listed")
for kind, s in sorted(kinds.items(), key=lambda kv: -kv[1]):
    print(f"  {s * 1e3:6.2f} ms {s / profile['total_s']:6.1%}  {kind}")
print("memory-bound fusions by name:")
for name, (s, calls) in sorted(fusions.items(), key=lambda kv: -kv[1][0])[:12]:
    print(f"  {s * 1e3:6.2f} ms {calls:4d} calls {s / calls * 1e6:7.1f} us a call  {name}")
