"""The plan of a run: bundles, the Envoy instances and the cases measured
against them; the sanity check before timing; bundle reload timing."""

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time

from .common import GUARD_WASM, TOOLS_BIN, log
from .configs import (ALTERNATIVE, ECDS_FILE, FLOOR, FLOOR_QUOTA, LADDER, PROVIDER_SECRET, ext_authz_argv,
                      ext_authz_cluster, ext_authz_filters, guard_filters, lua_filters, native_filters, noop_filters)
from .envoy import Envoy, Sidecar
from .load import http_get


class Case:
    """One measured configuration: an Envoy instance and the request sent."""

    def __init__(self, name, envoy, headers, expect, label, group, keys=None, cidrs=None, latency=True, probes=()):
        self.name, self.envoy, self.headers, self.expect = name, envoy, headers, expect
        self.label, self.group, self.keys, self.cidrs = label, group, keys, cidrs
        self.latency = latency
        # More (headers, status) the sanity check sends (refusals of a
        # configuration measured only on its allow path).
        self.probes = probes
        self.sat = []   # per round: {rps, cpu_us, ...}
        self.lat = []   # per latency round: fixed-rate output


def make_bundle(work, name, keys, cidrs, republish, extra=()):
    """`extra`: more bench-bundle arguments (e.g. `--metered`; `--pb`: the
    ECDS files in binary protobuf, guard.pb, as docs/envoy.md advises past
    100 000 keys)."""
    out = work / "bundles" / name
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([str(TOOLS_BIN / "bench-bundle"), "--out", str(out), "--keys", str(keys), "--cidrs", str(cidrs),
                    "--wasm", str(GUARD_WASM), "--republish", str(republish), *extra], check=True)
    info = json.loads((out / "info.json").read_text())
    info["dir"] = out
    info["key"] = (out / "bundle.key").read_text().strip()
    info["ecds_file"] = "guard.pb" if "--pb" in extra else ECDS_FILE
    # The watched directory holds only the ECDS file; later versions are
    # renamed into it from next/ (same filesystem: rename is atomic).
    live = out / "live"
    live.mkdir()
    os.rename(out / info["ecds_file"], live / info["ecds_file"])
    info["live"] = live
    info["next_bytes"] = [os.path.getsize(f) for f in info["files"][1:]]
    return info


def auth(key):
    return {"authorization": f"Bearer {key}"}


