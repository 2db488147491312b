"""Bytes each top-level op of a while loop's body reads and writes (operands plus outputs, by
shape), from an XLA dump's optimized HLO text, largest first: an upper bound on one loop
iteration's memory traffic (an in-place op such as a scatter counts its whole buffer).

python hlo_traffic.py MODULE.sm_9.0a_gpu_after_optimizations.txt [TOP]
"""
import re, sys, collections
F = sys.argv[1]
text = open(F).read()
# split computations
comps = {}
cur = None
for line in text.splitlines():
    m = re.match(r'^(ENTRY )?%(\S+) .*\{$', line)
    if m:
        cur = m.group(2); comps[cur] = []; continue
    if line.startswith('}'):
        cur = None; continue
    if cur: comps[cur].append(line)
DT = {'f32':4,'bf16':2,'s32':4,'pred':1,'u32':4,'f16':2,'s8':1,'u8':1,'s64':8}
def nbytes(shape_str):
    tot = 0
    for dt, dims in re.findall(r'\b(f32|bf16|s32|pred|u32|f16|s64|u8|s8)\[([0-9,]*)\]', shape_str):
        n = 1
        for d in dims.split(','):
            if d: n *= int(d)
        tot += n * DT[dt]
    return tot
def elem(shape, k):
    if not k: return shape
    parts = re.findall(r'(?:f32|bf16|s32|pred|u32|f16|s64|u8|s8)\[[0-9,]*\]', shape)
    return parts[int(k)] if int(k) < len(parts) else ''
# find computations that are while bodies
bodies = set(re.findall(r'body=%(\S+?)[,\s]', text))
print("while bodies:", bodies)
shapes = {}
for name, lines in comps.items():
    if name not in bodies: continue
    for l in lines:
        m = re.match(r'\s*(?:ROOT )?%(\S+) = (.+?) (\w[\w-]*)\(', l)
        if m: shapes[m.group(1)] = m.group(2)
for body in bodies:
    rows = []
    for l in comps[body]:
        m = re.match(r'\s*(?:ROOT )?%(\S+) = (.+?) ([\w-]+)\((.*)', l)
        if not m: continue
        name, out, op, rest = m.groups()
        if op in ('parameter','get-tuple-element','tuple','bitcast','constant'): continue
        args = re.findall(r'%([\w.\-]+)(?:#(\d+))?', rest.split('kind=')[0] if op == 'fusion' else rest.split('),')[0])
        inb = sum(nbytes(elem(shapes.get(a,''), k)) for a, k in args)
        calls = re.search(r'calls=%(\S+?)[,\s]', rest)
        rows.append((inb + nbytes(out), name, op, out[:80], calls.group(1) if calls else ''))
    rows.sort(reverse=True)
    print(body, "instructions", len(rows), "total MB", sum(r[0] for r in rows)/1e6)
    for r in rows[:int(sys.argv[2]) if len(sys.argv)>2 else 40]:
        print(f"{r[0]/1e6:9.1f} MB {r[1]:40s} {r[2]:12s} {r[3]}")
