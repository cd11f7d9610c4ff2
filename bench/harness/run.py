"""`bench.py` (no subcommand): the main run — every configuration in
interleaved rounds (saturation, then a fixed rate), bundle reloads, Envoy's
instructions per request under callgrind, the native decision; then the
report and chart."""

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .callgrind import callgrind, criterion, envoy_instructions, v8_decision
from .common import BENCH, TOOLS_BIN, envoy_binary, log
from .load import fixed_rate, saturation_run, wrk
from .plan import build_plan, reload_times, sanity_check
from .report import chart, report, report_from


def add_arguments(ap):
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one short round: proves the harness runs")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per saturation run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--lat-rounds", type=int, default=3)
    ap.add_argument("--lat-duration", type=float, default=4.0)
    ap.add_argument("--lat-fraction", type=float, default=0.5,
                    help="fixed rate = this × the slowest configuration's best-round saturated req/s")
    ap.add_argument("--reloads", type=int, default=3, help="republishes timed per key count")
    ap.add_argument("--beyond-keys", type=int, default=1_000_000,
                    help="one more key count, beyond the targets' 100 000 (scale table only; 0 skips it)")
    ap.add_argument("--only", help="comma-separated case names (bare and wasm-noop always run)")
    ap.add_argument("--no-native-bench", action="store_true", help="skip criterion and callgrind")
    ap.add_argument("--no-instructions", action="store_true",
                    help="skip counting Envoy's instructions per request under callgrind")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--report-from", metavar="RESULTS_JSON", help="only rebuild the report and chart from a results.json")