def build_plan(args, work, envoy_bin):
    """Envoy instances and the cases run against them."""
    s = args.smoke
    big = 200 if s else 100_000
    mid = 50 if s else 10_000
    many_cidrs = 20 if s else 10_000
    some_cidrs = 10 if s else 100
    # Beyond the targets ("and more if the bundle allows"): 0 = skip.
    huge = min(args.beyond_keys, 400) if s else args.beyond_keys
    republish = 1 if s else args.reloads

    log("generating and publishing bundles (bench-bundle → admin::publish::publish)")
    bundles = {
        "k10": make_bundle(work, "k10", 10, 1, republish),
        f"k{mid}": make_bundle(work, f"k{mid}", mid, 1, republish),
        f"k{big}": make_bundle(work, f"k{big}", big, 1, republish),
        f"c{some_cidrs}": make_bundle(work, f"c{some_cidrs}", 10, some_cidrs, 0),
        f"c{many_cidrs}": make_bundle(work, f"c{many_cidrs}", 10, many_cidrs, 0),
        f"k{big}c{many_cidrs}": make_bundle(work, f"k{big}c{many_cidrs}", big, many_cidrs, 0),
    }
    if huge:
        # guard.pb at this size; and a base whose later versions are deltas
        # (each: one key deleted, one disabled, one created), for the revoke.
        bundles[f"k{huge}"] = make_bundle(work, f"k{huge}", huge, 1, republish, ["--pb"])
        bundles[f"k{huge}-delta"] = make_bundle(work, f"k{huge}-delta", huge, 1, republish, ["--pb", "--deltas"])
    creds = bundles["k10"]["credentials"]

    def guard(name, b):
        return Envoy(name, work, envoy_bin, guard_filters(b["live"], b["ecds_file"]),
                     env={"TOKENHUB_BUNDLE_KEY": b["key"]}, bundle=b)

    envoys = {"bare": Envoy("bare", work, envoy_bin, [])}
    nf, ns = native_filters(creds, 10)
    envoys["native"] = Envoy("native", work, envoy_bin, nf, ns)
    nf, ns = native_filters(creds, big)
    envoys[f"native-k{big}"] = Envoy(f"native-k{big}", work, envoy_bin, nf, ns)
    envoys["noop"] = Envoy("noop", work, envoy_bin, noop_filters())
    envoys["noop-restricted"] = Envoy("noop-restricted", work, envoy_bin, noop_filters(restricted=True))
    for name, ops in LADDER + [ALTERNATIVE, FLOOR, FLOOR_QUOTA]:
        envoys[name] = Envoy(name, work, envoy_bin, noop_filters(ops, restricted=True))
    for name, b in bundles.items():
        envoys[f"guard-{name}"] = guard(f"guard-{name}", b)
    # The alternatives users would pick: ext_authz (the guard's decision in a
    # gRPC service, from the same 10-key ECDS file) and Lua (a key table).
    k10 = bundles["k10"]
    envoys["ext-authz"] = Envoy("ext-authz", work, envoy_bin, ext_authz_filters(), sidecar=Sidecar(
        "ext-authz", lambda port: ext_authz_argv(port, k10), ext_authz_cluster, env={"TOKENHUB_BUNDLE_KEY": k10["key"]}))
    envoys["lua"] = Envoy("lua", work, envoy_bin, lua_filters(k10["credentials"], 10))

    def c(b):
        return bundles[b]["credentials"]

    ok = {"authorization": PROVIDER_SECRET, "x-tokenhub-tenant": "t-allow"}
    refusals = [(auth(c("k10")["unknown"]), 401), (auth(c("k10")["wrong_ip"]), 403)]
    cases = [
        Case("bare", envoys["bare"], auth(creds["allow"]), (200, {}), "bare Envoy", "baseline"),
        Case("native", envoys["native"], auth(creds["allow"]), (200, ok),
             "native api_key_auth+rbac+credential_injector", "baseline", keys=10, cidrs=1),
        Case(f"native-k{big}", envoys[f"native-k{big}"], auth(creds["allow"]), (200, ok),
             f"native, {big} keys", "scale", keys=big, cidrs=1, latency=False),
        Case("wasm-noop", envoys["noop"], auth(creds["allow"]), (200, {}), "no-op Rust Wasm filter", "baseline"),
        Case("wasm-noop-restricted", envoys["noop-restricted"], auth(creds["allow"]), (200, {}),
             "no-op Rust Wasm filter, capability-restricted like the guard", "baseline"),
        *[Case(name, envoys[name], auth(creds["allow"]), (200, {}), f"Wasm host calls only: {ops}", "ladder",
               latency=False) for name, ops in LADDER],
        Case(ALTERNATIVE[0], envoys[ALTERNATIVE[0]], auth(creds["allow"]), (200, ok), "Wasm host calls only: "
             "headers, source, time, ONE header-map replace, metric", "ladder", latency=False),
        *[Case(name, envoys[name], auth(creds["allow"]), (200, {"authorization": PROVIDER_SECRET}),
               f"Wasm host calls only, the floor: {ops}", "ladder", latency=False) for name, ops in (FLOOR, FLOOR_QUOTA)],
        Case("guard-allow", envoys["guard-k10"], auth(c("k10")["allow"]), (200, ok),
             "guard allow (10 keys, 1 CIDR)", "guard", keys=10, cidrs=1),
        Case("ext-authz", envoys["ext-authz"], auth(c("k10")["allow"]), (200, ok),
             "ext_authz gRPC service, the guard's decision natively (10 keys, 1 CIDR)", "alternative", keys=10,
             cidrs=1, probes=refusals),
        Case("lua", envoys["lua"], auth(c("k10")["allow"]), (200, ok),
             "Lua filter, key table (10 keys, 1 CIDR)", "alternative", keys=10, cidrs=1, probes=refusals),
        Case("guard-allow-quota", envoys["guard-k10"], auth(c("k10")["quota"]),
             (200, {"authorization": ok["authorization"], "x-tokenhub-tenant": "t-quota"}),
             "guard allow, quotas on (4 counters)", "guard", keys=10, cidrs=1),
        Case("guard-deny-checksum", envoys["guard-k10"], auth(c("k10")["bad_checksum"]), (401, {}),
             "guard deny: bad checksum", "guard", keys=10, cidrs=1),
        Case("guard-deny-unknown", envoys["guard-k10"], auth(c("k10")["unknown"]), (401, {}),
             "guard deny: unknown key", "guard", keys=10, cidrs=1),
        Case("guard-deny-ip", envoys["guard-k10"], auth(c("k10")["wrong_ip"]), (403, {}),
             "guard deny: wrong IP", "guard", keys=10, cidrs=1),
        Case(f"guard-allow-k{mid}", envoys[f"guard-k{mid}"], auth(c(f"k{mid}")["allow"]), (200, ok),
             f"guard allow, {mid} keys", "scale", keys=mid, cidrs=1),
        Case(f"guard-allow-k{big}", envoys[f"guard-k{big}"], auth(c(f"k{big}")["allow"]), (200, ok),
             f"guard allow, {big} keys", "scale", keys=big, cidrs=1),
        Case(f"guard-allow-c{some_cidrs}", envoys[f"guard-c{some_cidrs}"], auth(c(f"c{some_cidrs}")["allow"]),
             (200, ok), f"guard allow, {some_cidrs} CIDRs", "scale", keys=10, cidrs=some_cidrs),
        Case(f"guard-allow-c{many_cidrs}", envoys[f"guard-c{many_cidrs}"], auth(c(f"c{many_cidrs}")["allow"]),
             (200, ok), f"guard allow, {many_cidrs} CIDRs", "scale", keys=10, cidrs=many_cidrs),
        Case(f"guard-allow-k{big}c{many_cidrs}", envoys[f"guard-k{big}c{many_cidrs}"],
             auth(c(f"k{big}c{many_cidrs}")["allow"]), (200, ok),
             f"guard allow, {big} keys + {many_cidrs} CIDRs", "scale", keys=big, cidrs=many_cidrs),
    ]
    if huge:
        cases.append(Case(f"guard-allow-k{huge}", envoys[f"guard-k{huge}"], auth(c(f"k{huge}")["allow"]), (200, ok),
                          f"guard allow, {huge} keys (beyond the targets)", "scale", keys=huge, cidrs=1,
                          latency=False))
    if args.only:
        keep = set(args.only.split(","))
        cases = [x for x in cases if x.name in keep or x.name in ("bare", "wasm-noop", "wasm-noop-restricted")]
        used = {id(x.envoy) for x in cases}
        envoys = {k: e for k, e in envoys.items() if id(e) in used}
    sizes = {"mid": mid, "big": big, "huge": huge, "many_cidrs": many_cidrs, "some_cidrs": some_cidrs}
    return envoys, cases, bundles, sizes


