#!/usr/bin/env python3
"""A focused, many-round comparison of the allow path's cost ladder — bare
Envoy, the no-op Wasm filter (plain, and restricted to the guard's
capability list), the restricted no-op doing only the header fetch, the
restricted no-op doing all of the guard's host calls, and the guard — with paired
per-round differences, for when `make bench`'s 7 rounds cannot resolve a
~10 µs step on a noisy machine. Run after `make bench` (it uses the built
filters and tools):  .venv/bin/python bench/focus.py [ROUNDS]   (default 16)
Writes bench/results/focus.json.
"""
import subprocess
import sys, json, time, statistics
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import bench as B
from pathlib import Path
import shutil
work = B.BENCH / "work" / "focus"; shutil.rmtree(work, ignore_errors=True); work.mkdir(parents=True)
envoy_bin = subprocess.run([str(B.ROOT / "tools" / "envoy-path")], capture_output=True, text=True, check=True).stdout.strip()
b = B.make_bundle(work, "k10", 10, 1, 0)
env = {"TOKENHUB_BUNDLE_KEY": b["key"]}
envoys = {
  "bare": B.Envoy("bare", work, envoy_bin, []),
  "noop": B.Envoy("noop", work, envoy_bin, B.noop_filters()),
  "noop_r": B.Envoy("noop_r", work, envoy_bin, B.noop_filters(restricted=True)),
  "headers": B.Envoy("headers", work, envoy_bin, B.noop_filters("headers", restricted=True)),
  "glue": B.Envoy("glue", work, envoy_bin, B.noop_filters("headers,source,time,rewrite,metric", restricted=True)),
  "guard": B.Envoy("guard", work, envoy_bin, B.guard_filters(b["live"]), env=env, bundle=b),
}
hdr = B.auth(b["credentials"]["allow"])
res = {k: [] for k in envoys}
try:
    for e in envoys.values(): e.start()
    time.sleep(1)
    for k, e in envoys.items(): B.wrk(e.ports["listen"], hdr, 1, 32)
    names = list(envoys)
    for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 16):
        for k in names[r % len(names):] + names[:r % len(names)]:
            c = B.Case(k, envoys[k], hdr, (200, {}), k, "x")
            res[k].append(B.saturation_run(c, 3, 32)["cpu_us_per_req"])
        print(r, {k: round(v[-1], 1) for k, v in res.items()}, flush=True)
finally:
    for e in envoys.values(): e.stop()
(B.BENCH / "results").mkdir(exist_ok=True)
json.dump(res, open(B.BENCH / "results" / "focus.json", "w"), indent=1)
base = res["bare"]
for k, v in res.items():
    d = [x - y for x, y in zip(v, base)]
    print(f"{k:10s} median {statistics.median(v):7.1f}  min {min(v):7.1f}  paired-over-bare median {statistics.median(d):6.1f}")
for a, b2 in [("guard", "glue"), ("glue", "noop_r"), ("headers", "noop_r"), ("noop_r", "bare"), ("noop", "bare")]:
    d = sorted(x - y for x, y in zip(res[a], res[b2]))
    q = lambda p: d[int(p * (len(d) - 1))]
    print(f"{a}-{b2}: paired median {statistics.median(d):6.1f}  IQR {q(0.25):6.1f}..{q(0.75):6.1f}")
