"""Load generation: one request (sanity checks), saturation (wrk, with
Envoy's CPU time around it), a fixed rate (bench/tools fixed-rate, latency
percentiles) and sequential keep-alive requests (under callgrind)."""

import http.client
import json
import re
import subprocess
import urllib.error
import urllib.request

from .common import LOAD_CPU, PATH, TOOLS_BIN


def http_get(port, path, headers):
    """One request over a fresh connection; returns (status, headers)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}


def wrk(port, headers, duration, connections, script=None):
    """`script`: a wrk Lua script (e.g. a POST body: `wrk_post_script`)."""
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://127.0.0.1:{port}{PATH}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(m.group(1)) if m else 0.0,
        "requests": int(n.group(1)) if n else 0,
        "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0,
        "raw": out,
    }


def fixed_rate(port, headers, rate, duration, warmup, connections):
    cmd = ["taskset", "-c", LOAD_CPU, str(TOOLS_BIN / "fixed-rate"), "--addr", f"127.0.0.1:{port}",
           "--path", PATH, "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup),
           "--connections", str(connections)]
    for k, v in headers.items():
        cmd += ["--header", f"{k}: {v}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
    if r.returncode != 0:
        raise SystemExit(f"bench: fixed-rate failed: {r.stderr}")
    return json.loads(r.stdout)


def saturation_run(case, duration, connections):
    e = case.envoy
    before_rq, (before_cpu, before_side) = e.ingress_requests(), e.cpu_seconds()
    w = wrk(e.ports["listen"], case.headers, duration, connections, getattr(case, "wrk_script", None))
    (after_cpu, after_side), after_rq = e.cpu_seconds(), e.ingress_requests()
    classes = {k: after_rq.get(k, 0) - before_rq.get(k, 0)
               for k in ("downstream_rq_2xx", "downstream_rq_3xx", "downstream_rq_4xx", "downstream_rq_5xx")}
    # Requests answered in the window (the few still in flight when wrk
    # closes its connections are not counted, nor charged).
    served = sum(classes.values())
    want = {200: "downstream_rq_2xx", 401: "downstream_rq_4xx", 403: "downstream_rq_4xx"}[case.expect[0]]
    wrong = served - classes[want]
    return {
        "rps": w["rps"],
        "served": served,
        # Envoy's and its sidecar's (the ext_authz service), and the sidecar's part.
        "cpu_us_per_req": (after_cpu - before_cpu) * 1e6 / served if served else float("nan"),
        "sidecar_cpu_us_per_req": (after_side - before_side) * 1e6 / served if served else float("nan"),
        "wrong_status": wrong,
        "classes": classes,
        "socket_errors": w["socket_errors"],
        "wrk_p50_ms": parse_wrk_pct(w["raw"], "50%"),
        "wrk_p99_ms": parse_wrk_pct(w["raw"], "99%"),
    }


def parse_wrk_pct(raw, pct):
    m = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", raw, re.M)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk_post_script(path, body):
    """A wrk Lua script sending `body` (bytes) as a POST (wrk sets the
    content-length); the headers stay on wrk's command line."""
    text = body.decode()
    if "]==]" in text:
        raise SystemExit("bench: a request body wrk cannot quote")
    path.write_text(f'wrk.method = "POST"\nwrk.body = [==[{text}]==]\n')
    return path


def keep_alive_requests(port, headers, n, method="GET", body=None):
    """n sequential requests on one keep-alive connection; status counts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    statuses = {}
    try:
        for _ in range(n):
            conn.request(method, PATH, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
    finally:
        conn.close()
    return statuses
