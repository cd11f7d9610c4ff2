#!/usr/bin/env python3
"""`make test-docker`: the Docker Compose demo (envoy/docker) run in a real
engine and driven from outside, as a user would:

  - `envoy/docker/up.sh --offline` brings it up from nothing (engine and
    Compose installed and started when missing, images built without
    pulling) under its own project name, port, subnet and secrets;
  - every container runs exactly as the Compose file declares: user
    65532:65532, read-only root, all capabilities dropped,
    no-new-privileges (docker inspect), and its main process really has
    uid 65532 and no effective capability (/proc/PID/status);
  - a key works through the published port; a spoofed tenant is refused;
    TLS 1.2 is refused and TLS 1.3 accepted;
  - the IP allowlist seen from containers on the network with their own
    addresses (a host client appears from the network's gateway through
    Docker's port publishing): allowed address 200, other address 403,
    the gateway 403;
  - the admin API is reached only from the sidecar's network namespace
    (the admin-api service), and a revoke there is refused by Envoy within
    a bounded wait (the time is printed; the target is 1 s);
  - the access log has metadata only: the fixed field set, and no canary
    planted in a key, query, header or body, nor the provider secret;
  - with 2FA on, restarting the sidecar and Envoy, and stopping and
    starting the whole stack (setup runs `sync` again), comes back
    unattended with the same decisions;
  - the running demo switched to the global quota mode by
    docker-compose.global.yaml (Redis and the rate limit service added,
    hardened as declared): a key limited to QUOTA/min hammered by 6 threads
    gets exactly QUOTA through, the rest 429 with Retry-After and
    RateLimit-*; Redis killed: 503 quota_service_unavailable; Redis back:
    counted again;
  - `down -v` leaves no container, volume or network of the project.

Prints one line per check and "N passed, M failed"; exits 1 on a failure.
Needs root (or the docker group) and `make wasm admin` plus echo-upstream.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import pathlib
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import checks  # noqa: E402

DOCKER_DIR = ROOT / "envoy" / "docker"
PROJECT = os.environ.get("TOKENHUB_TEST_PROJECT", "tokenhub-test")
PORT = int(os.environ.get("TOKENHUB_TEST_PORT", "18443"))
SUBNET = os.environ.get("TOKENHUB_TEST_SUBNET_PREFIX", "172.28.54")
SECRETS = ROOT / ".cache" / "docker" / "test-secrets"
USER = "65532:65532"
CHAT = "/v1/chat/completions"
# The compose files in use: the demo, and the global quota override once
# the suite switches to it.
FILES = ["docker-compose.yaml"]
GLOBAL_OVERRIDE = "docker-compose.global.yaml"
# Debian's redis-server on the offline base (tools/docker-base.sh).
REDIS_IMAGE = "tokenhub/debian-redis:bookworm"
# The metered key's per-minute limit in the global quota phase.
QUOTA = 12
PROVIDER_SECRET = "sk-demo-upstream-secret"
ACCESS_LOG_FIELDS = {
    "time", "request_id", "tenant", "sub_account", "key_id", "region", "client_ip", "method", "path",
    "status", "reason", "details", "upstream_cluster", "protocol", "tls_version", "bytes_in", "bytes_out",
    "duration_ms",
    # metered requests only (credentials with model rules): model and token counts, never content
    "model", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
    # metered requests only (credentials with budgets): cost and the soft-limit flag
    "cost_nano_usd", "soft_limit",
}
STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {msg}", flush=True)


def Report() -> checks.Report:
    return checks.Report(say=log)


def run(argv, *, input=None, check=True, timeout=300, env=None):
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


# ---------------------------------------------------------------------------
# The stack


def stack_env() -> dict:
    env = dict(os.environ)
    env.update(
        COMPOSE_PROJECT_NAME=PROJECT,
        TOKENHUB_HTTPS_PORT=str(PORT),
        TOKENHUB_SUBNET_PREFIX=SUBNET,
        TOKENHUB_SECRETS_DIR=str(SECRETS),
        TOKENHUB_ENVOY_IMAGE=ENVOY_IMAGE,
        TOKENHUB_CURL_IMAGE="tokenhub/client:dev",
        TOKENHUB_REDIS_IMAGE=REDIS_IMAGE,
    )
    return env


def compose_cmd() -> list:
    out = run([str(ROOT / "tools" / "docker-lib.sh"), "--print-compose"], timeout=600).stdout
    return out.split("\n")[:-1]


def compose(*args, input=None, check=True, timeout=300):
    argv = COMPOSE + [a for f in FILES for a in ("-f", str(DOCKER_DIR / f))] + list(args)
    return run(argv, input=input, check=check, timeout=timeout, env=stack_env())


def container(service: str) -> str:
    out = compose("ps", "-a", "-q", service).stdout.split()
    if not out:
        raise RuntimeError(f"no container for service {service}")
    return out[0]


def inspect(cid: str) -> dict:
    return json.loads(run(["docker", "inspect", cid]).stdout)[0]


def down() -> None:
    compose("--profile", "tools", "down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=180)


def leftovers() -> dict:
    label = f"label=com.docker.compose.project={PROJECT}"
    return {
        "containers": run(["docker", "ps", "-a", "-q", "--filter", label]).stdout.split(),
        "volumes": run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split(),
        "networks": run(["docker", "network", "ls", "-q", "--filter", label]).stdout.split(),
    }


# ---------------------------------------------------------------------------
# Clients


def tls_context(maximum=ssl.TLSVersion.TLSv1_3, minimum=ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(SECRETS / "tls.crt"))
    ctx.minimum_version = minimum
    ctx.maximum_version = maximum
    return ctx


class Client:
    """HTTP/1.1 over TLS to the published port, on one kept-alive connection."""

    def __init__(self):
        self.conn = http.client.HTTPSConnection("127.0.0.1", PORT, context=tls_context(), timeout=10)

    def request(self, key=None, method="POST", path=CHAT, headers=None, body="{}"):
        h = dict(headers or {})
        if key:
            h["authorization"] = f"Bearer {key}"
        h.setdefault("content-type", "application/json")
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=h)
                resp = self.conn.getresponse()
                self.request_id = resp.getheader("x-request-id")
                return resp.status, resp.read().decode(errors="replace")
            except (http.client.HTTPException, OSError):
                self.conn.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")


# Quotas (the global mode here and in test-k8s-scale-out)


def call(port: int, key: str) -> tuple:
    """One request on its own connection: (status, headers, body)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=tls_context(), timeout=10)
    try:
        conn.request("POST", CHAT, body="{}", headers={"authorization": f"Bearer {key}",
                                                          "content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return 0, {}, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def room_in_minute(need: float) -> None:
    """Waits until `need` seconds are left in the current minute (the
    windows are clock-aligned)."""
    left = 60 - time.time() % 60
    if left < need:
        time.sleep(left + 0.5)


def hammer(ports, key: str, total: int, threads: int = 6) -> list:
    """`total` requests from `threads` threads, spread over every gateway."""
    results, lock = [], threading.Lock()

    def worker(n):
        for i in range(n, total, threads):
            r = call(ports[i % len(ports)], key)
            with lock:
                results.append(r)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


def exactly_admitted(results: list, quota: int) -> tuple:
    """(ok, detail): `quota` of the results admitted, every other one a 429
    with Retry-After, RateLimit-* and the OpenAI-style rate_limit_exceeded JSON."""
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    good_429 = all(1 <= int(h.get("retry-after", "0")) <= 60 and h.get("ratelimit-remaining") == "0"
                   and h.get("ratelimit-limit") == str(quota) and quota_code(b) == "rate_limit_exceeded"
                   for _, h, b in refused)
    ok = len(admitted) == quota and len(refused) == len(results) - quota and good_429
    others = [r[0] for r in results if r[0] not in (200, 429)]
    return ok, f"{len(admitted)} admitted, {len(refused)} refused, others {others}; a refusal: {refused[:1]}"


def quota_code(body: str) -> str:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""


def wait_listener(timeout=120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = Client().request(method="GET", path="/", body=None)
            if status:
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.5)
    return False


def from_container(ip: str, key: str) -> str:
    """Status code of a request sent from a container on the network with
    address `ip` (each call its own address: Docker frees one lazily)."""
    net = f"{PROJECT}_default"
    argv = [
        "docker", "run", "--rm", "-i", "--network", net, "--ip", ip, "--user", USER, "--read-only",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
        "-v", f"{SECRETS / 'tls.crt'}:/tls.crt:ro", "tokenhub/client:dev",
        "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert", "/tls.crt",
        # HTTP/1.1: curl 7.88 over HTTP/2 reports "(92) Stream error" when
        # the gateway refuses a request before reading its body.
        "--http1.1", "-H", "@-", "-X", "POST", "-d", "{}", f"https://envoy:8443{CHAT}",
    ]
    # Up to 3 tries when no HTTP status came back at all (a container's
    # network that does not pass traffic yet); any status is final.
    for attempt in range(3):
        proc = run(argv, input=f"authorization: Bearer {key}\n", check=False, timeout=120)
        got = proc.stdout.strip()
        if got not in ("", "000"):
            return got
        log(f"no HTTP answer from {ip} (try {attempt + 1}): exit {proc.returncode} {proc.stderr.strip()}")
        time.sleep(1)
    return f"{got} (exit {proc.returncode}: {proc.stderr.strip()})"


def api(method: str, path: str, token: str, body=None, otp=None, timed=False):
    """The admin API from inside the sidecar's network namespace (service
    admin-api), the token and code on stdin. `timed`: also the wall-clock
    time just before curl started, taken inside the container (the same
    kernel clock as the host's)."""
    headers = f"authorization: Bearer {token}\n" + (f"x-tokenhub-otp: {otp}\n" if otp else "")
    args = ["run", "--rm", "-T", "--no-deps"]
    if timed:
        args += ["--entrypoint", "sh", "admin-api", "-c", 'date +%s.%N; exec curl -sS --max-time 30 "$@"', "sh"]
    else:
        args += ["admin-api"]
    args += ["-H", "@-", "-X", method, "-w", "\n%{http_code}"]
    if body is not None:
        args += ["-H", "content-type: application/json", "-d", json.dumps(body)]
    out = compose(*args, f"http://127.0.0.1:8081{path}", input=headers, check=False, timeout=120).stdout
    started = None
    if timed:
        first, _, out = out.partition("\n")
        started = float(first) if first.replace(".", "", 1).isdigit() else None
    text, _, code = out.rpartition("\n")
    try:
        reply = int(code), json.loads(text) if text.strip() else None
    except ValueError:
        reply = 0, out
    return (*reply, started) if timed else reply


def cli(*args, input=None, check=True):
    return compose("exec", "-T", "admin", "tokenhub-admin", *args, input=input, check=check)


def totp(secret_b32: str, step: int) -> str:
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


class Otp:
    """Fresh codes: each code works once, steps of 30 s, ±1 step accepted."""

    def __init__(self, secret: str):
        self.secret = secret
        self.last = None

    def next(self) -> str:
        step = int(time.time()) // 30
        if self.last is not None and step <= self.last:
            step = self.last + 1
            while step > int(time.time()) // 30 + 1:
                time.sleep(1)
        self.last = step
        return totp(self.secret, step)


def status_until(key: str, want: int, timeout: float) -> tuple:
    """Polls on one kept-alive connection; (reached, first time it answered `want`)."""
    client = Client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = client.request(key)
        if status == want:
            return True, time.time()
        time.sleep(0.01)
    return False, None


# ---------------------------------------------------------------------------
# Checks


def check_hardening(report: checks.Report) -> None:
    declared = json.loads(compose("config", "--format", "json").stdout)["services"]
    for name, spec in declared.items():
        if name == "admin-api":
            continue
        info = inspect(container(name))
        cfg, host = info["Config"], info["HostConfig"]
        want = {
            "user": (spec.get("user"), cfg.get("User")),
            "read_only": (spec.get("read_only"), host.get("ReadonlyRootfs")),
            "cap_drop": (spec.get("cap_drop"), host.get("CapDrop")),
            "security_opt": (spec.get("security_opt"), host.get("SecurityOpt")),
        }
        as_declared = all(a == b for a, b in want.values())
        hardened = (
            cfg.get("User") == USER and host.get("ReadonlyRootfs") is True and host.get("CapDrop") == ["ALL"]
            and not host.get("CapAdd") and not host.get("Privileged")
            and "no-new-privileges:true" in (host.get("SecurityOpt") or [])
        )
        report.check(as_declared and hardened, f"container {name}: {USER}, read-only, cap_drop ALL, "
                     "no-new-privileges, as declared", json.dumps(want) if not as_declared else "")
        pid = info["State"].get("Pid") or 0
        if pid:
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            uids = fields["Uid"].split()
            cap_eff = int(fields["CapEff"].strip(), 16)
            report.check(set(uids) == {"65532"} and cap_eff == 0,
                         f"container {name}: main process runs as uid 65532 with no effective capability",
                         f"Uid {uids}, CapEff {cap_eff:x}")
        elif name == "setup":
            report.check(info["State"].get("ExitCode") == 0, "container setup: ran once and exited 0")


def check_published_ports(report: checks.Report) -> None:
    ports = {}
    for name in ("envoy", "admin"):
        ports[name] = inspect(container(name))["NetworkSettings"]["Ports"] or {}
    envoy_ok = set(ports["envoy"]) == {"8443/tcp"} and all(
        b["HostIp"] == "127.0.0.1" for b in ports["envoy"]["8443/tcp"] or []
    )
    report.check(envoy_ok, "only Envoy's TLS listener is published, on the host's loopback", json.dumps(ports["envoy"]))
    report.check(not any(v for v in ports["admin"].values()), "the admin API is not published", json.dumps(ports["admin"]))
    # From another container on the network: neither admin port answers.
    argv = ["docker", "run", "--rm", "--network", f"{PROJECT}_default", "--user", USER, "--read-only",
            "--cap-drop", "ALL", "tokenhub/client:dev", "-sS", "-o", "/dev/null", "--max-time", "5"]
    for host, port in (("admin", 8081), ("envoy", 9901), ("envoy", 8443)):
        proc = run(argv + [f"http://{host}:{port}/"], check=False)
        refused = proc.returncode == 7  # curl: could not connect
        if port == 8443:  # the control: the same client reaches a listening port
            report.check(not refused, "control: another container on the network reaches envoy:8443", proc.stderr.strip())
        else:
            report.check(refused, f"{host}:{port} refuses another container on the network", proc.stderr.strip())


def check_tls(report: checks.Report) -> None:
    def handshake(ctx):
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    return tls.version()
        except ssl.SSLError as e:
            return f"refused: {e.reason}"

    v13 = handshake(tls_context(minimum=ssl.TLSVersion.TLSv1_3))
    v12 = handshake(tls_context(maximum=ssl.TLSVersion.TLSv1_2))
    report.check(v13 == "TLSv1.3", "TLS 1.3 handshake completes", v13)
    report.check(v12.startswith("refused"), "TLS 1.2 handshake is refused", v12)


def main() -> int:
    global COMPOSE, ENVOY_IMAGE
    if shutil.which("docker") is None and os.geteuid() != 0:
        print("test-docker: needs Docker (or root, to install it)", file=sys.stderr)
        return 1
    report = Report()
    ENVOY_IMAGE = ""
    COMPOSE = compose_cmd()
    log(f"compose: {' '.join(COMPOSE)} ({run(COMPOSE + ['version', '--short']).stdout.strip()})")
    ENVOY_IMAGE = run([str(ROOT / "tools" / "docker-images.sh")], timeout=900).stdout.strip().split("\n")[-1]
    log(f"images built (Envoy: {ENVOY_IMAGE})")
    down()
    shutil.rmtree(SECRETS, ignore_errors=True)
    try:
        t0 = time.monotonic()
        up = run([str(DOCKER_DIR / "up.sh"), "--offline"], env=stack_env(), check=False, timeout=900)
        report.check(up.returncode == 0 and "Demo key" in up.stdout, "envoy/docker/up.sh --offline brings the demo up",
                     f"{time.monotonic() - t0:.1f} s" if up.returncode == 0 else up.stderr[-3000:])
        if up.returncode != 0:
            return finish(report)
        keys = dict(line.split("=", 1) for line in (SECRETS / "demo-keys").read_text().split())
        key, us_key = keys["KEY"], keys["US_KEY"]

        check_hardening(report)
        check_published_ports(report)
        check_tls(report)

        client = Client()
        status, body = client.request(key)
        echoed = json.loads(body) if status == 200 else {}
        headers = {k: v for k, v in echoed.get("headers", [])}
        report.check(status == 200 and headers.get("x-tokenhub-tenant") == "demo"
                     and headers.get("x-tokenhub-region") == "eu"
                     and headers.get("authorization") == f"Bearer {PROVIDER_SECRET}" and key not in body,
                     "a demo key works from the host: eu upstream, provider credential injected, key not forwarded",
                     f"{status}")
        status, body = client.request(us_key, headers={"x-tokenhub-region": "eu"})
        region = dict(json.loads(body).get("headers", [])).get("x-tokenhub-region") if status == 200 else None
        report.check(status == 200 and region == "us", "a us tenant's key reaches the us upstream whatever it claims",
                     f"{status} {region}")
        status, _ = client.request(key, headers={"x-tokenhub-tenant": "other"})
        report.check(status == 403, "a spoofed tenant header is refused", str(status))
        status, _ = client.request(key[:-1] + ("x" if key[-1] != "x" else "y"))
        report.check(status == 401, "a mistyped key is refused", str(status))

        # An admin with a token; the IP allowlist test tenant through the API.
        cli("admin", "add", "tester", "--role", "platform")
        token = json.loads(cli("--json", "admin", "token", "create", "tester").stdout)["token"]
        code, _ = api("GET", "/healthz", token)
        report.check(code == 200, "the admin API answers inside the sidecar's network namespace", str(code))
        allowed_ip, other_ip = f"{SUBNET}.200", f"{SUBNET}.201"
        code1, _ = api("POST", "/v1/tenants", token, {"id": "iptest", "name": "IP test", "region": "eu"})
        code2, _ = api("POST", "/v1/ip/allow", token, {"tenant": "iptest", "cidrs": [f"{allowed_ip}/32"]})
        code3, made = api("POST", "/v1/keys", token, {"tenant": "iptest", "name": "ip-key"})
        report.check((code1, code2, code3) == (201, 200, 201), "tenant, allowlist and key created through the admin API",
                     f"{code1} {code2} {code3}")
        ip_key = (made or {}).get("key", "")
        ok, _ = status_until(ip_key, 403, 10)  # published: the gateway address is not allowed
        got = (from_container(allowed_ip, ip_key), from_container(other_ip, ip_key), Client().request(ip_key)[0])
        report.check(got == ("200", "403", 403), "IP allowlist: the allowed container 200, another container 403, "
                     "the host (from the gateway address) 403", f"{got}")
        got = from_container(f"{SUBNET}.202", key)
        report.check(got == "403", "the demo key (gateway address allowed) is refused from a container's address", got)

        # A key to revoke; then 2FA on for the admin, and the revoke
        # through the sidecar's API.
        # For the global quota phase, a key with a limit of its own.
        metered = json.loads(cli("--json", "key", "create", "--tenant", "demo", "--name", "metered").stdout)
        cli("quota", "set", "--key", metered["key_id"], "--per-minute", str(QUOTA))
        created = json.loads(cli("--json", "key", "create", "--tenant", "demo", "--name", "victim", "--publish").stdout)
        victim, victim_id = created["key"], created["key_id"]
        enroll = json.loads(cli("--json", "--as", "tester", "2fa", "enroll").stdout)
        otp = Otp(enroll["secret"])
        cli("--as", "tester", "--otp-stdin", "2fa", "verify", input=otp.next() + "\n")
        code, _ = api("POST", f"/v1/keys/{(made or {}).get('key_id')}/disable", token)
        report.check(code in (401, 403), "with 2FA on, a change without a code is refused", str(code))
        ok, _ = status_until(victim, 200, 10)
        report.check(ok, "a new key works once published", "")
        result = {}

        def poll():
            result["bit"], result["at"] = status_until(victim, 401, 15)

        poller = threading.Thread(target=poll)
        poller.start()
        code, body, sent = api("POST", f"/v1/incident/revoke/{victim_id}", token, otp=otp.next(), timed=True)
        poller.join()
        latency = (result["at"] - sent) if result.get("bit") and sent else None
        report.check(code == 200 and latency is not None, "a revoke through the sidecar's API is refused by Envoy",
                     f"API {code}; first 401 {latency * 1000:.0f} ms after the revoke request was sent (target 1 s)"
                     if latency is not None else f"API {code} {body}")

        # The access log: metadata only.
        canary = "CANARY" + os.urandom(6).hex()
        Client().request(f"{key}", path=f"{CHAT}?q={canary}q", headers={"x-note": f"{canary}h"},
                         body=json.dumps({"prompt": f"{canary}b"}))
        last = Client()
        last.request(f"sk-{canary}k")
        deadline = time.monotonic() + 30  # Envoy flushes its access log every second
        while True:
            logs = run(["docker", "logs", container("envoy")], check=False)
            if f'"request_id":"{last.request_id}"' in logs.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        lines = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{")]
        fields_ok = bool(lines) and all(set(line) == ACCESS_LOG_FIELDS for line in lines)
        everything = logs.stdout + logs.stderr + compose("logs", "--no-color", check=False).stdout
        leaks = [what for what in (canary, PROVIDER_SECRET, key, victim, ip_key) if what in everything]
        report.check(fields_ok, "every access log line has exactly the metadata fields", f"{len(lines)} lines")
        report.check(not leaks, "no key, canary (query, header, body) or provider secret in any container's output",
                     f"leaked: {leaks}" if leaks else "")
        denied = [line for line in lines if line.get("reason") == "ip_not_allowed"]
        report.check(any(line.get("client_ip") == other_ip for line in denied),
                     "the access log names the container's own address for an IP denial", "")

        # Restarts with 2FA on: unattended.
        t0 = time.monotonic()
        compose("restart", "admin", "envoy", timeout=180)
        up_again = wait_listener()
        back = Client().request(key)[0] if up_again else 0
        code, _ = api("GET", "/v1/status", token)
        report.check(up_again and back == 200 and Client().request(victim)[0] == 401 and code == 200,
                     "after restarting the sidecar and Envoy (2FA on): same decisions, API up",
                     f"{time.monotonic() - t0:.1f} s, key {back}, API {code}")
        t0 = time.monotonic()
        compose("stop", timeout=180)
        compose("up", "--detach", "--no-build", "--pull", "never", "--wait", "--wait-timeout", "180", timeout=300)
        up_again = wait_listener()
        back = Client().request(key)[0] if up_again else 0
        setup_ok = (inspect(container("setup"))["State"].get("Health") or {}).get("Status") == "healthy"
        report.check(up_again and back == 200 and Client().request(victim)[0] == 401 and setup_ok,
                     "after stopping and starting the whole stack (setup's sync, 2FA on): same decisions",
                     f"{time.monotonic() - t0:.1f} s, key {back}")
        global_quota(report, key, metered, otp)
    except Exception as e:  # a broken step is a failure, and the stack still goes down
        report.check(False, "test-docker ran to the end", f"{type(e).__name__}: {e}")
    finally:
        down()
        left = leftovers()
        report.check(not any(left.values()), "`docker compose down -v` leaves no container, volume or network", json.dumps(left))
        shutil.rmtree(SECRETS, ignore_errors=True)
    return finish(report)


def global_quota(report: checks.Report, key: str, metered: dict, otp: Otp) -> None:
    """The running demo switched to the global quota mode by its override
    file (Redis and the rate limit service added, Envoy recreated with the
    ratelimit filter), then driven through the published port."""
    FILES.append(GLOBAL_OVERRIDE)
    t0 = time.monotonic()
    compose("up", "--detach", "--no-build", "--pull", "never", "--wait", "--wait-timeout", "180", timeout=300)
    up_again = wait_listener()
    check_hardening(report)
    mode = json.loads(cli("--json", "--as", "tester", "--otp-stdin", "--publish", "quota", "mode", "global",
                          input=otp.next() + "\n").stdout)
    version = json.loads(cli("--json", "--as", "tester", "status").stdout)["published"]["version"]
    deadline, logs = time.monotonic() + 30, ""
    while f"bundle version {version} loaded" not in logs and time.monotonic() < deadline:
        logs = run(["docker", "logs", container("ratelimit")], check=False).stderr
        time.sleep(0.2)
    report.check(up_again and mode.get("quota_mode") == "global" and f"bundle version {version} loaded" in logs,
                 f"{GLOBAL_OVERRIDE}: Redis and the rate limit service up, Envoy recreated with the ratelimit "
                 "filter; quota mode global published (2FA) and loaded by the service",
                 f"{time.monotonic() - t0:.1f} s; mode {mode.get('quota_mode')}, version {version}")
    room_in_minute(25)
    ok, detail = exactly_admitted(hammer([PORT], metered["key"], 3 * QUOTA), QUOTA)
    report.check(ok, f"global mode: a key limited to {QUOTA}/min, {3 * QUOTA} requests from 6 threads through the "
                 f"published port: exactly {QUOTA} admitted, the rest 429 with Retry-After and RateLimit-*", detail)
    report.check(call(PORT, key)[0] == 200, "global mode: a key without a limit is still served")
    run(["docker", "kill", container("redis")])
    status, _, body = call(PORT, metered["key"])
    report.check(status == 503 and quota_code(body) == "quota_service_unavailable",
                 "Redis killed: the metered key gets 503 quota_service_unavailable (fail closed)",
                 f"{status} {quota_code(body)}")
    t0 = time.monotonic()
    run(["docker", "start", container("redis")])
    status = 0
    while status not in (200, 429) and time.monotonic() - t0 < 30:
        status = call(PORT, metered["key"])[0]
        time.sleep(0.2)
    report.check(status in (200, 429), "Redis back: the metered key is counted again (200 or 429)",
                 f"{status} after {time.monotonic() - t0:.1f} s")


def finish(report: checks.Report, name: str = "test-docker") -> int:
    log(f"{name} took {time.monotonic() - STARTED:.0f} s")
    return report.summary()


COMPOSE: list = []
ENVOY_IMAGE = ""

if __name__ == "__main__":
    sys.exit(main())
