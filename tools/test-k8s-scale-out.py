#!/usr/bin/env python3
"""`make test-k8s-scale-out`: the scaled-out Kubernetes shape
(envoy/k8s/scale-out: one control plane, three gateways) run as pods in the
Docker engine by the pod runner of `make test-k8s-pods`
(tools/test-k8s-pods.py: generated from the manifests, as the kubelet would
run them), then driven:

  - the control plane and 3 gateway pods come up (probes), hardened as
    declared; the gateways hold no store and no master key;
  - a key works through every gateway; `tokenhub-admin status` inside the
    control-plane pod lists the 3 gateways, in sync;
  - a revoke through the control plane's admin API (2FA on; pod-local, as
    `kubectl port-forward`) is refused by every gateway;
  - a rolling restart of the gateways as the Deployment declares it
    (maxSurge/maxUnavailable: a new pod ready, then an old one out of the
    endpoints, its preStop, then stopped; one at a time) under a client
    loop: no refused, unauthenticated or failed request;
  - the control plane killed (its container, as a crash): every gateway
    keeps serving the same decisions, and a gateway started meanwhile never
    turns ready (until the control plane is back); restarted (as the kubelet does): every
    gateway back in sync, and a new key works on every gateway;
  - the control-plane pod recreated on its claim: refused by its init
    container with a bundle key Secret the store was not made with (the
    gateways keep serving), then with the right one every gateway follows
    it to its new address;
  - the overlay global-quota (Redis, the rate limit service beside the
    control plane, the gateways' config with the ratelimit filter): the
    control-plane pod recreated with it on its claim, the gateways rolled;
    quota mode global published; a key limited to QUOTA/min hammered by 6
    threads over the 3 gateways gets exactly QUOTA through, the rest 429
    with Retry-After and RateLimit-*; the rate limit service killed: 503
    (fail closed), restarted: the count survives; Redis killed: 503
    quota_service_unavailable on every gateway; restarted: counted again.

Stand-ins, besides those of test-k8s-pods: the Service in front of the
gateways is the client loop's own endpoint list (the endpoints controller:
a pod in it once ready, out of it as soon as it terminates); each gateway's
TLS port is published on the host's loopback (PORT + i). Prints one line
per check and "N passed, M failed"; bounded by TIMEOUT.
"""

import base64
import http.client
import importlib.util
import json
import os
import pathlib
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCALE_OUT = ROOT / "envoy" / "k8s" / "scale-out"

_spec = importlib.util.spec_from_file_location("test_k8s_pods", ROOT / "tools" / "test-k8s-pods.py")
kp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kp)
td = kp.td

kp.WORK = ROOT / ".cache" / "docker" / "k8s-scale-out"
kp.PORT = int(os.environ.get("TOKENHUB_K8S_SCALE_OUT_PORT", "29443"))
# Its own network, label and addresses: it may run beside test-k8s-pods.
kp.NET = "tokenhub-k8s-scale-out"
kp.LABEL = "tokenhub.k8s-scale-out=1"
kp.SUBNET = os.environ.get("TOKENHUB_K8S_SCALE_OUT_SUBNET_PREFIX", "172.28.57")
# Images of this tree under their own tag (tools/docker-images.sh): the
# engine's `:dev` images may be rebuilt from another checkout meanwhile.
TAG = os.environ.setdefault("TOKENHUB_IMAGE_TAG", "scale-out")
CLIENT_IMAGE = f"tokenhub/client:{TAG}"


_pods_image_for = kp.image_for


def image_for(image: str) -> str:
    name = _pods_image_for(image)
    return name.rsplit(":", 1)[0] + f":{TAG}" if name.endswith(":dev") else name


kp.image_for = image_for
GATEWAY = "tokenhub-gateway"
CONTROL_PLANE = "tokenhub-control-plane"
REDIS = "tokenhub-redis"
GLOBAL = SCALE_OUT / "global-quota"
# The metered key's per-minute limit in the global phase.
QUOTA = 12
# The whole suite, engine start and image builds aside.
TIMEOUT = float(os.environ.get("TOKENHUB_K8S_SCALE_OUT_TIMEOUT", "600"))
# Twice the 5 s after which a gateway with a first-fetch timeout (the xDS
# template's) would turn ready with nothing to enforce.
LATE_WAIT = 10.0
# Bound on the gateways' reconnection after the control plane's restart.
RECONNECT_WAIT = 60.0
log = kp.log
run = kp.run


