#!/usr/bin/env python3
"""`make test-k8s-pods`: the Kubernetes manifests (envoy/k8s) run as pods in
the Docker engine, as the kubelet would run them, generated from the
manifests (nothing restated here), then driven with the Docker suite's
checks. No Kubernetes can run on this machine; this is the closest
stand-in:

  - every Deployment in kustomization.yaml's resources becomes one pod
    (replicas beyond 1 are started as further pods); a pod is a holder
    container owning the network namespace (like the kubelet's pause
    container) on a network where each Service selecting the pod is a DNS
    alias, and the pod's containers join that namespace (so 127.0.0.1 is
    the pod's own loopback);
  - securityContext as declared: runAsUser/runAsGroup, fsGroup as a
    supplementary group and as the group of every volume, read-only root,
    capabilities dropped, no-new-privileges for allowPrivilegeEscalation:
    false, the engine's default seccomp profile for RuntimeDefault;
    resources.limits as memory and CPU limits;
  - volumes as the kubelet makes them: emptyDir a 2777 root:fsGroup
    directory (a tmpfs of sizeLimit for medium: Memory), the PVC the same
    on disk (kept across pod restarts), Secret and ConfigMap volumes in the
    atomic-writer layout (timestamped directory, `..data` symlink, one
    symlink per key) with defaultMode | 0440 and root:fsGroup, read-only;
    Secrets from kustomization.yaml's secretGenerator files (made here with
    openssl), ConfigMaps from the manifests;
  - command/args with Kubernetes' `$(VAR)` and `$$` expansion, env;
  - init containers run first, to completion; then the containers; the
    startup and readiness probes polled (httpGet, tcpSocket) against the
    pod's address, as the kubelet does from the node.

Images: the offline ones (tools/docker-images.sh) stand in for the
kustomization's registry names and the pinned envoyproxy/envoy image.
Envoy's TLS port is published on the host's loopback, standing in for
`kubectl port-forward`; Service port remapping (443 -> 8443) is not
simulated. Prints one line per check and "N passed, M failed".
"""

import json
import os
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import http.client
import importlib.util

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "envoy" / "k8s"
WORK = ROOT / ".cache" / "docker" / "k8s-pods"
NET = "tokenhub-k8s-pods"
SUBNET = os.environ.get("TOKENHUB_K8S_SUBNET_PREFIX", "172.28.55")
PORT = int(os.environ.get("TOKENHUB_K8S_PORT", "28443"))
# tools/docker-base.sh builds it (mmdebstrap, Debian's redis-server).
REDIS_IMAGE = "tokenhub/debian-redis:bookworm"
LABEL = "tokenhub.k8s-pods=1"
STARTED = time.monotonic()

# The Docker suite's helpers (TOTP, report).
_spec = importlib.util.spec_from_file_location("test_docker", ROOT / "tools" / "test-docker.py")
td = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(td)


def log(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {msg}", flush=True)


def run(argv, *, input=None, check=True, timeout=300):
    proc = subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


# ---------------------------------------------------------------------------
# The manifests


_spec = importlib.util.spec_from_file_location("kustomize_lite", ROOT / "tools" / "kustomize_lite.py")
kustomize_lite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kustomize_lite)


def manifests(k8s=None):
    """(kustomization, documents): resources, bases and patches applied."""
    return kustomize_lite.render(k8s or K8S)


def make_secrets(kustomization) -> dict:
    """secretGenerator's files, made as README.md says (openssl)."""
    src = WORK / "secrets"
    src.mkdir(parents=True, exist_ok=True)
    os.chmod(src, 0o700)
    run(["sh", "-c", f"umask 077; openssl rand -base64 32 > {src}/master.key"])
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", src / "tls.key", "-out", src / "tls.crt"])
    secrets = {}
    for gen in kustomization.get("secretGenerator", []):
        data = {}
        for item in gen["files"]:
            key, _, path = item.partition("=")
            data[key] = (src / pathlib.Path(path).name).read_bytes()
        secrets[gen["name"]] = data
    return secrets


