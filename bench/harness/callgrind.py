"""Instructions under callgrind: per request through Envoy (and the
ext_authz service beside it), and per native decision; plus the native
decision under criterion and under Node's V8."""

import json
import os
import re
import shutil
import subprocess
import time

from .common import LOAD_CPU, ROOT, TOOLS, TOOLS_BIN, log
from .load import keep_alive_requests

SIDECAR_SUFFIX = ":service"


def callgrind_part_total(prefix, pid, part):
    """Instructions in one callgrind dump, summed over Envoy's threads."""
    total = 0
    for f in prefix.parent.glob(f"{prefix.name}.{pid}.{part}-*"):
        # "totals:" is the file's last line: present only once it is complete.
        m = re.search(r"^totals:\s+(\d+)", f.read_text(errors="replace"), re.M)
        total += int(m.group(1)) if m else 0
    return total


def envoy_instructions(cases, work, smoke):
    """Instructions Envoy executes per request, counted by callgrind:
    deterministic (two runs agree to ~0.1 %) where CPU time on this machine
    is not. Each Envoy runs once more under valgrind with instrumentation
    off while it starts and warms up (V8 tiers the Wasm code up the same
    way), then per case: counters zeroed, n requests on one keep-alive
    connection, a dump. User-space instructions only: no kernel time, no
    cache misses. A configuration with a sidecar (the ext_authz service)
    runs it under callgrind too, counted over the same requests, under the
    case's name + ":service". A case may send a POST (`method`, `body`)
    and count fewer requests (`instr_requests`: (n, warm-up), e.g. for a
    1 MiB response)."""
    n_default, warm_default = (50, 50) if smoke else (500, 1000)

    def send(port, c, count):
        return keep_alive_requests(port, c.headers, count, getattr(c, "method", "GET"), getattr(c, "body", None))

    def sizes(c):
        return getattr(c, "instr_requests", None) or (n_default, warm_default)
    prefix = work / "envoy-callgrind" / "cg"
    side_prefix = work / "envoy-callgrind" / "sidecar"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    by_envoy = {}
    for c in cases:
        by_envoy.setdefault(c.envoy.name, []).append(c)
    out = {}
    for group in by_envoy.values():
        e = group[0].envoy
        e.write_config()
        grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes", "--smc-check=all-non-file"]
        e.start(wrapper=[*grind, f"--callgrind-out-file={prefix}.%p"], ready_timeout=600,
                sidecar_wrapper=[*grind, f"--callgrind-out-file={side_prefix}.%p"])
        try:
            if e.bundle:
                e.wait_bundle_loaded(600)
            port = e.ports["listen"]
            for c in group:
                send(port, c, sizes(c)[1])

            grinds = [(prefix, e.proc.pid, "")]
            if e.sidecar:
                grinds.append((side_prefix, e.sidecar.proc.pid, SIDECAR_SUFFIX))

            def control(*command):
                for _, pid, _ in grinds:
                    subprocess.run(["callgrind_control", *command, str(pid)], check=True, capture_output=True,
                                   timeout=120)

            control("-i", "on")
            for part, c in enumerate(group, start=1):
                n = sizes(c)[0]
                send(port, c, min(20, n))
                control("-z")
                statuses = send(port, c, n)
                control("-d")
                if statuses != {c.expect[0]: n}:
                    raise SystemExit(f"bench: {c.name} under callgrind: statuses {statuses}, expected {c.expect[0]}")
                for pfx, pid, suffix in grinds:
                    deadline = time.time() + 60
                    total = 0
                    while time.time() < deadline and not total:
                        total = callgrind_part_total(pfx, pid, part)
                        time.sleep(0.2)
                    out[c.name + suffix] = total / n
                    log(f"  {c.name + suffix}: {out[c.name + suffix]:,.0f} instructions/request")
        finally:
            e.stop()
    return out


