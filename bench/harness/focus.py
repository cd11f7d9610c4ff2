"""Focused many-round runs, for steps the main run's 7 rounds cannot resolve
on a noisy machine (run after `make bench`: they use its built filters and
tools). Both write a JSON file into bench/results/ that the main report
shows with its date.

- `bench.py focus [ROUNDS]`: the allow path's cost ladder — bare, the no-op
  Wasm filter (plain, and restricted to the guard's capability list), the
  restricted no-op making only the header fetch, making every host call of
  the guard, and the guard — as paired per-round differences (focus.json).
- `bench.py scale-focus [ROUNDS]`: the guard's allow path at 10 keys + 1 CIDR
  against 100 000 keys, 10 000 CIDRs and both, as paired per-round ratios
  (scale_focus.json).
"""

import json
import shutil
import statistics
import time

from .common import BENCH, envoy_binary
from .configs import guard_filters, noop_filters
from .envoy import Envoy
from .load import saturation_run, wrk
from .plan import Case, auth, make_bundle


def _interleaved(envoys, headers, rounds):
    """CPU µs/request per Envoy, `rounds` interleaved rounds × 3 s."""
    res = {k: [] for k in envoys}
    try:
        for e in envoys.values():
            e.start()
        time.sleep(1)
        for k, e in envoys.items():
            wrk(e.ports["listen"], headers[k], 1, 32)
        names = list(envoys)
        for r in range(rounds):
            for k in names[r % len(names):] + names[:r % len(names)]:
                c = Case(k, envoys[k], headers[k], (200, {}), k, "x")
                res[k].append(saturation_run(c, 3, 32)["cpu_us_per_req"])
            print(r, {k: round(v[-1], 1) for k, v in res.items()}, flush=True)
    finally:
        for e in envoys.values():
            e.stop()
    return res


def _work(name):
    work = BENCH / "work" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def _save(name, res):
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / name).write_text(json.dumps(res, indent=1))


def _quartiles(xs):
    xs = sorted(xs)
    return xs[int(0.25 * (len(xs) - 1))], xs[int(0.75 * (len(xs) - 1))]


def focus(rounds):
    work = _work("focus")
    envoy_bin = envoy_binary()
    b = make_bundle(work, "k10", 10, 1, 0)
    envoys = {
        "bare": Envoy("bare", work, envoy_bin, []),
        "noop": Envoy("noop", work, envoy_bin, noop_filters()),
        "noop_r": Envoy("noop_r", work, envoy_bin, noop_filters(restricted=True)),
        "headers": Envoy("headers", work, envoy_bin, noop_filters("headers", restricted=True)),
        "glue": Envoy("glue", work, envoy_bin, noop_filters("headers,source,time,rewrite,metric", restricted=True)),
        "guard": Envoy("guard", work, envoy_bin, guard_filters(b["live"]), env={"TOKENHUB_BUNDLE_KEY": b["key"]},
                       bundle=b),
    }
    hdr = auth(b["credentials"]["allow"])
    res = _interleaved(envoys, {k: hdr for k in envoys}, rounds)
    _save("focus.json", res)
    for k, v in res.items():
        d = [x - y for x, y in zip(v, res["bare"])]
        print(f"{k:10s} median {statistics.median(v):7.1f}  min {min(v):7.1f}  "
              f"paired-over-bare median {statistics.median(d):6.1f}")
    for a, b2 in [("guard", "glue"), ("glue", "noop_r"), ("headers", "noop_r"), ("noop_r", "bare"), ("noop", "bare")]:
        d = [x - y for x, y in zip(res[a], res[b2])]
        lo, hi = _quartiles(d)
        print(f"{a}-{b2}: paired median {statistics.median(d):6.1f}  IQR {lo:6.1f}..{hi:6.1f}")


def scale_focus(rounds):
    work = _work("scale_focus")
    envoy_bin = envoy_binary()
    sizes = {"k10": (10, 1), "k100000": (100_000, 1), "c10000": (10, 10_000), "k100000c10000": (100_000, 10_000)}
    bundles = {name: make_bundle(work, name, k, c, 0) for name, (k, c) in sizes.items()}
    envoys = {name: Envoy(name, work, envoy_bin, guard_filters(b["live"]), env={"TOKENHUB_BUNDLE_KEY": b["key"]},
                          bundle=b) for name, b in bundles.items()}
    res = _interleaved(envoys, {name: auth(b["credentials"]["allow"]) for name, b in bundles.items()}, rounds)
    _save("scale_focus.json", res)
    for k in list(res)[1:]:
        ratios = [x / y for x, y in zip(res[k], res["k10"])]
        lo, hi = _quartiles(ratios)
        print(f"{k:14s} median {statistics.median(res[k]):7.1f} µs vs k10 {statistics.median(res['k10']):7.1f} µs; "
              f"paired ratio median {statistics.median(ratios):.3f} (IQR {lo:.3f}–{hi:.3f})")