def expand(text: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion of command and args; $$ is a literal $."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def image_for(image: str) -> str:
    name = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image
    if name == "envoyproxy/envoy":
        return td.ENVOY_IMAGE
    if name == "redis":  # the official image: Debian's redis-server on the offline base
        return REDIS_IMAGE
    return f"{name}:dev"


# ---------------------------------------------------------------------------
# Volumes, as the kubelet lays them out


def atomic_writer(path: pathlib.Path, files: dict, mode: int, gid) -> None:
    stamp = path / time.strftime("..%Y_%m_%d_%H_%M_%S.000000001")
    stamp.mkdir(parents=True)
    for key, content in files.items():
        f = stamp / key
        f.write_bytes(content)
        f.chmod(mode)
        os.chown(f, 0, gid if gid is not None else 0)
        (path / key).symlink_to(f"..data/{key}")
    (path / "..data").symlink_to(stamp.name)
    # As on a node: the volume's root 3777 (1777 without fsGroup), the
    # timestamped directory 2755 (0755), both root:fsGroup.
    path.chmod(0o1777 if gid is None else 0o3777)
    stamp.chmod(0o755 if gid is None else 0o2755)
    for d in (path, stamp):
        os.chown(d, 0, gid if gid is not None else 0)


def make_volumes(pod: str, spec: dict, secrets: dict, configmaps: dict) -> dict:
    fs_group = spec.get("securityContext", {}).get("fsGroup")
    vols = {}
    for vol in spec.get("volumes", []):
        name = vol["name"]
        if "persistentVolumeClaim" in vol:
            path = WORK / "pvc" / vol["persistentVolumeClaim"]["claimName"]
            fresh = not path.exists()
        else:
            path = WORK / "pods" / pod / name
            fresh = True
        if "emptyDir" in vol or "persistentVolumeClaim" in vol:
            path.mkdir(parents=True, exist_ok=True)
            if (vol.get("emptyDir") or {}).get("medium") == "Memory":
                size = (vol["emptyDir"].get("sizeLimit") or "64Mi").replace("Mi", "m").replace("Gi", "g")
                run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", path])
            if fresh:
                path.chmod(0o777)
            if fs_group is not None:  # SetVolumeOwnership: group fsGroup, setgid, group rw
                os.chown(path, -1, fs_group)
                path.chmod(0o2777)
            vols[name] = (path, False)
        elif "secret" in vol or "configMap" in vol:
            kind = "secret" if "secret" in vol else "configMap"
            src = vol[kind]
            data = secrets[src["secretName"]] if kind == "secret" else configmaps[src["name"]]
            mode = src.get("defaultMode", 0o644)
            if fs_group is not None:
                mode |= 0o440  # read-only volume with fsGroup
            if src.get("items"):  # only the listed keys, at their paths
                data = {item["path"]: data[item["key"]] for item in src["items"]}
            path.mkdir(parents=True)
            atomic_writer(path, data, mode, fs_group)
            vols[name] = (path, True)
        else:
            raise RuntimeError(f"pod {pod}: volume {name} of a kind this runner does not know")
    return vols


# ---------------------------------------------------------------------------
# Pods


class Pod:
    def __init__(self, name: str, spec: dict, aliases: list, ports: list, replica: int = 0):
        self.name, self.spec, self.aliases, self.ports, self.replica = name, spec, aliases, ports, replica
        self.holder = f"{name}-pod"
        self.vols = {}
        self.ip = None
        self.secrets = {}

    def container_argv(self, c: dict, detach: bool) -> list:
        pod_ctx = self.spec.get("securityContext", {})
        ctx = c.get("securityContext", {})
        user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
        argv = ["docker", "run", "--name", f"{self.name}-{c['name']}", "--label", LABEL,
                "--network", f"container:{self.holder}"]
        argv += ["-d"] if detach else []
        if user is not None:
            argv += ["--user", f"{user}:{group if group is not None else 0}"]
        if pod_ctx.get("fsGroup") is not None:
            argv += ["--group-add", str(pod_ctx["fsGroup"])]
        if ctx.get("readOnlyRootFilesystem"):
            argv += ["--read-only"]
        for cap in ctx.get("capabilities", {}).get("drop", []):
            argv += ["--cap-drop", cap]
        if ctx.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges:true"]
        limits = c.get("resources", {}).get("limits", {})
        if "memory" in limits:
            argv += ["--memory", limits["memory"].replace("Mi", "m").replace("Gi", "g")]
        if "cpu" in limits:
            cpu = str(limits["cpu"])
            argv += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
        env, secret_env = {}, {}
        for e in c.get("env", []):
            source = e.get("valueFrom") or {}
            if "fieldRef" in source:  # the downward API: the pod's name
                if source["fieldRef"]["fieldPath"] != "metadata.name":
                    raise RuntimeError(f"{self.name}: env {e['name']}: fieldRef this runner does not know")
                env[e["name"]] = self.name
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret_env[e["name"]] = self.secrets[ref["name"]][ref["key"]].decode()
            else:
                env[e["name"]] = e.get("value", "")
        for k, v in env.items():
            argv += ["-e", f"{k}={v}"]
        if secret_env:  # through a private file, never on the command line
            env_file = WORK / "pods" / self.name / f"{c['name']}.env"
            env_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.writelines(f"{k}={v.strip()}\n" for k, v in secret_env.items())
            argv += ["--env-file", env_file]
        for m in c.get("volumeMounts", []):
            path, ro = self.vols[m["name"]]
            argv += ["-v", f"{path}:{m['mountPath']}{':ro' if ro or m.get('readOnly') else ''}"]
        command = [expand(a, env) for a in c.get("command", [])]
        args = [expand(a, env) for a in c.get("args", [])]
        if command:
            argv += ["--entrypoint", command[0], image_for(c["image"])] + command[1:] + args
        else:
            argv += [image_for(c["image"])] + args
        return argv

    def start(self, secrets, configmaps) -> None:
        self.secrets = secrets
        if not self.vols:
            self.vols = make_volumes(self.name, self.spec, secrets, configmaps)
        holder = ["docker", "run", "-d", "--name", self.holder, "--label", LABEL, "--network", NET,
                  "--read-only", "--cap-drop", "ALL", "--user", "65532:65532", "--security-opt", "no-new-privileges:true"]
        for alias in self.aliases:
            holder += ["--network-alias", alias]
        for port in self.ports:  # replica i on PORT + i
            holder += ["-p", f"127.0.0.1:{PORT + self.replica}:{port}"]
        run(holder + ["--entrypoint", "sleep", "tokenhub/debian-base:bookworm", "infinity"])
        self.ip = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                       self.holder]).stdout.strip()
        for c in self.spec.get("initContainers", []):
            proc = run(self.container_argv(c, detach=False), check=False, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"{self.name}: init container {c['name']} failed: {proc.stderr[-2000:]}")
        for c in self.spec["containers"]:
            run(self.container_argv(c, detach=True))

    def port_number(self, c: dict, port) -> int:
        if isinstance(port, int):
            return port
        return next(p["containerPort"] for p in c.get("ports", []) if p.get("name") == port)

    def probe_ok(self, c: dict, probe: dict) -> bool:
        try:
            if "httpGet" in probe:
                conn = http.client.HTTPConnection(self.ip, self.port_number(c, probe["httpGet"]["port"]), timeout=2)
                conn.request("GET", probe["httpGet"].get("path", "/"))
                return 200 <= conn.getresponse().status < 400
            if "tcpSocket" in probe:
                with socket.create_connection((self.ip, self.port_number(c, probe["tcpSocket"]["port"])), timeout=2):
                    return True
        except OSError:
            return False
        return False

    def wait_ready(self, timeout=180.0) -> bool:
        """Every container's startup probe, then readiness probe, polled."""
        deadline = time.monotonic() + timeout
        for c in self.spec["containers"]:
            for kind in ("startupProbe", "readinessProbe"):
                probe = c.get(kind)
                while probe and not self.probe_ok(c, probe):
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(min(probe.get("periodSeconds", 10), 1))
        return True

    def stop(self) -> None:
        names = run(["docker", "ps", "-a", "-q", "--filter", f"name=^{self.name}-"]).stdout.split()
        if names:
            run(["docker", "rm", "-f", "-v", *names], check=False)

    def release_volumes(self) -> None:
        """The pod's own volumes gone, as when the kubelet deletes a pod
        (its claims stay); the next start makes them afresh."""
        for path, _ in self.vols.values():
            if str(path).startswith(str(WORK / "pods")):
                run(["umount", path], check=False)
                shutil.rmtree(path, ignore_errors=True)
        self.vols = {}

    def exec(self, container: str, *argv, input=None, check=True):
        return run(["docker", "exec", "-i", f"{self.name}-{container}", *argv], input=input, check=check)