def sanity_check(cases):
    """Every case answers what it should, and the filters really did their
    work (credential injected, tenant forwarded), before any timing."""
    for case in cases:
        status, headers = http_get(case.envoy.ports["listen"], "/v1/check", case.headers)
        want_status, want_headers = case.expect
        if status != want_status:
            raise SystemExit(f"bench: {case.name}: expected {want_status}, got {status} ({headers})")
        for k, v in want_headers.items():
            got = headers.get(f"x-seen-{k}")
            if got != v:
                raise SystemExit(f"bench: {case.name}: upstream saw {k}={got!r}, expected {v!r}")
        if want_status == 200 and case.group in ("guard", "alternative", "scale") or case.name == "native":
            if case.headers["authorization"] == headers.get("x-seen-authorization"):
                raise SystemExit(f"bench: {case.name}: the client's key reached the upstream")
        for probe, want in case.probes:
            status, _ = http_get(case.envoy.ports["listen"], "/v1/check", probe)
            if status != want:
                raise SystemExit(f"bench: {case.name}: a request that must be refused with {want} got {status}")
    log(f"sanity check passed for {len(cases)} configurations")


def loaded_vms(envoy):
    """How many VMs log a bundle load: as many as logged the first one at
    startup (Envoy 1.39 with --concurrency 1: two on the main thread, one on
    the worker)."""
    first = re.compile(r".*bundle version \d+ loaded")
    return max(2, sum(1 for line in envoy.log_path.read_text().splitlines() if first.match(line)))


def wait_loaded(envoy, version, expected, deadline):
    """(Envoy's µs timestamp, thread) of each VM that logged `version`
    loaded, once `expected` did or at `deadline`."""
    pat = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]\[(\d+)\].*bundle version " + str(version) + " loaded")
    seen = []
    while time.time() < deadline:
        seen = [m for m in (pat.match(line) for line in envoy.log_path.read_text().splitlines()) if m]
        if len(seen) >= expected:
            break
        time.sleep(0.01)
    return [(dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp(), m.group(2)) for m in seen]


def reload_times(envoy, bundle, timeout=60):
    """Renames each later version into the watched directory and times how
    long until every VM (main thread + each worker) logged it loaded, from
    Envoy's own µs log timestamps."""
    results = []
    expected = loaded_vms(envoy)
    for path, version in zip(bundle["files"][1:], bundle["versions"][1:]):
        before_rss = envoy.rss_bytes()
        t0 = time.time()
        os.rename(path, bundle["live"] / bundle.get("ecds_file", ECDS_FILE))
        seen = wait_loaded(envoy, version, expected, t0 + timeout)
        if len(seen) < expected:
            results.append({"version": version, "error": f"only {len(seen)} VMs loaded within {timeout}s"})
            continue
        stamps = [stamp for stamp, _ in seen]
        # Prove it serves: the new version answers (cheap, after the fact).
        status, _ = http_get(envoy.ports["listen"], "/v1/check", auth(bundle["credentials"]["allow"]))
        time.sleep(0.5)
        results.append({
            "version": version,
            "all_loaded_s": max(stamps) - t0,
            "first_loaded_s": min(stamps) - t0,
            "vms": len(seen),
            "threads": sorted({thread for _, thread in seen}),
            "status_after": status,
            "rss_before": before_rss,
            "rss_after": envoy.rss_bytes(),
        })
    return results
