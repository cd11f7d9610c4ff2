#!/usr/bin/env python3
"""Instructions per request through Envoy (callgrind, deterministic) for the
guard's allow, quota and deny paths next to bare Envoy, the native chain and
the restricted no-op Wasm filter: the figures of bench/results/allow-path.md,
in a few minutes instead of a full `make bench`. Run after bench/run.sh (or
`make bench-smoke`) has built the bench tools and the no-op filter, and
`make wasm` the guard:

    .venv/bin/python bench/allow_path.py [--only a,b]
    .venv/bin/python bench/allow_path.py --host-calls

Prints one line per configuration and writes bench/work/allow-path/instructions.json.
`--host-calls`: instead, the restricted no-op filter doing one kind of host
call each (bench/noop-filter), priced against the no-op itself.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import flat as B  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated configuration names")
    ap.add_argument("--host-calls", action="store_true", help="price single host calls with the no-op filter")
    args = ap.parse_args()
    work = B.BENCH / "work" / "allow-path"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    envoy_bin = subprocess.run([str(B.ROOT / "tools" / "envoy-path")], capture_output=True, text=True,
                               check=True).stdout.strip()
    if args.host_calls:
        return host_calls(work, envoy_bin)
    b = B.make_bundle(work, "k10", 10, 1, 0)
    creds = b["credentials"]
    nf, ns = B.native_filters(creds, 10)
    envoys = {
        "bare": B.Envoy("bare", work, envoy_bin, []),
        "native": B.Envoy("native", work, envoy_bin, nf, ns),
        "noop-restricted": B.Envoy("noop-restricted", work, envoy_bin, B.noop_filters(restricted=True)),
        "guard": B.Envoy("guard", work, envoy_bin, B.guard_filters(b["live"]), env={"TOKENHUB_BUNDLE_KEY": b["key"]},
                         bundle=b),
    }
    a = B.auth
    cases = [
        B.Case("bare", envoys["bare"], a(creds["allow"]), (200, {}), "bare Envoy", "baseline"),
        B.Case("native", envoys["native"], a(creds["allow"]), (200, {}), "native chain", "baseline"),
        B.Case("wasm-noop-restricted", envoys["noop-restricted"], a(creds["allow"]), (200, {}), "no-op", "baseline"),
        B.Case("guard-allow", envoys["guard"], a(creds["allow"]), (200, {}), "guard allow", "guard"),
        B.Case("guard-allow-quota", envoys["guard"], a(creds["quota"]), (200, {}), "quotas on", "guard"),
        B.Case("guard-deny-checksum", envoys["guard"], a(creds["bad_checksum"]), (401, {}), "checksum", "guard"),
        B.Case("guard-deny-unknown", envoys["guard"], a(creds["unknown"]), (401, {}), "unknown", "guard"),
        B.Case("guard-deny-ip", envoys["guard"], a(creds["wrong_ip"]), (403, {}), "wrong IP", "guard"),
    ]
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c.name in keep]
    out = B.envoy_instructions(cases, work, False)
    bare = out.get("bare")
    for name, n in out.items():
        over = f"  over bare {n - bare:>9,.0f}" if bare is not None else ""
        print(f"{name:24s} {n:>10,.0f}{over}")
    (work / "instructions.json").write_text(json.dumps(out, indent=1))


HOST_CALLS = ["", "time", "source", "headers", "get4", "write1", "rewrite", "add6", "state1", "state5"]


def host_calls(work, envoy_bin):
    cases = []
    for ops in HOST_CALLS:
        filters = B.noop_filters(ops, restricted=True)
        caps = filters[0]["typed_config"]["config"]["capability_restriction_config"]["allowed_capabilities"]
        caps["proxy_get_header_map_value"] = {}
        e = B.Envoy(f"noop-{ops or 'none'}", work, envoy_bin, filters)
        cases.append(B.Case(ops or "none", e, B.auth("thk_not_checked"), (200, {}), ops, "host-calls"))
    out = B.envoy_instructions(cases, work, False)
    for name, n in out.items():
        print(f"{name:10s} {n:>10,.0f}  over the no-op {n - out['none']:>9,.0f}")
    (work / "host-calls.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