def make_secrets(kustomization) -> dict:
    """The files the kustomization's secretGenerator reads, made as README
    says: openssl for the keys and the clients' TLS, tools/xds-certs.sh for
    the xDS certificates."""
    src = kp.WORK / "secrets"
    (src / "xds").mkdir(parents=True, exist_ok=True)
    os.chmod(src, 0o700)
    run(["sh", "-c", f"umask 077; openssl rand -base64 32 > {src}/master.key; openssl rand -base64 32 > {src}/bundle.key"])
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", src / "tls.key", "-out", src / "tls.crt"])
    run([ROOT / "tools" / "xds-certs.sh", src / "xds", "--server-name", CONTROL_PLANE, "gateway"])
    secrets = {}
    for gen in kustomization.get("secretGenerator", []):
        secrets[gen["name"]] = {key: (src / path.removeprefix("secrets/")).read_bytes()
                                for key, _, path in (item.partition("=") for item in gen["files"])}
    return secrets


class Endpoints:
    """The Service's endpoints: published ports of the ready gateways."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ports = []

    def add(self, port):
        with self.lock:
            self.ports.append(port)

    def remove(self, port):
        with self.lock:
            self.ports.remove(port)

    def snapshot(self):
        with self.lock:
            return list(self.ports)


class Load:
    """Client threads, each on a kept-alive connection to one endpoint,
    moving to another when its endpoint leaves the Service (a new
    connection, as kube-proxy sends new connections only to endpoints)."""

    def __init__(self, endpoints: Endpoints, key: str, threads: int = 3):
        self.endpoints, self.key = endpoints, key
        self.stop = threading.Event()
        self.ok = 0
        self.bad = []  # (port, status or error)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(i,), daemon=True) for i in range(threads)]

    def loop(self, n: int) -> None:
        conn, port, i = None, None, n
        while not self.stop.is_set():
            ports = self.endpoints.snapshot()
            if port not in ports:
                if conn:
                    conn.close()
                i += 1
                port = ports[i % len(ports)]
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=td.tls_context(), timeout=10)
            try:
                conn.request("POST", td.CHAT, body="{}", headers={"authorization": f"Bearer {self.key}",
                                                                  "content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                outcome = resp.status
            except (OSError, http.client.HTTPException) as e:
                outcome = f"{type(e).__name__}: {e}"
                conn.close()
                port = None
            with self.lock:
                if outcome == 200:
                    self.ok += 1
                else:
                    self.bad.append((port, outcome))
            time.sleep(0.01)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def on_port(port: int, key: str) -> int:
    """One request through the gateway published on `port`."""
    saved = td.PORT
    td.PORT = port
    try:
        return td.Client().request(key)[0]
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        td.PORT = saved


def every(ports, key: str, want: int, timeout: float) -> tuple:
    """Polls until every gateway answers `want`: (all did, seconds)."""
    t0 = time.monotonic()
    pending = set(ports)
    while pending and time.monotonic() - t0 < timeout:
        pending = {p for p in pending if on_port(p, key) != want}
        if pending:
            time.sleep(0.02)
    return not pending, time.monotonic() - t0


def gateways_in_sync(cp, pods, timeout: float = 20.0, who=(), exact=True) -> tuple:
    """`tokenhub-admin status` in the control-plane pod until exactly these
    pods (with exact=False: at least these) are the connected gateways, each
    acknowledging the published version (`who`: --as NAME once 2FA is on;
    a read needs no code)."""
    want = sorted(p.name for p in pods)
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(cp.exec("control-plane", "tokenhub-admin", *who, "--json", "status").stdout)
        version = (status.get("published") or {}).get("version")
        connected = sorted(g["node_id"] for g in status["gateways"] if g["connected"])
        synced = sorted(g["node_id"] for g in status["gateways"] if g["connected"] and g["acked_version"] == version)
        ok = connected == synced == want if exact else set(want) <= set(synced)
        if ok or time.monotonic() > deadline:
            return ok, synced, version


def sync_times(cp, pods, t0: float, timeout: float, who=()) -> dict:
    """Seconds from t0 until each pod is a connected gateway acknowledging
    the published version (None: not within timeout)."""
    seen = {p.name: None for p in pods}
    deadline = time.monotonic() + timeout
    while None in seen.values() and time.monotonic() < deadline:
        proc = cp.exec("control-plane", "tokenhub-admin", *who, "--json", "status", check=False)
        if proc.returncode == 0:
            status = json.loads(proc.stdout)
            version = (status.get("published") or {}).get("version")
            for g in status["gateways"]:
                if g["node_id"] in seen and seen[g["node_id"]] is None and g["connected"] \
                        and g["acked_version"] == version:
                    seen[g["node_id"]] = round(time.monotonic() - t0, 1)
        time.sleep(0.2)
    return seen


def prestop_seconds(spec: dict) -> float:
    envoy = next(c for c in spec["containers"] if c["name"] == "envoy")
    command = envoy.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def global_quota(report, old_cp, old_gateways, secrets, otp, key: str, metered: dict) -> None:
    """The overlay envoy/k8s/scale-out/global-quota: the control-plane pod
    recreated on its claim with the rate limit service beside it, Redis,
    and the gateways rolled to the config with the ratelimit filter; then
    one quota enforced across every gateway, the service and Redis killed."""
    kustomization, docs = kp.manifests(GLOBAL)
    configmaps = {d["metadata"]["name"]: {k: v.encode() for k, v in d["data"].items()}
                  for d in docs if d["kind"] == "ConfigMap"}
    for pod in old_gateways + [old_cp]:
        pod.stop()
        pod.release_volumes()
    # New pod names (and published ports) for the new ReplicaSets.
    pods = kp.pods_from(docs)
    cp = next(p for p in pods if p.name.startswith(f"tk8s-{CONTROL_PLANE}-"))
    redis = next(p for p in pods if p.name.startswith(f"tk8s-{REDIS}-"))
    gateways = [p for p in pods if p.name.startswith(f"tk8s-{GATEWAY}-")]
    for pod in [cp, redis] + gateways:
        pod.name, pod.holder = pod.name + "-g", pod.holder.replace("-pod", "-g-pod")
        pod.replica += 10
    t0 = time.monotonic()
    redis.start(secrets, configmaps)
    cp.start(secrets, configmaps)
    ready = redis.wait_ready(60) and cp.wait_ready(60)
    for pod in gateways:
        pod.start(secrets, configmaps)
    ready = ready and all(p.wait_ready(120) for p in gateways)
    containers = sorted(c["name"] for c in cp.spec["containers"])
    report.check(ready and containers == ["control-plane", "ratelimit"] and len(gateways) == 3,
                 f"global-quota overlay: Redis, the control-plane pod with the rate limit service ({containers}) "
                 f"and {len(gateways)} gateways started from the manifests, probes ready",
                 f"{time.monotonic() - t0:.1f} s")
    if not ready:
        for pod in [redis, cp] + gateways:
            for c in pod.spec["containers"]:
                log(f"{pod.name}-{c['name']}: "
                    + run(["docker", "logs", "--tail", "20", f"{pod.name}-{c['name']}"], check=False).stderr)
        return
    for pod in (redis, cp):
        kp.check_hardening(report, pod)
    ports = [kp.PORT + p.replica for p in gateways]
    admin = lambda *a, **k: cp.exec("control-plane", "tokenhub-admin", *a, **k)  # noqa: E731
    mode = json.loads(admin("--json", "--as", "ops", "--otp-stdin", "--publish", "quota", "mode", "global",
                            input=otp.next() + "\n").stdout)
    synced, nodes, version = gateways_in_sync(cp, gateways, timeout=30, who=("--as", "ops"))
    logs = ""
    deadline = time.monotonic() + 20
    while f"bundle version {version} loaded" not in logs and time.monotonic() < deadline:
        logs = run(["docker", "logs", f"{cp.name}-ratelimit"], check=False).stderr
        time.sleep(0.2)
    report.check(mode.get("quota_mode") == "global" and synced and f"bundle version {version} loaded" in logs,
                 "quota mode global published (2FA): every gateway acknowledges it, the rate limit service "
                 "beside the control plane loads it from the pod's bundle volume", f"{nodes}, version {version}")

    # One key limited to QUOTA/min, hammered by 6 threads over the 3 gateways.
    td.room_in_minute(25)
    window = int(time.time() // 60)
    ok, detail = td.exactly_admitted(td.hammer(ports, metered["key"], 3 * QUOTA), QUOTA)
    report.check(ok, f"a key limited to {QUOTA}/min, {3 * QUOTA} requests from 6 threads over the {len(ports)} "
                 f"gateways: exactly {QUOTA} admitted, the rest 429 with Retry-After and RateLimit-*", detail)
    report.check(all(td.call(p, key)[0] == 200 for p in ports), "a key without a limit is still served by every gateway")

    # The rate limit service crashes: fail closed; the kubelet restarts it
    # and the count goes on (it lives in Redis).
    run(["docker", "kill", f"{cp.name}-ratelimit"])
    down = [td.call(p, metered["key"]) for p in ports]
    report.check(all(s == 503 and td.quota_code(b) == "quota_service_unavailable" for s, _, b in down),
                 "the rate limit service killed: every gateway refuses the metered key with 503 "
                 "quota_service_unavailable (fail closed)", f"{[(s, td.quota_code(b)) for s, _, b in down]}")
    run(["docker", "start", f"{cp.name}-ratelimit"])
    back = cp.wait_ready(30)
    again = [td.call(p, metered["key"])[0] for p in ports]
    report.check(back and again == [429] * len(ports) and int(time.time() // 60) == window,
                 "restarted (as the kubelet does): in the same window the count survives, the key is still over "
                 "its limit on every gateway", f"{again}")

    # Redis killed: the configured failure mode (fail closed), then back.
    run(["docker", "kill", f"{redis.name}-redis"])
    down = [td.call(p, metered["key"]) for p in ports]
    report.check(all(s == 503 and td.quota_code(b) == "quota_service_unavailable" for s, _, b in down),
                 "Redis killed: every gateway answers the metered key 503 quota_service_unavailable (fail closed)",
                 f"{[(s, td.quota_code(b)) for s, _, b in down]}")
    t0 = time.monotonic()
    run(["docker", "start", f"{redis.name}-redis"])
    statuses, recovered = [], redis.wait_ready(30)
    while recovered and time.monotonic() - t0 < 30:
        statuses = [td.call(p, metered["key"])[0] for p in ports]
        if all(s in (200, 429) for s in statuses):
            break
        time.sleep(0.2)
    else:
        recovered = False
    report.check(recovered, "Redis restarted (as the kubelet does): every gateway counts the metered key again "
                 "(200 or 429; Redis keeps counters in memory, so its window starts again)",
                 f"{statuses} after {time.monotonic() - t0:.1f} s")


def main() -> int:
    report = td.Report()
    td.SECRETS = kp.WORK / "secrets"
    td.COMPOSE = td.compose_cmd()  # engine up (installed and started when missing)
    td.ENVOY_IMAGE = run([ROOT / "tools" / "docker-images.sh"], timeout=900).stdout.strip().split("\n")[-1]
    kp.cleanup()
    kustomization, docs = kp.manifests(SCALE_OUT)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    strategy = deployments[GATEWAY]["spec"]["strategy"]["rollingUpdate"]
    t_start = time.monotonic()
    try:
        kp.WORK.mkdir(parents=True)
        secrets = make_secrets(kustomization)
        configmaps = {d["metadata"]["name"]: {k: v.encode() for k, v in d["data"].items()}
                      for d in docs if d["kind"] == "ConfigMap"}
        run(["docker", "network", "create", "--label", kp.LABEL, "--subnet", f"{kp.SUBNET}.0/24", kp.NET])
        pods = kp.pods_from(docs)
        cp = next(p for p in pods if p.name.startswith(f"tk8s-{CONTROL_PLANE}-"))
        gateways = [p for p in pods if p.name.startswith(f"tk8s-{GATEWAY}-")]
        others = [p for p in pods if p is not cp and p not in gateways]
        t0 = time.monotonic()
        for pod in others + [cp]:
            pod.start(secrets, configmaps)
        ready = all(p.wait_ready() for p in others + [cp])
        for pod in gateways:
            pod.start(secrets, configmaps)
        ready = ready and all(p.wait_ready() for p in gateways)
        report.check(ready and len(gateways) == 3,
                     f"control plane and {len(gateways)} gateway pods started from the manifests, probes ready",
                     f"{time.monotonic() - t0:.1f} s")
        if not ready:
            for pod in [cp] + gateways:
                for c in pod.spec.get("initContainers", []) + pod.spec["containers"]:
                    log(f"{pod.name}-{c['name']}: "
                        + run(["docker", "logs", "--tail", "20", f"{pod.name}-{c['name']}"], check=False).stderr)
            return td.finish(report, "test-k8s-scale-out")
        for pod in [cp] + gateways:
            kp.check_hardening(report, pod)

        # The gateways hold no store and no master key: nothing of the
        # volume claim or the master key Secret is mounted, and no
        # TOKENHUB_MASTER_KEY* in the environment.
        for pod in gateways:
            info = json.loads(run(["docker", "inspect", f"{pod.name}-envoy"]).stdout)[0]
            sources = [m["Source"] for m in info["Mounts"]]
            env = [e.split("=", 1)[0] for e in info["Config"]["Env"]]
            clean = (not any("/pvc/" in s or s.endswith("/master-key") for s in sources)
                     and not any(e.startswith("TOKENHUB_MASTER_KEY") for e in env) and "TOKENHUB_BUNDLE_KEY" in env)
            report.check(clean, f"{pod.name}: no store, no master key; the bundle key in Envoy's environment",
                         f"mounts {sources}, env {env}")

        admin = lambda *a, **k: cp.exec("control-plane", "tokenhub-admin", *a, **k)  # noqa: E731
        key, victim = kp.seed(admin)
        # For the global phase: a key with its own per-minute limit (set
        # before 2FA is on; counted by each guard until the mode changes).
        metered = json.loads(admin("--json", "key", "create", "--tenant", "demo", "--name", "metered").stdout)
        admin("quota", "set", "--key", metered["key_id"], "--per-minute", str(QUOTA))
        admin("publish")
        ports = [kp.PORT + p.replica for p in gateways]
        ok, took = every(ports, key, 200, 30)
        report.check(ok, f"a key works through every gateway ({len(ports)}), pushed by the control plane",
                     f"{took:.2f} s after publish")
        synced, nodes, version = gateways_in_sync(cp, gateways)
        report.check(synced,
                     "`tokenhub-admin status` in the control-plane pod lists the 3 gateways (node id = pod name), "
                     f"in sync at version {version}", f"{nodes}")

        # A revoke through the control plane's admin API, 2FA on.
        admin("admin", "add", "ops", "--role", "platform")
        token = json.loads(admin("--json", "admin", "token", "create", "ops").stdout)["token"]
        otp = td.Otp(json.loads(admin("--json", "--as", "ops", "2fa", "enroll").stdout)["secret"])
        admin("--as", "ops", "--otp-stdin", "2fa", "verify", input=otp.next() + "\n")
        headers = f"authorization: Bearer {token}\nx-tokenhub-otp: {otp.next()}\n"
        report.check(all(on_port(p, victim["key"]) == 200 for p in ports), "the victim key works before the revoke")
        code = run(["docker", "run", "--rm", "-i", "--network", f"container:{cp.holder}", "--user", "65532:65532",
                    "--read-only", "--cap-drop", "ALL", CLIENT_IMAGE, "-sS", "-o", "/dev/null", "-w",
                    "%{http_code}", "-H", "@-", "-X", "POST",
                    f"http://127.0.0.1:8081/v1/incident/revoke/{victim['key_id']}"], input=headers, check=False).stdout
        ok, took = every(ports, victim["key"], 401, 15)
        report.check(code == "200" and ok, "a revoke through the control plane's admin API is refused by every gateway",
                     f"API {code}; every gateway 401 within {took * 1000:.0f} ms of the API's answer")
        report.check(all(on_port(p, key) == 200 for p in ports), "the other key still works on every gateway")

        # Rolling restart, as the Deployment declares it, under load.
        endpoints = Endpoints()
        for p in ports:
            endpoints.add(p)
        surge, unavailable = strategy.get("maxSurge", 1), strategy.get("maxUnavailable", 0)
        grace = prestop_seconds(gateways[0].spec)
        t0 = time.monotonic()
        replaced = []
        with Load(endpoints, key) as load:
            time.sleep(1)
            for n, old in enumerate(list(gateways)):
                new = kp.Pod(f"tk8s-{GATEWAY}-{len(gateways) + n}", old.spec, old.aliases, old.ports,
                             len(gateways) + n)
                if surge:  # a new pod first, ready, into the endpoints
                    new.start(secrets, configmaps)
                    if not new.wait_ready(timeout=120):
                        raise RuntimeError(f"{new.name} never became ready")
                    endpoints.add(kp.PORT + new.replica)
                # The old pod terminates: out of the endpoints at once, its
                # preStop hook, then SIGTERM (docker stop).
                endpoints.remove(kp.PORT + old.replica)
                time.sleep(grace)
                run(["docker", "stop", "-t", "30", *[f"{old.name}-{c['name']}" for c in old.spec["containers"]]])
                old.stop()
                if not surge:
                    new.start(secrets, configmaps)
                    if not new.wait_ready(timeout=120):
                        raise RuntimeError(f"{new.name} never became ready")
                    endpoints.add(kp.PORT + new.replica)
                replaced.append(new)
            time.sleep(1)
        gateways = replaced
        ports = [kp.PORT + p.replica for p in gateways]
        report.check(load.ok > 0 and not load.bad,
                     f"rolling restart of the {len(gateways)} gateways (maxSurge {surge}, maxUnavailable "
                     f"{unavailable}, preStop {grace:.0f} s) under a client loop: no refused, unauthenticated "
                     "or failed request",
                     f"{load.ok} answered 200, {len(load.bad)} not: {load.bad[:5]}; {time.monotonic() - t0:.1f} s")
        synced, nodes, version = gateways_in_sync(cp, gateways, who=("--as", "ops"))
        report.check(synced,
                     "after the rolling restart, status lists the 3 new gateways in sync", f"{nodes}")
        report.check(all(on_port(p, victim["key"]) == 401 for p in ports),
                     "the revoked key is refused by every new gateway")

        # The control plane killed: the gateways keep their last bundle.
        run(["docker", "kill", f"{cp.name}-control-plane"])
        time.sleep(2)
        same = all(on_port(p, key) == 200 and on_port(p, victim["key"]) == 401 for p in ports)
        report.check(same, "control plane killed: every gateway keeps serving, same decisions")
        # A gateway started now (a scale-up, a rescheduled pod) has nothing
        # to enforce: it must stay out of the Service until it has.
        late = kp.Pod(f"tk8s-{GATEWAY}-{2 * len(gateways)}", gateways[0].spec, gateways[0].aliases,
                      gateways[0].ports, 2 * len(gateways))
        late.start(secrets, configmaps)
        never = not late.wait_ready(timeout=LATE_WAIT)
        report.check(never, f"a gateway started while the control plane is away is not ready after {LATE_WAIT:.0f} s "
                     "(its probes fail: no listener before the first push)")
        # The kubelet restarts the container (restartPolicy Always).
        t0 = time.monotonic()
        run(["docker", "start", f"{cp.name}-control-plane"])
        back = cp.wait_ready(timeout=60)
        # Bounded, not a speed target: the seconds are reported.
        times = sync_times(cp, gateways + [late], t0, timeout=RECONNECT_WAIT, who=("--as", "ops")) if back else {}
        report.check(back and None not in times.values(),
                     "control plane back: every gateway (the late one too) reconnects and acknowledges",
                     f"seconds from the restart (control plane down {LATE_WAIT + 2:.0f}+ s): {times}")
        late_ready = late.wait_ready(timeout=60)
        late_port = kp.PORT + late.replica
        report.check(late_ready and on_port(late_port, key) == 200 and on_port(late_port, victim["key"]) == 401,
                     "that gateway turns ready once the control plane is back, enforcing the current bundle")
        late.stop()
        fresh = json.loads(admin("--json", "--as", "ops", "--otp-stdin", "--publish", "key", "create", "--tenant",
                                 "demo", "--name", "after", input=otp.next() + "\n").stdout)
        t0 = time.monotonic()
        converged = False
        while not converged and time.monotonic() - t0 < 10:
            converged = all(on_port(p, fresh["key"]) == 200 for p in ports)
        report.check(converged, "a key created after the restart works on every gateway",
                     f"{time.monotonic() - t0:.2f} s")
        # The control plane's metrics, through its Service port (the pod's
        # address), as Prometheus would scrape them.
        metrics_port = next(p["containerPort"] for c in cp.spec["containers"] for p in c.get("ports", [])
                            if p["name"] == "metrics")
        conn = http.client.HTTPConnection(cp.ip, metrics_port, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        in_sync = sorted(line.split('"')[1] for line in text.splitlines()
                         if line.startswith("tokenhub_xds_gateway_in_sync{") and line.endswith(" 1"))
        report.check(in_sync == sorted(p.name for p in gateways),
                     "the control plane's metrics show the 3 gateways in sync", f"{in_sync}")

        # The control-plane pod recreated (strategy Recreate: same claim,
        # a new pod address behind the Service name): first with a bundle
        # key Secret that does not match the store, which its init
        # container refuses; then with the right one, and every gateway
        # follows it to the new address.
        def recreate(with_secrets) -> str:
            cp.stop()
            cp.release_volumes()
            try:
                cp.start(with_secrets, configmaps)
            except RuntimeError as e:
                return str(e)
            return ""

        wrong = dict(secrets, **{"tokenhub-bundle-key": {"bundle.key": base64.b64encode(os.urandom(32)) + b"\n"}})
        refused = recreate(wrong)
        report.check("another bundle key" in refused and "tokenhub-admin bundle-key" in refused,
                     "the control plane's init container refuses a bundle key Secret the store was not made with",
                     refused[-300:])
        down_since = time.monotonic()
        same = all(on_port(p, key) == 200 and on_port(p, victim["key"]) == 401 for p in ports)
        report.check(same, "meanwhile every gateway keeps serving its last bundle")
        t0 = time.monotonic()
        started = not recreate(secrets) and cp.wait_ready(timeout=60)
        synced, nodes, _ = (gateways_in_sync(cp, gateways, timeout=30, who=("--as", "ops")) if started
                            else (False, [], None))
        report.check(started and synced, "the control-plane pod recreated on its claim: every gateway reconnects "
                     "to its new address and acknowledges",
                     f"{time.monotonic() - t0:.1f} s from the new pod's start ({time.monotonic() - down_since:.0f} s "
                     f"down); {nodes}")
        fresh = json.loads(admin("--json", "--as", "ops", "--otp-stdin", "--publish", "key", "create", "--tenant",
                                 "demo", "--name", "recreated", input=otp.next() + "\n").stdout)
        ok, took = every(ports, fresh["key"], 200, 10)
        report.check(ok, "a key created on the recreated control plane works on every gateway", f"{took:.2f} s")
        global_quota(report, cp, gateways, secrets, otp, key, metered)
        report.check(time.monotonic() - t_start < TIMEOUT, f"the suite ran within {TIMEOUT:.0f} s",
                     f"{time.monotonic() - t_start:.0f} s")
    except Exception as e:
        report.check(False, "test-k8s-scale-out ran to the end", f"{type(e).__name__}: {e}")
    finally:
        left = kp.cleanup()
        report.check(not any(left.values()), "nothing left behind (containers, network, mounts)", json.dumps(left))
    return td.finish(report, "test-k8s-scale-out")


if __name__ == "__main__":
    sys.exit(main())
