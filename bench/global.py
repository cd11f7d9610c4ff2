#!/usr/bin/env python3
"""`make bench-global`: what the global quota mode costs per request over
the local mode, measured side by side in one run.

Two Envoys with one worker each on the same sealed policy (a tenant, the
platform's provider secret, a key with a per-minute limit far above what
the run sends, so every request is counted and admitted):

  local   envoy/local/envoy.yaml.tmpl, the bundle in local mode: the guard
          counts in Envoy's shared data
  global  envoy/global-ratelimit/envoy.yaml.tmpl, the same policy in global
          mode: the guard counts nothing; Envoy's ratelimit filter asks
          `tokenhub-admin ratelimit` (release build), which counts in a real
          redis-server (Debian's, no persistence)

The load: wrk, one connection, one thread, POST /v1/chat/completions on a
kept-alive connection (closed loop: each request waits for the previous
answer, so the latency is the path's own, not a queue's), ROUNDS rounds of
SECONDS seconds each, the two modes alternating within every round. CPU
per request from /proc/PID/stat (user + system) of Envoy, of the service
and of Redis over each run, divided by the requests wrk counted. Envoy is
pinned to core 0 and wrk to core 1 (as bench/bench.py); the service and
Redis run where the scheduler puts them. No assertion on any figure; a
non-200 answer fails the run.

Writes bench/results/global.md (and global.json).
Usage: bench/global.py [--rounds N] [--seconds S]
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness.common import ENVOY_CPU, LOAD_CPU, PATH, cpu_seconds, free_port, stop_processes  # noqa: E402
from harness.configs import render  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "global"
RESULTS = ROOT / "bench" / "results"
ADMIN = ROOT / "target" / "release" / "tokenhub-admin"
ECHO = ROOT / "target" / "release" / "echo-upstream"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "tokenhub_guard.wasm"
# Far above what a run sends: every request is counted, none refused.
PER_MINUTE = 1_000_000_000
# A public key whose private half was discarded (the configs' jwt_authn needs one).
JWKS = ('{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"unused","n":"r1PJKdvUsyZ1k6vRg08f16wdFBNOyNxU10IeB'
        'uSNxbYWbPLc0g8of4nNRC2ng4lbaWRCITGZkexQOyrgjtpH0wL6e-qe03QVsp29ufQWq0gBnkCQJ3glrWjgEZStP2eVjIU7U9YLxfHdzFyXdv'
        'ung0T1eBnMTD7UnI8wXeppIS6k7lpjcPbGWoefVluxRl77e-Fqr-LYEbCteA25kD1A9BXFUxD4DrN03vskE-QhREfNPvz2Ie6km6Fbdx6fnO0'
        'Tc63iVIiyggM3GmkCdshAkpO1YPLazLAr3sYM_r33uEmP0yBXamm7dbGmw2218i6Pm1RaCnQHx7RXmuECTz5mlw","e":"AQAB"}]}')


def log(msg: str) -> None:
    print(f"bench-global: {msg}", file=sys.stderr, flush=True)


def admin(*args, input=None) -> str:
    env = dict(os.environ, TOKENHUB_HOME=str(WORK / "admin"), TOKENHUB_MASTER_KEY_FILE=str(WORK / "master.key"))
    proc = subprocess.run([str(ADMIN), *args], input=input, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode:
        raise SystemExit(f"bench-global: tokenhub-admin {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench-global: {what} did not come up within {timeout:.0f} s (logs in {WORK})")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, argv, env=None, cpu=None):
        out = open(WORK / f"{name}.log", "wb")
        argv = (["taskset", "-c", cpu] if cpu else []) + [str(a) for a in argv]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self):
        stop_processes(self.procs)


def wrk(port: int, key: str, seconds: float) -> dict:
    script = WORK / "post.lua"
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c1", f"-d{seconds:g}s", "--latency", "-s",
                          str(script), "-H", f"Authorization: Bearer {key}", f"http://127.0.0.1:{port}{PATH}"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    n = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not n or non2xx:
        raise SystemExit(f"bench-global: wrk on port {port}: {out}")

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        scale = {"us": 1.0, "ms": 1000.0, "s": 1e6}
        return float(m.group(1)) * scale[m.group(2)] if m else float("nan")

    return {"requests": int(n.group(1)), "p50_us": pct(50), "p99_us": pct(99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    for f in (ADMIN, ECHO, WASM):
        if not f.is_file():
            raise SystemExit(f"bench-global: {f} is missing: run `make wasm admin` and "
                             "`cargo build --release -p tokenhub-integration --bin echo-upstream`")
    redis_bin = shutil.which("redis-server")
    if not redis_bin:
        raise SystemExit("bench-global: redis-server is missing: run tools/bootstrap.sh")
    if not shutil.which("wrk"):
        raise SystemExit("bench-global: wrk is missing: apt-get install wrk (bench/run.sh installs it for make bench)")
    envoy_bin = subprocess.run([str(ROOT / "tools" / "envoy-path")], capture_output=True, text=True,
                               check=True).stdout.strip()
    shutil.rmtree(WORK, ignore_errors=True)
    for d in ("bundle", "local", "global", "redis"):
        (WORK / d).mkdir(parents=True)
    (WORK / "post.lua").write_text('wrk.method = "POST"\nwrk.body = "{}"\n'
                                   'wrk.headers["Content-Type"] = "application/json"\n')

    # One policy, published twice: in local mode, then in global mode.
    admin("init", "--ecds-file", WORK / "bundle" / "guard.json", "--wasm", WASM,
          "--bundle-key-out", WORK / "bundle.key")
    admin("tenant", "add", "bench", "--region", "eu")
    admin("provider", "set", "openai", "--path-prefix", "/v1/", "--header", "authorization", "--format",
          "Bearer {secret}", input="sk-bench-upstream")
    key = json.loads(admin("--json", "key", "create", "--tenant", "bench", "--name", "bench"))["key"]
    admin("quota", "set", "--key", key[4:16], "--per-minute", str(PER_MINUTE))
    admin("publish")
    shutil.copy(WORK / "bundle" / "guard.json", WORK / "local" / "guard.json")
    admin("quota", "mode", "global")
    admin("publish")
    shutil.copy(WORK / "bundle" / "guard.json", WORK / "global" / "guard.json")
    bundle_key = (WORK / "bundle.key").read_text().strip()

    load_start = os.getloadavg()[0]
    procs = Procs()
    try:
        upstream, redis_port, rl_port = free_port(), free_port(), free_port()
        redis = procs.start("redis", [redis_bin, "--port", redis_port, "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", WORK / "redis"])
        procs.start("echo", [ECHO, "--port", upstream])
        env = dict(os.environ, TOKENHUB_BUNDLE_KEY=bundle_key)
        service = procs.start("ratelimit", [ADMIN, "ratelimit", "--listen", f"127.0.0.1:{rl_port}", "--redis",
                                            f"redis://127.0.0.1:{redis_port}", "--bundle-file",
                                            WORK / "global" / "guard.json"], env=env)
        envoys, ports = {}, {}
        for n, (mode, template) in enumerate((("local", "envoy/local/envoy.yaml.tmpl"),
                                              ("global", "envoy/global-ratelimit/envoy.yaml.tmpl"))):
            ports[mode], admin_port = free_port(), free_port()
            config = WORK / f"envoy-{mode}.yaml"
            config.write_text(render(ROOT / template, {
                "LISTEN_PORT": ports[mode], "ADMIN_PORT": admin_port, "UPSTREAM_PORT": upstream,
                "RATELIMIT_PORT": rl_port, "BUNDLE_DIR": WORK / mode, "WASM_PATH": WASM,
                "ACCESS_LOG": "/dev/null", "OIDC_ISSUER": "https://issuer.tokenhub.invalid", "OIDC_JWKS": JWKS}))
            envoys[mode] = procs.start(f"envoy-{mode}", [envoy_bin, "-c", config, "--concurrency", "1",
                                                         "--disable-hot-restart", "--base-id", 7300 + n,
                                                         "--log-level", "warn"], env=env, cpu=ENVOY_CPU)
            wait_for(f"Envoy ({mode})", lambda p=admin_port: http_ok(f"http://127.0.0.1:{p}/ready"))
        wait_for("the rate limit service", lambda: "loaded" in (WORK / "ratelimit.log").read_text())
        for mode in ports:  # the guard compiled in the worker, the first request answered 200
            wait_for(f"a 200 through Envoy ({mode})", lambda m=mode: wrk(ports[m], key, 1)["requests"] > 0)

        rows = {m: [] for m in ports}
        for r in range(args.rounds):
            for mode in (("local", "global") if r % 2 == 0 else ("global", "local")):
                watched = {"envoy": envoys[mode]} | ({"service": service, "redis": redis} if mode == "global" else {})
                before = {k: cpu_seconds(p.pid) for k, p in watched.items()}
                result = wrk(ports[mode], key, args.seconds)
                after = {k: cpu_seconds(p.pid) for k, p in watched.items()}
                result |= {f"{k}_cpu_us": (after[k] - before[k]) * 1e6 / result["requests"] for k in watched}
                rows[mode].append(result)
                log(f"round {r + 1} {mode}: {json.dumps(result)}")
    finally:
        procs.stop()

    load_end = os.getloadavg()[0]
    med = {m: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for m, rs in rows.items()}
    # Paired within each round (the two modes ran back to back): the
    # median of the differences resists a noisy round better.
    paired = {k: statistics.median(g[k] - lo[k] for g, lo in zip(rows["global"], rows["local"]))
              for k in ("p50_us", "p99_us", "envoy_cpu_us")}
    total = {m: sum(v for k, v in med[m].items() if k.endswith("_cpu_us")) for m in med}
    envoy_version = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout
    version = (re.search(r"/(\d+\.\d+\.\d+)/", envoy_version) or [None, "?"])[1]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "global.json").write_text(json.dumps({"rounds": rows, "median": med, "paired": paired,
                                                     "load": [load_start, load_end]}, indent=1) + "\n")
    lo, gl = med["local"], med["global"]
    lines = [
        "# Global quota mode: the cost per request over local mode",
        "",
        f"`make bench-global` (bench/global.py) on {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{os.cpu_count()} cores ({platform.machine()}), Envoy {version}, one worker each, "
        f"{args.rounds} rounds × {args.seconds:g} s per mode, alternating; one kept-alive connection "
        "(wrk -c1, closed loop), a key with a per-minute limit counted on every request. Medians over "
        "the rounds; CPU = user + system of each process / requests. The machine may be shared with "
        f"other work: compare the two rows of one run, not runs of different days. Load average (1 min) "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end (2 cores: above ~1 the latency "
        "percentiles, p99 above all, measure the other work as much as the path).",
        "",
        "| mode | requests/s | p50 | p99 | Envoy CPU / req | rate limit service CPU / req | Redis CPU / req | total CPU / req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, m in med.items():
        lines.append(f"| {mode} | {m['requests'] / args.seconds:.0f} | {m['p50_us']:.0f} µs | {m['p99_us']:.0f} µs | "
                     f"{m['envoy_cpu_us']:.0f} µs | {m.get('service_cpu_us', 0):.0f} µs | "
                     f"{m.get('redis_cpu_us', 0):.0f} µs | {total[mode]:.0f} µs |")
    lines.append(f"| **global − local** | | {gl['p50_us'] - lo['p50_us']:+.0f} µs | {gl['p99_us'] - lo['p99_us']:+.0f} µs | "
                 f"{gl['envoy_cpu_us'] - lo['envoy_cpu_us']:+.0f} µs | {gl['service_cpu_us']:+.0f} µs | "
                 f"{gl['redis_cpu_us']:+.0f} µs | {total['global'] - total['local']:+.0f} µs |")
    lines.append(f"| **paired, median of per-round differences** | | {paired['p50_us']:+.0f} µs | "
                 f"{paired['p99_us']:+.0f} µs | {paired['envoy_cpu_us']:+.0f} µs | | | |")
    lines += ["", "Per round (requests, p50/p99 µs, CPU µs per request): bench/results/global.json.", ""]
    (RESULTS / "global.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