def pods_from(docs) -> list:
    services = [d for d in docs if d["kind"] == "Service"]
    pods = []
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        template = d["spec"]["template"]
        labels = template["metadata"]["labels"]
        aliases = [s["metadata"]["name"] for s in services
                   if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        published = [p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
                     if p.get("name") == "https"]
        for i in range(d["spec"].get("replicas", 1)):
            pods.append(Pod(f"tk8s-{d['metadata']['name']}-{i}", template["spec"], aliases, published, i))
    return pods


def cleanup() -> dict:
    ids = run(["docker", "ps", "-a", "-q", "--filter", f"label={LABEL}"]).stdout.split()
    if ids:
        run(["docker", "rm", "-f", "-v", *ids], check=False)
    run(["docker", "network", "rm", NET], check=False)
    if WORK.exists():
        for line in pathlib.Path("/proc/mounts").read_text().splitlines():
            mnt = line.split()[1]
            if mnt.startswith(str(WORK)):
                run(["umount", mnt], check=False)
        shutil.rmtree(WORK, ignore_errors=True)
    return {
        "containers": run(["docker", "ps", "-a", "-q", "--filter", f"label={LABEL}"]).stdout.split(),
        "networks": run(["docker", "network", "ls", "-q", "--filter", f"name=^{NET}$"]).stdout.split(),
        "mounts": [ln for ln in pathlib.Path("/proc/mounts").read_text().splitlines() if str(WORK) in ln],
    }


# ---------------------------------------------------------------------------
# Checks


def seed(admin) -> tuple:
    """A tenant (eu), the provider, the host clients' address (the
    network's gateway) allowed, a key and a victim key; not published.
    `admin` runs tokenhub-admin in the pod that holds the store."""
    admin("tenant", "add", "demo", "--region", "eu")
    admin("provider", "set", "openai", "--path-prefix", "/v1/", "--header", "authorization", "--format",
          "Bearer {secret}", input=td.PROVIDER_SECRET)
    admin("ip", "allow", "--tenant", "demo", f"{SUBNET}.1/32")
    key = json.loads(admin("--json", "key", "create", "--tenant", "demo").stdout)["key"]
    victim = json.loads(admin("--json", "key", "create", "--tenant", "demo", "--name", "victim").stdout)
    return key, victim


def check_hardening(report, pod: Pod) -> None:
    pod_ctx = pod.spec.get("securityContext", {})
    for c in pod.spec["containers"]:
        ctx = c.get("securityContext", {})
        info = json.loads(run(["docker", "inspect", f"{pod.name}-{c['name']}"]).stdout)[0]
        host = info["HostConfig"]
        want_user = f"{ctx.get('runAsUser', pod_ctx.get('runAsUser'))}:{ctx.get('runAsGroup', pod_ctx.get('runAsGroup'))}"
        ok = (info["Config"]["User"] == want_user and host["ReadonlyRootfs"] == bool(ctx.get("readOnlyRootFilesystem"))
              and host["CapDrop"] == ctx.get("capabilities", {}).get("drop")
              and ("no-new-privileges:true" in (host.get("SecurityOpt") or [])) == (ctx.get("allowPrivilegeEscalation") is False)
              and str(pod_ctx.get("fsGroup")) in (host.get("GroupAdd") or [str(None)]))
        report.check(ok, f"{pod.name}/{c['name']}: user {want_user}, fsGroup, read-only root, capabilities as declared")
        pid = info["State"].get("Pid") or 0
        status = pathlib.Path(f"/proc/{pid}/status").read_text() if pid else ""
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid_ok = set(fields.get("Uid", "").split()) == {str(pod_ctx.get("runAsUser"))}
        cap_ok = int(fields.get("CapEff", "1").strip(), 16) == 0
        report.check(uid_ok and cap_ok, f"{pod.name}/{c['name']}: main process runs as uid "
                     f"{pod_ctx.get('runAsUser')} with no effective capability")


def main() -> int:
    report = td.Report()
    td.PORT, td.SECRETS = PORT, WORK / "secrets"
    td.COMPOSE = td.compose_cmd()  # engine up (installed and started when missing)
    td.ENVOY_IMAGE = run([ROOT / "tools" / "docker-images.sh"], timeout=900).stdout.strip().split("\n")[-1]
    cleanup()
    kustomization, docs = manifests()
    try:
        WORK.mkdir(parents=True)
        secrets = make_secrets(kustomization)
        configmaps = {d["metadata"]["name"]: {k: v.encode() for k, v in d["data"].items()}
                      for d in docs if d["kind"] == "ConfigMap"}
        run(["docker", "network", "create", "--label", LABEL, "--subnet", f"{SUBNET}.0/24", NET])
        pods = pods_from(docs)
        # The first gateway replica is the one driven (published on PORT).
        gateway = next(p for p in pods if any(c["name"] == "envoy" for c in p.spec["containers"]))
        t0 = time.monotonic()
        for pod in sorted(pods, key=lambda p: p is gateway):  # upstreams first
            pod.start(secrets, configmaps)
        ready = all(p.wait_ready() for p in pods)
        report.check(ready, f"{len(pods)} pods started from the manifests (init containers first), probes ready",
                     f"{time.monotonic() - t0:.1f} s")
        if not ready:
            for c in gateway.spec["containers"]:
                log(run(["docker", "logs", "--tail", "20", f"{gateway.name}-{c['name']}"], check=False).stderr)
            return td.finish(report, "test-k8s-pods")

        for pod in pods:
            check_hardening(report, pod)

        # The master key Secret as the sidecar sees it.
        key_path = next(e["value"] for c in gateway.spec["containers"] if c["name"] == "admin"
                        for e in c.get("env", []) if e["name"] == "TOKENHUB_MASTER_KEY_FILE")
        seen = gateway.exec("admin", "tokenhub-admin", "status", check=False)
        layout = run(["docker", "run", "--rm", "--volumes-from", f"{gateway.name}-admin", "--user", "0",
                      "tokenhub/debian-base:bookworm", "stat", "-L", "-c", "%a %u:%g", key_path]).stdout.strip()
        link = run(["docker", "run", "--rm", "--volumes-from", f"{gateway.name}-admin", "--user", "0",
                    "tokenhub/debian-base:bookworm", "readlink", key_path]).stdout.strip()
        report.check(seen.returncode == 0 and link.startswith("..data/") and layout.startswith("440 0:"),
                     "the sidecar opens the master key mounted as the kubelet does (..data symlink, 0440 root:fsGroup)",
                     f"{key_path} -> {link}, {layout}")

        # Tenants and keys through the sidecar (kubectl exec); host clients
        # come through the published port, from the network's gateway.
        admin = lambda *a, **k: gateway.exec("admin", "tokenhub-admin", *a, **k)  # noqa: E731
        key, victim = seed(admin)
        admin("publish")
        ok, _ = td.status_until(key, 200, 15)
        report.check(ok, "a key works through the gateway pod's TLS port")
        client = td.Client()
        report.check(client.request(key, headers={"x-tokenhub-tenant": "x"})[0] == 403, "a spoofed tenant is refused")
        td.check_tls(report)

        # 2FA on; a revoke through the admin API on the pod's loopback
        # (a container in the pod's network namespace: kubectl port-forward).
        admin("admin", "add", "ops", "--role", "platform")
        token = json.loads(admin("--json", "admin", "token", "create", "ops").stdout)["token"]
        otp = td.Otp(json.loads(admin("--json", "--as", "ops", "2fa", "enroll").stdout)["secret"])
        admin("--as", "ops", "--otp-stdin", "2fa", "verify", input=otp.next() + "\n")
        headers = f"authorization: Bearer {token}\nx-tokenhub-otp: {otp.next()}\n"
        sent = time.time()
        code = run(["docker", "run", "--rm", "-i", "--network", f"container:{gateway.holder}", "--user", "65532:65532",
                    "--read-only", "--cap-drop", "ALL", "tokenhub/client:dev", "-sS", "-o", "/dev/null", "-w",
                    "%{http_code}", "-H", "@-", "-X", "POST",
                    f"http://127.0.0.1:8081/v1/incident/revoke/{victim['key_id']}"], input=headers, check=False).stdout
        bit, at = td.status_until(victim["key"], 401, 15)
        report.check(code == "200" and bit, "a revoke through the pod-local admin API is refused by Envoy",
                     f"API {code}; first 401 within {(at - sent) * 1000:.0f} ms of starting the API client "
                     "(includes the client container's start)" if bit else f"API {code}")

        # The pod deleted and recreated (same PVC): unattended with 2FA on.
        t0 = time.monotonic()
        gateway.stop()
        for name, (path, _) in gateway.vols.items():
            if str(path).startswith(str(WORK / "pods")):
                run(["umount", path], check=False)
                shutil.rmtree(path, ignore_errors=True)
        gateway.vols = {}
        gateway.start(secrets, configmaps)
        ready = gateway.wait_ready()
        ok, _ = td.status_until(key, 200, 30) if ready else (False, None)
        report.check(ok and td.Client().request(victim["key"])[0] == 401,
                     "the gateway pod recreated with 2FA on comes back unattended with the same decisions",
                     f"{time.monotonic() - t0:.1f} s")
    except Exception as e:
        report.check(False, "test-k8s-pods ran to the end", f"{type(e).__name__}: {e}")
    finally:
        left = cleanup()
        report.check(not any(left.values()), "nothing left behind (containers, network, mounts)", json.dumps(left))
    return td.finish(report, "test-k8s-pods")


if __name__ == "__main__":
    sys.exit(main())
