#!/usr/bin/env python3
"""A focused, many-round check of the scale target: the guard's allow path
at 10 keys + 1 CIDR against 100 000 keys, 10 000 CIDRs and both, with
paired per-round ratios, for when `make bench`'s 7 rounds (one Envoy
process per configuration) cannot tell a few percent from noise.
Run after `make bench` (it uses the built filter and tools):
  .venv/bin/python bench/scale_focus.py [ROUNDS]   (default 16)
Writes bench/results/scale_focus.json.
"""
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402

work = B.BENCH / "work" / "scale_focus"
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
envoy_bin = subprocess.run([str(B.ROOT / "tools" / "envoy-path")], capture_output=True, text=True,
                           check=True).stdout.strip()
sizes = {"k10": (10, 1), "k100000": (100_000, 1), "c10000": (10, 10_000), "k100000c10000": (100_000, 10_000)}
bundles = {name: B.make_bundle(work, name, k, c, 0) for name, (k, c) in sizes.items()}
envoys = {name: B.Envoy(name, work, envoy_bin, B.guard_filters(b["live"]), env={"TOKENHUB_BUNDLE_KEY": b["key"]},
                        bundle=b) for name, b in bundles.items()}
hdr = {name: B.auth(b["credentials"]["allow"]) for name, b in bundles.items()}
res = {k: [] for k in envoys}
try:
    for e in envoys.values():
        e.start()
    time.sleep(1)
    for k, e in envoys.items():
        B.wrk(e.ports["listen"], hdr[k], 1, 32)
    names = list(envoys)
    for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 16):
        for k in names[r % len(names):] + names[:r % len(names)]:
            c = B.Case(k, envoys[k], hdr[k], (200, {}), k, "x")
            res[k].append(B.saturation_run(c, 3, 32)["cpu_us_per_req"])
        print(r, {k: round(v[-1], 1) for k, v in res.items()}, flush=True)
finally:
    for e in envoys.values():
        e.stop()
(B.BENCH / "results").mkdir(exist_ok=True)
json.dump(res, open(B.BENCH / "results" / "scale_focus.json", "w"), indent=1)
for k in names[1:]:
    ratios = sorted(x / y for x, y in zip(res[k], res["k10"]))
    q = lambda p: ratios[int(p * (len(ratios) - 1))]  # noqa: E731
    print(f"{k:14s} median {statistics.median(res[k]):7.1f} µs vs k10 {statistics.median(res['k10']):7.1f} µs; "
          f"paired ratio median {statistics.median(ratios):.3f} (IQR {q(0.25):.3f}–{q(0.75):.3f})")
