#!/usr/bin/env python3
"""The key table at scale (issue 14, target 5): for each size, one guard
Envoy (--concurrency 1, 3 VMs) on a full bundle — RSS after the first load,
then 3 full republishes timed until every VM logged them loaded — and one on
a base whose later versions are deltas (bench-bundle --deltas: each one key
deleted, one disabled, one created since the last), timed the same way; and
a revoke as an operator makes it: `tokenhub-admin incident revoke` on a
store of that size, timed from the command's start until it exits, until
every VM logged what it published, and until the key is refused.
Run after `make wasm admin` and `(cd bench/tools && cargo build --release)`:
  .venv/bin/python bench/keys.py [--pb] [KEYS ...]   (default 10 10000 100000 1000000)
With --pb the ECDS file is binary protobuf (guard.pb), as `tokenhub-admin
publish --ecds-file X.pb` writes it; without, JSON (guard.json).
Prints one JSON line per size and writes bench/work/keys/keys.json.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import flat as B  # noqa: E402

work = B.BENCH / "work" / "keys"
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
envoy_bin = subprocess.run([str(B.ROOT / "tools" / "envoy-path")], capture_output=True, text=True,
                           check=True).stdout.strip()
args = sys.argv[1:]
binary = "--pb" in args
sizes = [int(k) for k in args if k != "--pb"] or [10, 10_000, 100_000, 1_000_000]


def bundle(name, keys, deltas):
    extra = (["--deltas"] if deltas else []) + (["--pb"] if binary else [])
    return B.make_bundle(work, name, keys, 1, 3, extra)


def run(name, info):
    e = B.Envoy(name, work, envoy_bin, B.guard_filters(info["live"], info["ecds_file"]),
                env={"TOKENHUB_BUNDLE_KEY": info["key"]}, bundle=info)
    t = time.time()
    e.start()
    e.wait_bundle_loaded(300)
    started = time.time() - t
    rss = e.rss_bytes()
    reloads = B.reload_times(e, info, timeout=120)
    e.stop()
    ok = [r for r in reloads if "all_loaded_s" in r]
    return {
        "start_to_loaded_s": started,
        "rss_mib": rss / 2**20,
        "all_loaded_ms": [round(r["all_loaded_s"] * 1000) for r in ok],
        "first_loaded_ms": [round(r["first_loaded_s"] * 1000) for r in ok],
        "status_after": [r.get("status_after") for r in ok],
        "errors": [r["error"] for r in reloads if "error" in r],
        "publish_ms": [round(x) for x in info["publish_ms"]],
        "ecds_bytes": info["ecds_bytes"],
        "next_bytes": info["next_bytes"],
    }


def revoke_from_cli(keys):
    info = B.make_bundle(work, f"cli{keys}", keys, 1, 0, ["--store"] + (["--pb"] if binary else []))
    e = B.Envoy(f"cli{keys}", work, envoy_bin, B.guard_filters(info["live"], info["ecds_file"]),
                env={"TOKENHUB_BUNDLE_KEY": info["key"]}, bundle=info)
    e.start()
    e.wait_bundle_loaded(300)
    expected = B.loaded_vms(e)
    key = info["credentials"]["allow"]
    key_id = key[len("thk_"):len("thk_") + 12]
    env = dict(os.environ, TOKENHUB_MASTER_KEY_FILE=str(info["dir"] / "master.key"))
    t0 = time.time()
    cli = subprocess.Popen([str(B.ROOT / "target" / "release" / "tokenhub-admin"), "--home", str(info["dir"] / "home"),
                            "--json", "incident", "revoke", key_id], env=env, stdout=subprocess.PIPE, text=True)
    refused = None
    while refused is None and time.time() < t0 + 120 and cli.poll() in (None, 0):
        if B.http_get(e.ports["listen"], "/v1/check", B.auth(key))[0] == 401:
            refused = time.time() - t0
    out, _ = cli.communicate(timeout=120)
    exited = time.time() - t0
    if cli.returncode != 0:
        e.stop()
        raise SystemExit(f"bench: tokenhub-admin incident revoke {key_id} failed (exit {cli.returncode}): {out}")
    version = json.loads(out)["published"]["version"]
    stamps = [stamp for stamp, _ in B.wait_loaded(e, version, expected, time.time() + 60)]
    e.stop()
    return {"cli_exit_ms": round(exited * 1000), "refused_ms": round(refused * 1000) if refused else None,
            "all_loaded_ms": round((max(stamps) - t0) * 1000) if len(stamps) >= expected else None,
            "store_save_load_ms": [round(x) for x in info["store_save_load_ms"]], "cli_output": json.loads(out)}


results = {}
for keys in sizes:
    row = {"keys": keys, "full": run(f"full{keys}", bundle(f"full{keys}", keys, False))}
    if keys >= 10_000:
        row["delta"] = run(f"delta{keys}", bundle(f"delta{keys}", keys, True))
        row["revoke_from_cli"] = revoke_from_cli(keys)
    results[keys] = row
    print(json.dumps(row), flush=True)
base = results.get(10, {}).get("full", {}).get("rss_mib")
for keys, row in results.items():
    if base and keys > 10:
        row["vm_bytes_per_key"] = (row["full"]["rss_mib"] - base) * 2**20 / (keys - 10) / 3
        print(f"{keys} keys: {row['vm_bytes_per_key']:.0f} VM bytes/key, full reload all VMs median "
              f"{statistics.median(row['full']['all_loaded_ms'])} ms"
              + (f", delta all VMs median {statistics.median(row['delta']['all_loaded_ms'])} ms" if "delta" in row else ""))
(work / "keys.json").write_text(json.dumps(results, indent=1))