def run(args):
    if args.report_from:
        report_from(args.report_from, Path(args.out))
        return
    if args.smoke:
        args.rounds, args.duration, args.lat_rounds, args.lat_duration = 1, 1, 1, 0.5
    t_start = time.time()
    work = BENCH / "work" / ("smoke" if args.smoke else "run")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    out_dir = Path(args.out) if not args.smoke else work / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    envoy_bin = envoy_binary()
    meta = {
        "when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "envoy_version": re.search(r"/(\d+\.\d+\.\d+)/", subprocess.run([envoy_bin, "--version"], capture_output=True,
                                                                         text=True).stdout).group(1),
        "rounds": args.rounds, "duration": args.duration, "connections": args.connections,
        "lat_rounds": args.lat_rounds, "lat_duration": args.lat_duration,
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "smoke": args.smoke,
        "command": "bench/run.sh " + shlex.join(sys.argv[1:]),
    }
    log(f"load average {meta['load_start']}")

    envoys, cases, bundles, sizes = build_plan(args, work, envoy_bin)
    try:
        # One of each kind through envoy --mode validate (the rest differ only
        # in sizes, and a bad one would fail to start anyway).
        kinds = {}
        for name, e in envoys.items():
            kinds.setdefault(re.sub(r"-.*", "", name) if not name.startswith("wasm-") else "wasm-ladder", e)
        for e in kinds.values():
            e.validate()
        log(f"Envoy configurations pass envoy --mode validate ({', '.join(e.name for e in kinds.values())}); "
            f"starting {len(envoys)} Envoys")
        for e in envoys.values():
            e.start()
        # Startup RSS after the initial bundle load (ready = listeners up; the
        # guard's ECDS load is logged): wait for the loaded lines.
        for e in envoys.values():
            if e.bundle:
                e.wait_bundle_loaded(120)
        time.sleep(1)
        for e in envoys.values():
            e.startup_rss = e.rss_bytes()
            e.vm_count = e.counter("wasm.wasm_vm_count") if e.bundle else 0
        sanity_check(cases)

        log("warm-up (V8 tiers the Wasm code up under load)")
        for c in cases:
            wrk(c.envoy.ports["listen"], c.headers, 1 if not args.smoke else 0.5, args.connections)

        for r in range(args.rounds):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for c in order:
                res = saturation_run(c, args.duration, args.connections)
                if res["wrong_status"] or res["socket_errors"]:
                    raise SystemExit(f"bench: {c.name}: {res['wrong_status']} responses with an unexpected status "
                                     f"(Envoy's classes {res['classes']}), {res['socket_errors']} socket errors")
                c.sat.append(res)
            log(f"saturation round {r + 1}/{args.rounds} done: " + ", ".join(
                f"{c.name} {c.sat[-1]['cpu_us_per_req']:.1f}µs" for c in cases))

        # Capacity of a configuration = its best round (a stall in one round
        # must not set the rate); the rate is a fraction of the lowest.
        slowest = min(max(x["rps"] for x in c.sat) for c in cases)
        rate = max(100, int(slowest * args.lat_fraction / 100) * 100)
        meta["latency_rate"] = rate
        log(f"latency at a fixed {rate} req/s ({args.lat_fraction:.0%} of the lowest best-round saturation)")
        for r in range(args.lat_rounds):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for c in order:
                if not c.latency:
                    continue
                c.lat.append(fixed_rate(c.envoy.ports["listen"], c.headers, rate, args.lat_duration,
                                        0.5 if args.smoke else 1.0, 4))

        for e in envoys.values():
            e.final_rss = e.rss_bytes()

        log("bundle reloads")
        reloads = {}
        for bname in ("k10", f"k{sizes['mid']}", f"k{sizes['big']}", f"k{sizes['huge']}", f"k{sizes['huge']}-delta"):
            e = envoys.get(f"guard-{bname}")
            if e:
                reloads[bname] = reload_times(e, bundles[bname])
                log(f"  {bname}: " + ", ".join(f"{x.get('all_loaded_s', float('nan')) * 1000:.0f} ms"
                                               for x in reloads[bname]))
    finally:
        for e in envoys.values():
            e.stop()
    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    instructions = {}
    if not args.no_instructions:
        log("instructions per request under callgrind")
        counted = [c for c in cases if c.keys != sizes["huge"] or not sizes["huge"]]
        if args.smoke:
            # ext_authz too, so the service's own callgrind path cannot rot.
            counted = [c for c in counted if c.envoy.name in ("bare", "guard-k10", "ext-authz")]
        instructions = envoy_instructions(counted, work, args.smoke)

    mem = [json.loads(subprocess.run([str(TOOLS_BIN / "decide-count"), "--keys", str(k), "--memory"],
                                     capture_output=True, text=True, check=True).stdout)
           for k in (10, sizes["mid"], sizes["big"], sizes["huge"]) if k]
    crit, cg, v8 = {}, {}, {}
    if not args.no_native_bench:
        log("native decision: criterion")
        crit = criterion(args.smoke)
        log("native decision: callgrind")
        cg = callgrind(work, args.smoke)
        log("decision under V8 (node, wasm32-wasip1)")
        v8 = v8_decision(args.smoke)

    meta["wall_s"] = time.time() - t_start
    raw = {
        "meta": meta,
        "sizes": sizes,
        "cases": {c.name: {"label": c.label, "group": c.group, "saturation": c.sat, "latency": c.lat,
                           "envoy": c.envoy.name} for c in cases},
        "envoys": {k: {"startup_rss": e.startup_rss, "final_rss": e.final_rss, "vm_count": e.vm_count,
                       "ports": e.ports}
                   for k, e in envoys.items()},
        "bundles": {k: {kk: vv for kk, vv in b.items() if kk in ("keys", "cidrs", "ecds_bytes", "publish_ms",
                                                                 "generate_ms", "versions", "ecds_file",
                                                                 "next_bytes")}
                    for k, b in bundles.items()},
        "reloads": reloads,
        "native_memory": mem,
        "criterion": crit,
        "v8_decision": v8,
        "callgrind": {k: v for k, v in cg.items() if not k.startswith("_")},
        "envoy_instructions": instructions,
    }
    (out_dir / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    text, cpu = report(cases, bundles, envoys, reloads, crit, cg, mem, sizes, meta, out_dir, v8, instructions)
    chart(cases, out_dir, cpu)
    print(text)
    log(f"results in {out_dir} ({meta['wall_s']:.0f} s)")

