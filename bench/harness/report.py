"""The report (results.md) and chart (results.png) of a run, from its raw
results; `report_from` rebuilds both from a results.json without measuring.

Each section is a function of one `Results`; a section whose
configurations were not run (`--only`) is left out, and so is a target
whose figures are missing (it says "not measured in this run")."""

import datetime as dt
import json
import statistics
from pathlib import Path

from .callgrind import SIDECAR_SUFFIX
from .common import ENVOY_CPU, LOAD_CPU, log
from .configs import ALTERNATIVE, FLOOR, FLOOR_QUOTA, LADDER

NAN = float("nan")
MISSING = (KeyError, ZeroDivisionError, TypeError, ValueError)


def med(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else NAN


def spread(xs):
    xs = [x for x in xs if x is not None and x == x]
    return (min(xs), max(xs)) if xs else (NAN, NAN)


def fmt(x, nd=1):
    if x is None or x != x:
        return "–"
    return f"{x:,.{nd}f}"


class Results:
    """One run's figures, and the estimators the targets are judged by."""

    def __init__(self, cases, bundles, envoys, reloads, crit, cg, mem, sizes, meta, out_dir, v8, instr):
        self.cases, self.bundles, self.envoys, self.reloads = cases, bundles, envoys, reloads
        self.crit, self.cg, self.mem, self.sizes, self.meta = crit, cg or {}, mem, sizes, meta
        self.out_dir, self.v8, self.instr = out_dir, v8 or {}, instr or {}
        self.by = {c.name: c for c in cases}
        self.cpu = {c.name: med([r["cpu_us_per_req"] for r in c.sat]) for c in cases}
        self.side = {c.name: med([r.get("sidecar_cpu_us_per_req", 0.0) for r in c.sat]) for c in cases}
        self.rps = {c.name: med([r["rps"] for r in c.sat]) for c in cases}
        self.bare, self.noop = self.cpu.get("bare", NAN), self.cpu.get("wasm-noop", NAN)
        self.per_key = {}

    def lat(self, name, pct):
        return med([x["latency_us"][pct] for x in self.by[name].lat if x.get("latency_us")])

    def rounds_of(self, name):
        return [r["cpu_us_per_req"] for r in self.by[name].sat]

    def estimates(self, f):
        """f(cpu_by_name) under three estimators: the median over rounds; the
        least-disturbed round (interference from other processes only ever
        adds CPU time); per-round pairs (both measured in the same round, so
        slow drifts in machine load cancel)."""
        mins = {c.name: min(self.rounds_of(c.name)) for c in self.cases}
        rounds = min(len(c.sat) for c in self.cases)
        paired = [f({c.name: c.sat[i]["cpu_us_per_req"] for c in self.cases}) for i in range(rounds)]
        return f(self.cpu), f(mins), med(paired)

    @staticmethod
    def verdict(values, ok, by_instructions=None):
        """All three CPU estimators must agree; when they do not, the
        instruction count (deterministic, see its section) decides."""
        oks = [ok(v) for v in values]
        if all(oks) or not any(oks):
            return "met" if all(oks) else "missed"
        if by_instructions is None or by_instructions != by_instructions:
            return "inconclusive (noise)"
        return ("met" if ok(by_instructions) else "missed") + " by instruction count (CPU time: noise)"

    def instr_of(self, f):
        try:
            return f(self.instr)
        except MISSING:
            return None

    def instr_total(self, name):
        """Instructions per request of a configuration, its service's included."""
        return self.instr[name] + self.instr.get(name + SIDECAR_SUFFIX, 0)


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------

def header(r):
    meta = r.meta
    out = [
        f"# TokenHub Guard benchmark — {meta['when']}",
        "",
        f"Envoy {meta['envoy_version']} `--concurrency 1` pinned to CPU {ENVOY_CPU}; load generators pinned to CPU "
        f"{LOAD_CPU}. {meta['rounds']} interleaved rounds × {meta['duration']} s per configuration (wrk -t1 "
        f"-c{meta['connections']}); latency at a fixed {meta['latency_rate']:,} req/s (open loop, measured from the "
        f"due time), {meta['lat_rounds']} rounds × {meta['lat_duration']} s. Load average at start "
        f"{meta['load_start']}, at end {meta['load_end']}. Medians over rounds; CPU range = min–max over rounds. "
        "Upstream: a direct_response listener in the same Envoy (its CPU is in every figure, bare included). "
        "The ext_authz service runs on Envoy's core; its CPU is counted with Envoy's.",
    ]
    if meta.get("command"):
        out += ["", f"Command: `{meta['command']}`"]
    if float(meta["load_start"].split()[0]) > 1.0:
        out += ["", f"**The machine was busy (1-minute load average {meta['load_start'].split()[0]} at the start): "
                "other processes shared both cores, so throughput and latency are noisy; CPU per request less so.**"]
    if meta.get("smoke"):
        out += ["", "**SMOKE RUN — tiny sizes and durations; the numbers mean nothing.**"]
    return out


def main_table(r):
    out = ["", "| configuration | req/s (sat.) | CPU µs/req, Envoy (+ service) (range) | added CPU vs bare µs | "
           "× no-op added | p50 µs | p99 µs | RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    noop_added = r.noop - r.bare
    for c in r.cases:
        lo, hi = spread(r.rounds_of(c.name))
        added = r.cpu[c.name] - r.bare
        ratio = added / noop_added if noop_added > 0 else NAN
        rss = c.envoy.final_rss / 2**20
        out.append(f"| {c.label} | {fmt(r.rps[c.name], 0)} | {fmt(r.cpu[c.name], 2)} ({fmt(lo, 2)}–{fmt(hi, 2)}) | "
                   f"{fmt(added, 2)} | {fmt(ratio, 2)} | {fmt(r.lat(c.name, 'p50'), 0)} | "
                   f"{fmt(r.lat(c.name, 'p99'), 0)} | {fmt(rss, 1)} |")
    if r.bare == r.bare and r.noop == r.noop:
        out += ["", "Ratios of CPU per request (medians): " + ", ".join(
            f"{c.name} {r.cpu[c.name] / r.bare:.2f}× bare / {r.cpu[c.name] / r.noop:.2f}× no-op"
            for c in r.cases if c.name != "bare") + "."]
    return out


ALTERNATIVES = [("guard-allow", "the guard (Proxy-Wasm, in Envoy)"),
                ("native", "Envoy's native api_key_auth + rbac + credential_injector"),
                ("lua", "Envoy's Lua filter, key table"),
                ("ext-authz", "ext_authz → gRPC service, the guard's decision natively")]


def alternatives(r):
    """The guard next to what a platform team would pick instead."""
    rows = [(n, label) for n, label in ALTERNATIVES if n in r.cpu]
    if "guard-allow" not in r.cpu or len(rows) < 2:
        return []
    bare50, bare99 = r.lat("bare", "p50"), r.lat("bare", "p99")
    ib = r.instr.get("bare")
    out = ["", "## Against what users would pick instead (allow path, 10 keys, 1 CIDR)", "",
           "Same run, same harness, interleaved with every other configuration. Added = over bare Envoy; the "
           "ext_authz figures are Envoy's plus the service's (one process on Envoy's core, a current-thread Tokio "
           "runtime, reached over loopback HTTP/2), the service's own share in brackets.", "",
           "| configuration | added CPU µs/req (service) | p50 µs | p99 µs | added p99 µs | "
           "added instructions/req (service) |", "|---|---:|---:|---:|---:|---:|"]
    for n, label in rows:
        side = r.side.get(n, 0.0)
        side_txt = f" ({fmt(side, 2)})" if n == "ext-authz" else ""
        ins = NAN
        ins_side = r.instr.get(n + SIDECAR_SUFFIX)
        if n in r.instr and ib:
            ins = r.instr_total(n) - ib
        ins_txt = fmt(ins, 0) + (f" ({fmt(ins_side, 0)})" if ins_side is not None else "")
        out.append(f"| {label} | {fmt(r.cpu[n] - r.bare, 2)}{side_txt} | {fmt(r.lat(n, 'p50'), 0)} | "
                   f"{fmt(r.lat(n, 'p99'), 0)} | {fmt(r.lat(n, 'p99') - bare99, 0)} | {ins_txt} |")
    out += ["", f"Bare Envoy: p50 {fmt(bare50, 0)} µs, p99 {fmt(bare99, 0)} µs at the same fixed rate. The Lua "
            "filter's table holds the plaintext keys (Envoy's Lua API has no hash function), so it does less "
            "than the guard: no SHA-256, no checksum, no quotas. The ext_authz service runs the guard's own "
            "decision (`tokenhub_guard::core`, the same ECDS file) and differs only in where it runs."]
    return out


def ladder(r):
    cpu, instr = r.cpu, r.instr
    if not all(n in cpu for n, _ in LADDER) or "guard-allow" not in cpu:
        return []
    out = ["", "## Where the guard's allow-path CPU goes (host-call ladder)", "",
           "The no-op filter doing only the guard's host calls, cumulatively, capability-restricted like the guard "
           "(so Envoy enters both VMs for the same callbacks); what is left above the full ladder is the guard's "
           "own code in the VM (decision, SHA-256, allocations, header parsing).", "",
           "| step | CPU µs/req | over no-op | this step adds | instructions/req | this step adds |",
           "|---|---:|---:|---:|---:|---:|"]
    noop = cpu.get("wasm-noop-restricted", r.noop)

    def ins(name, since=None):
        """Instructions of `name`, or what it adds over `since`."""
        v = instr.get(name)
        if since is None:
            return fmt(v, 0)
        b = instr.get(since)
        return fmt(v - b, 0) if v is not None and b is not None else "–"

    prev = "wasm-noop-restricted"
    out.append(f"| no-op Wasm filter, restricted | {fmt(noop, 2)} | 0.00 | – | {ins(prev)} | – |")
    for n, ops in LADDER:
        step = ops.split(",")[-1] if n != "wasm-headers-source-time" else "source, time"
        out.append(f"| + {step} (`{ops}`) | {fmt(cpu[n], 2)} | {fmt(cpu[n] - noop, 2)} | "
                   f"{fmt(cpu[n] - cpu.get(prev, NAN), 2)} | {ins(n)} | {ins(n, prev)} |")
        prev = n
    ga = cpu["guard-allow"]
    out.append(f"| guard allow path | {fmt(ga, 2)} | {fmt(ga - noop, 2)} | {fmt(ga - cpu[prev], 2)} (guard's own "
               f"code) | {ins('guard-allow')} | {ins('guard-allow', prev)} |")
    if ALTERNATIVE[0] in cpu:
        alt = cpu[ALTERNATIVE[0]]
        out.append(f"| *alternative to the last two steps:* one header-map replace (`{ALTERNATIVE[1]}`) | "
                   f"{fmt(alt, 2)} | {fmt(alt - noop, 2)} | {fmt(alt - cpu[prev], 2)} vs the full ladder | "
                   f"{ins(ALTERNATIVE[0])} | {ins(ALTERNATIVE[0], prev)} vs the full ladder |")
    if FLOOR[0] in cpu:
        out += ["", "The floor under targets 1–3: the restricted no-op making only the host calls any Proxy-Wasm guard "
                "makes on an allow path (the header map, for the credential and the client's `x-tokenhub-*` headers "
                "to strip; the peer address; the clock; the provider credential replaced; a counter), with no "
                "decision and no identity headers; then what quotas add to it (two scopes: one shared-data read and "
                "one compare-and-swap each; three `ratelimit-*` response headers).", "",
                "| floor | CPU µs/req | over bare | instructions/req | over bare | this step adds |",
                "|---|---:|---:|---:|---:|---:|"]
        ib = instr.get("bare")
        for (n, ops), since in ((FLOOR, None), (FLOOR_QUOTA, FLOOR[0])):
            if n in cpu:
                over = fmt(instr[n] - ib, 0) if n in instr and ib else "–"
                out.append(f"| `{ops}` | {fmt(cpu[n], 2)} | {fmt(cpu[n] - r.bare, 2)} | {ins(n)} | {over} | "
                           f"{ins(n, since) if since else '–'} |")
    return out


def floor_text(r, limit, what):
    """Where the floor (`FLOOR`) stands against a target's `limit` of added
    instructions; empty when the run did not count it."""
    i = r.instr
    if FLOOR[0] not in i or "bare" not in i:
        return ""
    floor = i[FLOOR[0]] - i["bare"]
    return (f"; the floor (the host calls alone, no decision: see the ladder) adds {floor:,.0f}, "
            f"{'above' if floor > limit else 'within'} {what} ({limit:,.0f})")


def scale_keys(r):
    sizes, envoys, cpu, instr = r.sizes, r.envoys, r.cpu, r.instr
    if "guard-k10" not in envoys:
        return []
    out = ["", "## Scale with keys (guard, 1 CIDR)", "",
           "| keys | ECDS file MiB | publish ms (admin::publish) | reload in all VMs ms (median, max) | "
           "RSS MiB | VM bytes/key | CPU µs/req | instructions/req |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    k10_rss = envoys["guard-k10"].startup_rss
    key_rows = [("k10", 10, "guard-allow"), (f"k{sizes['mid']}", sizes["mid"], f"guard-allow-k{sizes['mid']}"),
                (f"k{sizes['big']}", sizes["big"], f"guard-allow-k{sizes['big']}")]
    if sizes.get("huge") and f"k{sizes['huge']}" in r.bundles:
        key_rows.append((f"k{sizes['huge']}", sizes["huge"], f"guard-allow-k{sizes['huge']}"))
    for bname, keys, cname in key_rows:
        b = r.bundles[bname]
        e = envoys.get(f"guard-{bname}")
        if e is None:
            continue  # not run (--only)
        rl = [x["all_loaded_s"] * 1000 for x in r.reloads.get(bname, []) if "all_loaded_s" in x]
        rss = e.startup_rss
        vms = e.vm_count or 3  # with --concurrency 1: 2 on the main thread + 1 worker
        pk = (rss - k10_rss) / (keys - 10) / vms if keys > 10 else NAN
        r.per_key[keys] = pk
        pb = " (guard.pb)" if b.get("ecds_file", "").endswith(".pb") else ""
        out.append(f"| {keys:,}{pb} | {b['ecds_bytes'] / 2**20:.2f} | {fmt(med(b['publish_ms']), 0)} | "
                   f"{fmt(med(rl), 0)}, {fmt(max(rl) if rl else None, 0)} | {fmt(rss / 2**20, 1)} | {fmt(pk, 0)} | "
                   f"{fmt(cpu.get(cname), 2)} | {fmt(instr.get(cname), 0)} |")
    delta = [x["all_loaded_s"] * 1000 for x in r.reloads.get(f"k{sizes['huge']}-delta", []) if "all_loaded_s" in x]
    if delta:
        b = r.bundles[f"k{sizes['huge']}-delta"]
        out.append(f"| {sizes['huge']:,}, a delta (one key deleted, one disabled, one created) | "
                   f"{med(b.get('next_bytes') or [NAN]) / 2**20:.2f} | {fmt(med(b['publish_ms'][1:]), 0)} | "
                   f"{fmt(med(delta), 0)}, {fmt(max(delta), 0)} | – | – | – | – |")
    vmc = envoys["guard-k10"].vm_count
    out += ["", f"VM bytes/key = (RSS with N keys − RSS with 10 keys) / (N − 10) / {vmc} VMs: Envoy's "
            f"`wasm.wasm_vm_count` with `--concurrency 1` is {vmc} (each logs the bundle loaded: two on the main "
            "thread, one on the worker), so the brief's (workers + 1) = 2 would overstate it by 3/2. RSS read after "
            "startup and the first load; a Wasm VM's linear memory never shrinks, so this counts the load's peak, "
            "not only what the policy keeps."]
    if r.mem:
        out += ["", "Native heap while loading (the filter's `on_configure` path: open, parse, compile; 64-bit "
                "sizes, `decide-count --memory`):", "",
                "| keys | sealed bytes/key | peak heap bytes/key | retained (compiled policy) bytes/key |",
                "|---:|---:|---:|---:|"]
        for m in r.mem:
            out.append(f"| {m['keys']:,} | {m['sealed_bytes_per_key']:.0f} | {m['peak_bytes_per_key']:.0f} | "
                       f"{m['retained_bytes_per_key']:.0f} |")
    return out


def scale_cidrs(r):
    sizes, cpu, instr = r.sizes, r.cpu, r.instr
    many = f"guard-allow-c{sizes['many_cidrs']}"
    if "guard-allow" not in cpu or many not in cpu:
        return []
    out = ["", "## Scale with allowlist size (guard, 10 keys)", "",
           "| CIDRs | CPU µs/req | vs 1 CIDR | instructions/req | vs 1 CIDR |", "|---:|---:|---:|---:|---:|"]
    for n, cname in [(1, "guard-allow"), (sizes["some_cidrs"], f"guard-allow-c{sizes['some_cidrs']}"),
                     (sizes["many_cidrs"], many)]:
        i_ratio = instr[cname] / instr["guard-allow"] if cname in instr and "guard-allow" in instr else None
        out.append(f"| {n:,} | {fmt(cpu.get(cname), 2)} | {fmt(cpu.get(cname, NAN) / cpu['guard-allow'], 3)} | "
                   f"{fmt(instr.get(cname), 0)} | {fmt(i_ratio, 3)} |")
    return out


def instructions(r):
    if not r.instr:
        return []
    out = ["", "## Instructions per request through Envoy (callgrind, deterministic)", "",
           "Each Envoy once more under `valgrind --tool=callgrind`, the same configuration, warmed up with "
           "instrumentation off; then per configuration the instructions Envoy executed (all threads, user space) "
           "for requests on one keep-alive connection, divided by their number; the ext_authz service runs under "
           "callgrind too, counted over the same requests. Repeated runs agree to ~0.1 %, where CPU time varies by "
           "±10 % between rounds on this machine; what it does not see: kernel time, cache misses, contention.", "",
           "| configuration | instructions/request, Envoy (+ service) | over bare | × no-op's added |",
           "|---|---:|---:|---:|"]
    ib, inoop = r.instr.get("bare"), r.instr.get("wasm-noop")
    for c in r.cases:
        if c.name not in r.instr:
            continue
        v = r.instr_total(c.name)
        side = r.instr.get(c.name + SIDECAR_SUFFIX)
        v_txt = f"{v:,.0f}" + (f" ({r.instr[c.name]:,.0f} + {side:,.0f})" if side is not None else "")
        over = v - ib if ib else NAN
        ratio = over / (inoop - ib) if ib and inoop and inoop > ib else NAN
        out.append(f"| {c.label} | {v_txt} | {fmt(over, 0)} | {fmt(ratio, 2)} |")
    return out


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

def target_native_ratio(r):
    """Issue 14, 1: the guard's added instructions ≤ 2× the native chain's."""
    i = r.instr
    g, n = i["guard-allow"] - i["bare"], i["native"] - i["bare"]
    cpu_g, cpu_n = r.cpu["guard-allow"] - r.bare, r.cpu.get("native", NAN) - r.bare
    return (f"by instructions: guard adds {g:,.0f}, native chain {n:,.0f} ({g / n:.2f}×); CPU time: "
            f"{fmt(cpu_g, 2)} vs {fmt(cpu_n, 2)} µs{floor_text(r, 2 * n, 'the target')}",
            "met" if g <= 2 * n else "missed")


def target_quota_cost(r):
    """Issue 14, 2: quotas on add ≤ 20 000 instructions over quotas off."""
    i = r.instr
    d = i["guard-allow-quota"] - i["guard-allow"]
    floor = ""
    if FLOOR_QUOTA[0] in i and FLOOR[0] in i:
        q = i[FLOOR_QUOTA[0]] - i[FLOOR[0]]
        floor = (f"; the host calls alone (see the floor) add {q:,.0f}, {'above' if q > 20_000 else 'within'} "
                 "the target")
    return (f"quotas on add {d:,.0f} instructions ({i['guard-allow-quota']:,.0f} vs {i['guard-allow']:,.0f}); CPU "
            f"{fmt(r.cpu['guard-allow-quota'] - r.cpu['guard-allow'], 2)} µs{floor}",
            "met" if d <= 20_000 else "missed")


def target_ext_authz(r):
    """Issue 14, 3: the guard's added CPU and p99 ≤ 1/5 of ext_authz's."""
    # guard − bare ≤ (ext − bare) / 5  ⇔  (guard − bare) − 0.2 (ext − bare) ≤ 0: a noisy ratio cannot flip it.
    def f(c):
        return (c["guard-allow"] - c["bare"]) - 0.2 * (c["ext-authz"] - c["bare"])

    e = r.estimates(f)
    i = r.instr_of(lambda x: (x["guard-allow"] - x["bare"]) - 0.2 * (r.instr_total("ext-authz") - x["bare"]))
    cpu_status = r.verdict(e, lambda v: v <= 0, i)
    g, x = r.cpu["guard-allow"] - r.bare, r.cpu["ext-authz"] - r.bare
    b99 = r.lat("bare", "p99")
    g99, x99 = r.lat("guard-allow", "p99") - b99, r.lat("ext-authz", "p99") - b99
    p99_ok = g99 <= 0.2 * x99
    i_text = ""
    if i is not None:
        ig, ix = r.instr["guard-allow"] - r.instr["bare"], r.instr_total("ext-authz") - r.instr["bare"]
        i_text = (f"; instructions: guard adds {ig:,.0f}, ext_authz {ix:,.0f} ({ig / ix:.2f}×)"
                  f"{floor_text(r, ix / 5, 'a fifth of ext_authz')}")
    if "wasm-noop-restricted" in r.cpu:
        i_text += (f"; CPU: the no-op Wasm filter alone adds {r.cpu['wasm-noop-restricted'] - r.bare:.2f} µs "
                   f"against a fifth of ext_authz's {x / 5:.2f} µs")
    measured = (f"added CPU: guard {g:.2f} µs, ext_authz {x:.2f} µs ({g / x:.2f}×; guard − ext_authz/5 = {e[0]:.1f} "
                f"µs, least-disturbed round {e[1]:.1f}, per-round pairs {e[2]:.1f}; met when ≤ 0){i_text}; p99 over "
                f"bare ({fmt(b99, 0)} µs): guard +{fmt(g99, 0)} µs, ext_authz +{fmt(x99, 0)} µs "
                f"({fmt(g99 / x99 if x99 else NAN, 2)}×)")
    status = f"CPU {cpu_status}; p99 {'met' if p99_ok else 'missed'}"
    return measured, status


def target_denies(r):
    """Issue 14, 4: deny paths stay below the allow path."""
    cpu, instr = r.cpu, r.instr
    denies = ("guard-deny-checksum", "guard-deny-unknown", "guard-deny-ip")
    e = r.estimates(lambda c: max(c[n] for n in denies) / c["guard-allow"])
    i = r.instr_of(lambda c: max(c[n] for n in denies) / c["guard-allow"])
    i_text = (f"; by instructions {min(instr[n] for n in denies):,.0f}–{max(instr[n] for n in denies):,.0f} vs "
              f"{instr['guard-allow']:,.0f}" if i is not None else "")
    return (", ".join(f"{n.replace('guard-deny-', '')} {cpu[n]:.2f}" for n in denies)
            + f" vs allow {cpu['guard-allow']:.2f} µs (a denial is answered by the filter: no upstream request)"
            f"{i_text}", r.verdict(e, lambda v: v <= 1.0, i))


def _measured(x):
    """x, or MISSING raised when the run did not measure it (NaN)."""
    if x is None or x != x:
        raise ValueError("not measured")
    return x


def target_million(r):
    """Issue 14, 5: at 1 000 000 keys a delta (one key revoked, one disabled,
    one created) reaches every worker within 1 s; a full bundle loads in
    every worker within 2 s; ≤ 128 B per key per VM."""
    huge = r.sizes["huge"]
    full = [x["all_loaded_s"] * 1000 for x in r.reloads[f"k{huge}"] if "all_loaded_s" in x]
    delta = [x["all_loaded_s"] * 1000 for x in r.reloads[f"k{huge}-delta"] if "all_loaded_s" in x]
    pk = _measured(r.per_key[huge])
    ok = bool(full) and bool(delta) and max(delta) <= 1000 and max(full) <= 2000 and pk <= 128
    return (f"{huge:,} keys, guard.pb: a delta in every VM median {fmt(med(delta), 0)} ms, max "
            f"{fmt(max(delta) if delta else None, 0)} ms; full reload median {fmt(med(full), 0)} ms, max "
            f"{fmt(max(full) if full else None, 0)} ms; {pk:.0f} B/key/VM", "met" if ok else "missed")


def target_noop_ratio(r):
    """Earlier: the allow path adds ≤ 1.25× what the no-op Wasm filter adds."""
    # guard − bare ≤ 1.25 (noop − bare)  ⇔  (guard − noop) − 0.25 (noop − bare) ≤ 0.
    def f(c):
        return (c["guard-allow"] - c["wasm-noop"]) - 0.25 * (c["wasm-noop"] - c["bare"])

    e, i = r.estimates(f), r.instr_of(f)
    g_added, noop_added = r.cpu["guard-allow"] - r.bare, r.noop - r.bare
    i_text = ""
    if i is not None:
        ig, inoop, ibare = r.instr["guard-allow"], r.instr["wasm-noop"], r.instr["bare"]
        i_text = (f"; by instructions: guard adds {ig - ibare:,.0f}, no-op {inoop - ibare:,.0f} "
                  f"({(ig - ibare) / (inoop - ibare):.2f}×)")
    return (f"guard adds {g_added:.2f} µs, no-op adds {noop_added:.2f} µs ({g_added / noop_added:.2f}×); excess "
            f"over 1.25× the no-op's: {e[0]:.1f} µs (least-disturbed {e[1]:.1f}, pairs {e[2]:.1f}; met when ≤ 0)"
            f"{i_text}", r.verdict(e, lambda v: v <= 0, i))


def target_scale(r):
    """Earlier: CPU/req at 100 000 keys + 10 000 CIDRs within 10 % of 10 + 1."""
    sizes, cpu = r.sizes, r.cpu
    combo = f"guard-allow-k{sizes['big']}c{sizes['many_cidrs']}"
    big, many = f"guard-allow-k{sizes['big']}", f"guard-allow-c{sizes['many_cidrs']}"
    ga = cpu["guard-allow"]
    e = r.estimates(lambda c: c[combo] / c["guard-allow"])
    i = r.instr_of(lambda c: c[combo] / c["guard-allow"])
    lo, hi = spread(r.rounds_of(combo))
    return (f"{cpu[combo]:.2f} vs {ga:.2f} µs: {e[0]:.3f}× (least-disturbed {e[1]:.3f}×, pairs {e[2]:.3f}×; rounds "
            f"{lo:.2f}–{hi:.2f}); {sizes['big']:,} keys alone {cpu[big] / ga:.3f}×, {sizes['many_cidrs']:,} CIDRs "
            f"alone {cpu[many] / ga:.3f}×" + (f"; by instructions {i:.3f}×" if i is not None else ""),
            r.verdict(e, lambda v: v <= 1.10, i))


def target_load_100k(r):
    big = r.sizes["big"]
    rl = [x["all_loaded_s"] * 1000 for x in r.reloads[f"k{big}"] if "all_loaded_s" in x]
    return (f"median {fmt(med(rl), 0)} ms, max {fmt(max(rl), 0)} ms over {len(rl)} reloads (rename → last VM's "
            "'loaded' log line; 3 VMs on one core)", "met" if max(rl) <= 1000 else "missed")


def target_memory_256(r):
    pk = _measured(r.per_key[r.sizes["big"]])
    return f"{pk:.0f} B/key/VM (RSS delta at {r.sizes['big']:,} keys)", "met" if pk <= 256 else "missed"


def targets(r):
    s = r.sizes
    rows = [
        ("1. Guard allow path adds ≤ 2× the native chain's added instructions per request", target_native_ratio),
        ("2. Quotas on add ≤ 20 000 instructions over quotas off", target_quota_cost),
        ("3. The guard's added CPU and p99 ≤ 1/5 of ext_authz's", target_ext_authz),
        ("4. Deny paths stay below the allow path", target_denies),
        (f"5. At {s['huge'] or 1_000_000:,} keys: a revoke, disabled or new key in every worker ≤ 1 s without a full "
         "reload; full load in every worker ≤ 2 s; ≤ 128 B/key/VM", target_million),
        ("earlier: allow path adds ≤ 1.25× the CPU the no-op Wasm filter adds", target_noop_ratio),
        (f"earlier: CPU/req at {s['big']:,} keys + {s['many_cidrs']:,} CIDRs within 10 % of 10 keys + 1 CIDR",
         target_scale),
        (f"earlier: a bundle of {s['big']:,} keys loads in every worker within 1 s", target_load_100k),
        ("earlier: ≤ 256 bytes of VM memory per key", target_memory_256),
    ]
    out = ["", "## Targets", "", "Targets 1–5 are issue 14's; the earlier ones stay as regression checks.", "",
           "| target | measured | status |", "|---|---|---|"]
    for name, f in rows:
        try:
            measured, status = f(r)
        except MISSING:
            measured, status = "not measured in this run", "–"
        out.append(f"| {name} | {measured} | **{status}** |")
    return out


# --------------------------------------------------------------------------
# Native decision, focused runs
# --------------------------------------------------------------------------

def native(r):
    out = []
    if r.crit:
        out += ["", "## Native decision (criterion, `core::decision::decide` + the filter's header view)", "",
                "| case | median ns (95% CI) |", "|---|---:|"]
        out += [f"| {k} | {v['median_ns']:.0f} ({v['lo_ns']:.0f}–{v['hi_ns']:.0f}) |" for k, v in r.crit.items()]
    cg = {k: v for k, v in r.cg.items() if not k.startswith("_")}
    if cg:
        out += ["", "## Native decision, instructions (callgrind) and allocations per call", "",
                "| case | instructions/call | heap allocs/call | decision |", "|---|---:|---:|---|"]
        out += [f"| {k} | {v['instructions_per_call']:,.0f} | {v['allocs_per_call']:.2f} | {v['decision']} |"
                for k, v in cg.items()]
    if r.v8:
        out += ["", "## The decision inside a Wasm VM (no host calls)", "",
                "`decide-count` compiled to wasm32-wasip1 (the filter's target) and run under Node's V8; per call, "
                "from the difference of two iteration counts:", "", "| case | µs/decision in V8 |", "|---|---:|"]
        out += [f"| {k} | {v['us_per_call']:.2f} |" for k, v in r.v8.items()]
    return out


def _quartile(xs):
    xs = sorted(xs)
    return lambda f: xs[int(f * (len(xs) - 1))]


def _separate_run(path, counted):
    """The figures of a focused run (its own command, its JSON beside
    results.md): (figures, rounds of `counted`, when it was written), or None
    where it has not run."""
    if not path.exists():
        return None
    figures = json.loads(path.read_text())
    when = dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return figures, len(figures.get(counted, [])), when


def focused(r):
    out = []
    if focus := _separate_run(r.out_dir / "focus.json", "bare"):
        fr, n, when = focus
        out += ["", f"## Focused ladder (`bench/bench.py focus`, {n} interleaved rounds × 3 s, a separate run, "
                f"{when})", "", "| step | CPU µs/req median | paired median over the previous step (IQR) |",
                "|---|---:|---:|"]
        prev = None
        for k in ("bare", "noop", "noop_r", "headers", "glue", "guard"):
            if k not in fr:
                continue
            if k == "noop_r":
                prev = "bare"
            if prev is None:
                out.append(f"| {k} | {med(fr[k]):.1f} | – |")
            else:
                d = [x - y for x, y in zip(fr[k], fr[prev])]
                q = _quartile(d)
                out.append(f"| {k} | {med(fr[k]):.1f} | {med(d):+.1f} ({q(0.25):+.1f} … {q(0.75):+.1f}) |")
            prev = k
        out += ["", "noop_r = the no-op restricted to the guard's capability list; headers, glue = noop_r making "
                "the header fetch, every host call of the guard's allow path; guard − glue = the guard's own code in "
                "the VM. Each step is paired with the one above it (noop_r with bare)."]
    if scale := _separate_run(r.out_dir / "scale_focus.json", "k10"):
        sr, n, when = scale
        out += ["", f"## Focused scale check (`bench/bench.py scale-focus`, {n} interleaved rounds × 3 s, a "
                f"separate run, {when})", "",
                "| guard allow with | CPU µs/req median | paired ratio to 10 keys + 1 CIDR, median (IQR) |",
                "|---|---:|---:|"]
        for k in sr:
            ratios = [x / y for x, y in zip(sr[k], sr["k10"])]
            q = _quartile(ratios)
            out.append(f"| {k} | {med(sr[k]):.1f} | {med(ratios):.3f} ({q(0.25):.3f}–{q(0.75):.3f}) |")
    return out


SECTIONS = [header, main_table, alternatives, ladder, scale_keys, scale_cidrs, instructions, targets, native, focused]


def report(cases, bundles, envoys, reloads, crit, cg, mem, sizes, meta, out_dir, v8=None, instr=None):
    """Writes results.md (and the native profile) into out_dir; returns
    (text, CPU medians by case)."""
    r = Results(cases, bundles, envoys, reloads, crit, cg, mem, sizes, meta, Path(out_dir), v8, instr)
    lines = []
    for section in SECTIONS:
        try:
            lines += section(r)
        except MISSING as e:
            log(f"report: section {section.__name__} left out (no figure for {e!r} in this run)")
    lines += ["", f"`make bench` wall time: {meta.get('wall_s', 0) / 60:.1f} min (this script; builds excluded)."]
    text = "\n".join(lines) + "\n"
    (r.out_dir / "results.md").write_text(text)
    if "_profile_allow_big" in r.cg:
        (r.out_dir / "callgrind-allow-100k.txt").write_text(r.cg["_profile_allow_big"])
    return text, r.cpu


def chart(cases, out_dir, cpu):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return
    names = [c.label for c in cases]
    cpus = [cpu[c.name] for c in cases]
    lo = [cpu[c.name] - spread([r["cpu_us_per_req"] for r in c.sat])[0] for c in cases]
    hi = [spread([r["cpu_us_per_req"] for r in c.sat])[1] - cpu[c.name] for c in cases]
    p99 = [med([x["latency_us"]["p99"] for x in c.lat if x.get("latency_us")]) for c in cases]
    p50 = [med([x["latency_us"]["p50"] for x in c.lat if x.get("latency_us")]) for c in cases]
    colors = {"baseline": "#888888", "ladder": "#b0b0d8", "guard": "#2a7ab9", "scale": "#e08a2c",
              "alternative": "#7a9a3a"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 0.45 * len(cases) + 2), sharey=True)
    y = range(len(cases))
    ax1.barh(y, cpus, xerr=[lo, hi], color=[colors.get(c.group, "#444444") for c in cases], capsize=3)
    ax1.set_yticks(list(y), names)
    ax1.invert_yaxis()
    ax1.set_xlabel("CPU µs per request, Envoy (+ ext_authz service) (median, min–max over rounds)")
    bare = cpu.get("bare")
    if bare:
        ax1.axvline(bare, color="black", lw=0.8, ls="--")
    ax2.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color="#7fb3d5")
    ax2.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color="#1f4e79")
    ax2.set_xscale("log")
    ax2.set_xlabel("latency µs at fixed rate, log scale (median over rounds)")
    ax2.legend()
    fig.suptitle("TokenHub Guard vs bare Envoy, native filters, Lua, ext_authz and a no-op Wasm filter")
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "results.png", dpi=110)
    plt.close(fig)


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def report_from(path, out_dir):
    """Rebuilds the report and chart from a results.json (no measuring)."""
    raw = json.loads(Path(path).read_text())
    envoys = {k: _Obj(name=k, **{kk: vv for kk, vv in v.items() if kk != "ports"}) for k, v in raw["envoys"].items()}
    cases = [_Obj(name=n, label=c["label"], group=c.get("group", "guard"), sat=c["saturation"], lat=c["latency"],
                  envoy=envoys[c["envoy"]]) for n, c in raw["cases"].items()]
    cg = dict(raw.get("callgrind", {}))
    prof = Path(out_dir) / "callgrind-allow-100k.txt"
    if prof.exists():
        cg["_profile_allow_big"] = prof.read_text()
    text, cpu = report(cases, raw["bundles"], envoys, raw["reloads"], raw.get("criterion", {}), cg,
                       raw.get("native_memory", []), raw["sizes"], raw["meta"], Path(out_dir),
                       raw.get("v8_decision", {}), raw.get("envoy_instructions", {}))
    chart(cases, Path(out_dir), cpu)
    print(text)