def criterion(smoke):
    env = dict(os.environ)
    if smoke:
        env["BENCH_QUICK"] = "1"
    cmd = ["taskset", "-c", LOAD_CPU, "cargo", "bench", "--quiet", "--bench", "decide"]
    if smoke:
        cmd += ["--", "--test"]
    r = subprocess.run(cmd, cwd=TOOLS, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"bench: criterion failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    out = {}
    if smoke:
        return out
    base = TOOLS / "target" / "criterion" / "decide"
    for est in sorted(base.glob("*/*/new/estimates.json")):
        case, size = est.parent.parent.parent.name, est.parent.parent.name
        e = json.loads(est.read_text())
        out[f"{case} {size}"] = {"median_ns": e["median"]["point_estimate"],
                                 "lo_ns": e["median"]["confidence_interval"]["lower_bound"],
                                 "hi_ns": e["median"]["confidence_interval"]["upper_bound"]}
    return out


def v8_decision(smoke):
    """The native decision driver compiled to wasm32-wasip1 and run under
    Node's V8 (TurboFan): µs per decision inside a Wasm VM, with no host
    calls. Two iteration counts; the difference cancels start-up."""
    wasm = TOOLS / "target" / "wasm32-wasip1" / "release" / "decide-count.wasm"
    if not shutil.which("node") or not wasm.exists():
        log("node or the wasm decide-count missing: skipping the V8 timing")
        return {}
    big = 200 if smoke else 100_000
    n1, n2 = (100, 200) if smoke else (50_000, 250_000)
    out = {}
    for keys, case in [(10, "allow"), (10, "deny-checksum"), (10, "deny-unknown"), (10, "deny-ip"), (big, "allow")]:
        times = []
        for n in (n1, n2):
            t = time.time()
            subprocess.run(["taskset", "-c", LOAD_CPU, "node", "--no-warnings", str(ROOT / "tools" / "wasi-run.mjs"),
                            str(wasm), "--keys", str(keys), "--case", case, "--iters", str(n)],
                           check=True, capture_output=True, timeout=600)
            times.append(time.time() - t)
        out[f"{case} {keys}keys-1cidrs"] = {"us_per_call": (times[1] - times[0]) * 1e6 / (n2 - n1)}
    return out


def callgrind(work, smoke):
    """Instructions per native decision (callgrind, collection switched on
    only inside decide_once), and heap allocations per decision."""
    if not shutil.which("valgrind"):
        log("valgrind missing: skipping instruction counts")
        return {}
    big = 200 if smoke else 100_000
    cidrs = 20 if smoke else 10_000
    iters = 20 if smoke else 2000
    plan = [(10, 1, "allow"), (10, 1, "deny-checksum"), (10, 1, "deny-unknown"), (10, 1, "deny-ip"),
            (big, 1, "allow"), (big, 1, "deny-unknown"), (10, cidrs, "allow"), (big, cidrs, "allow")]
    if smoke:
        plan = plan[:1]
    out = {}
    cg_dir = work / "callgrind"
    cg_dir.mkdir(exist_ok=True)
    for keys, ncidrs, case in plan:
        f = cg_dir / f"callgrind.{keys}k.{ncidrs}c.{case}.out"
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={f}", "--collect-atstart=no",
                            "--toggle-collect=tokenhub_bench::decide_once*",
                            str(TOOLS_BIN / "decide-count"), "--keys", str(keys), "--cidrs", str(ncidrs),
                            "--case", case, "--iters", str(iters)], capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise SystemExit(f"bench: callgrind failed: {r.stderr[-2000:]}")
        result = json.loads(r.stdout.strip().splitlines()[-1])
        total = 0
        for line in f.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
        # iters + 1 calls (one warm-up call before the loop).
        result["instructions_per_call"] = total / (iters + 1)
        out[f"{case} {keys}keys-{ncidrs}cidrs"] = result
        if case == "allow" and keys == big and ncidrs == 1 and not smoke:
            ann = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=99", str(f)],
                                 capture_output=True, text=True)
            out["_profile_allow_big"] = ann.stdout
    return out
