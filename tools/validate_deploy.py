#!/usr/bin/env python3
"""Static checks of the Docker and Kubernetes deployments (no engine, no
cluster needed). The Envoy configs inside them are checked by
tools/validate_envoy.py.

Docker (envoy/docker):
  - docker-compose.yaml against the Compose Specification schema
    (check-jsonschema's vendored compose-spec);
  - every service hardened: non-root user, read-only root filesystem, all
    capabilities dropped; every secret it uses declared from a file;
  - the admin API and Envoy's admin interface on their containers' own
    loopback, never published;
  - the Dockerfiles (the real one and the offline variant) linted with hadolint.
Kubernetes (envoy/k8s, the single pod, and envoy/k8s/scale-out, the
control plane and its gateways), each:
  - kustomization.yaml lists exactly the resource files in the directory;
  - each of them against the Kubernetes schemas (kubernetes-validate
    --strict);
  - every pod hardened: runAsNonRoot, RuntimeDefault seccomp, and every
    container with a read-only root filesystem, no privilege escalation,
    ALL capabilities dropped, resource requests and limits; the gateway's
    Envoy with readiness and liveness probes;
  - references a real apply would trip over: Secret (secretGenerator),
    ConfigMap and claim names of volumes, volume mounts, probe and Service
    ports, and Envoy's container ports against its listeners (admin on
    loopback), env from Secret keys the kustomization makes;
  - scaled out: the gateway pods hold no store (no volume claim) and no
    master key; the files shared with the single pod are copies of it.

The tools come from the project's virtualenv (tools/requirements.txt).

Usage: validate_deploy.py [ENVOY_DIR]
"""

import pathlib
import subprocess
import sys
import tempfile

import yaml

TOOLS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import checks  # noqa: E402
import kustomize_lite  # noqa: E402

BIN = pathlib.Path(sys.executable).parent
NON_ROOT = "65532:65532"
KUSTOMIZATION = "kustomization.yaml"
GATEWAY = "tokenhub-gateway"
CONTROL_PLANE = "tokenhub-control-plane"
MASTER_KEY = "tokenhub-master-key"
# Files of the scaled-out kustomization (k8s/scale-out) that must stay
# copies of the single pod's (kustomize loads no file from outside a
# kustomization's directory).
SHARED_WITH_SINGLE_POD = ["namespace.yaml", "upstreams.yaml"]


# ---------------------------------------------------------------------------
# Docker


def check_compose(report: checks.Report, path: pathlib.Path, override: pathlib.Path = None) -> None:
    """The compose file, or with `override` the services as that override
    file leaves them (each of its services' keys replacing the base's)."""
    shown = override or path
    schema = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(shown)]
    report.tool(f"{shown} (Compose Specification schema)", schema)
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})
    if override:
        extra = yaml.safe_load(override.read_text())
        services = {name: dict(services.get(name, {}), **service) for name, service in extra["services"].items()}
        path = shown
    declared = doc.get("secrets", {})
    for name, service in services.items():
        weak = [
            what
            for what, ok in [
                (f"user {NON_ROOT}", service.get("user") == NON_ROOT),
                ("read_only: true", service.get("read_only") is True),
                ("cap_drop: [ALL]", service.get("cap_drop") == ["ALL"]),
            ]
            if not ok
        ]
        report.check(not weak, f"{path}: service {name} hardened", "missing " + ", ".join(weak))
        command = " ".join(str(x) for x in (service.get("command") or []))
        # The rate limit service answers Envoy over the network (never the
        # admin API); it is checked below to be unpublished.
        report.check(("--allow-remote" not in command or command.startswith("ratelimit "))
                     and "0.0.0.0:8081" not in command,
                     f"{path}: service {name} keeps the admin API on its own loopback")
        published = [str(p) for p in service.get("ports", [])]
        report.check(not any(f":{port}" in p for p in published for port in (9901, 8081, 8082, 6379)),
                     f"{path}: service {name} publishes no admin, rate limit or Redis port", f"{published}")
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret.get("source")
            ok = "file" in declared.get(source, {})
            report.check(ok, f"{path}: service {name} secret {source} comes from a file")


def check_envoy_admin(report: checks.Report, path: pathlib.Path) -> None:
    envoy = yaml.safe_load(path.read_text())
    admin = envoy.get("admin", {}).get("address", {}).get("socket_address", {}).get("address")
    report.check(admin in ("127.0.0.1", "::1"), f"{path}: Envoy's admin interface on loopback", f"bound to {admin}")


def check_dockerfile(report: checks.Report, path: pathlib.Path) -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        print(f"skipped {path}: hadolint not installed")
        return
    report.tool(f"{path} (hadolint)", [str(hadolint), "--no-color", str(path)])


# ---------------------------------------------------------------------------
# Kubernetes


def resource_files(report: checks.Report, k8s: pathlib.Path) -> list:
    """The files kustomization.yaml lists (resources and patches; a base
    directory aside), checked against the directory."""
    kustomization = yaml.safe_load((k8s / KUSTOMIZATION).read_text())
    listed = [r for r in kustomization.get("resources", []) if not (k8s / r).is_dir()]
    listed += [p["path"] for p in kustomization.get("patches", [])]
    present = sorted(p.name for p in k8s.glob("*.yaml") if p.name != KUSTOMIZATION)
    report.check(
        sorted(listed) == present,
        f"{k8s / KUSTOMIZATION} lists every resource file",
        f"listed {sorted(listed)}, present {present}",
    )
    return [k8s / name for name in listed if (k8s / name).is_file()]


def pod_specs(path: pathlib.Path):
    """(name, pod spec) of every workload in the file."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def container_weaknesses(container: dict) -> list:
    ctx = container.get("securityContext", {})
    resources = container.get("resources", {})
    return [
        what
        for what, ok in [
            ("readOnlyRootFilesystem", ctx.get("readOnlyRootFilesystem") is True),
            ("allowPrivilegeEscalation: false", ctx.get("allowPrivilegeEscalation") is False),
            ("capabilities.drop [ALL]", ctx.get("capabilities", {}).get("drop") == ["ALL"]),
            ("resources.requests", bool(resources.get("requests"))),
            ("resources.limits", bool(resources.get("limits"))),
        ]
        if not ok
    ]


def check_pod(report: checks.Report, path: pathlib.Path, name: str, spec: dict) -> None:
    ctx = spec.get("securityContext", {})
    pod_ok = ctx.get("runAsNonRoot") is True and ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    report.check(pod_ok, f"{path}: {name} pod runs as non-root with RuntimeDefault seccomp")
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        weak = container_weaknesses(container)
        report.check(not weak, f"{path}: {name}/{container['name']} hardened", "missing " + ", ".join(weak))
    if name == GATEWAY:
        envoy = next((c for c in spec["containers"] if c["name"] == "envoy"), {})
        probes = "readinessProbe" in envoy and "livenessProbe" in envoy
        report.check(probes, f"{path}: {name}/envoy has readiness and liveness probes")


def check_references(report: checks.Report, k8s: pathlib.Path, files: list) -> None:
    """What `kubectl apply` and the kubelet would trip over that schemas do
    not see: volumes naming a Secret, ConfigMap or claim that nothing
    creates, probes and Services naming ports no container declares, and
    container ports that disagree with the listeners in Envoy's config."""
    kustomization, _ = kustomize_lite.render(k8s)  # an overlay's base's generators too
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    secrets = {g["name"]: [i.partition("=")[0] for i in g.get("files", [])]
               for g in kustomization.get("secretGenerator", [])}
    secrets.update({d["metadata"]["name"]: list(d.get("data", {})) for d in docs if d["kind"] == "Secret"})
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    pods = [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    for workload, template in pods:
        name, spec = workload["metadata"]["name"], template["spec"]
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                ref = vol["secret"]["secretName"]
                keys = [i["key"] for i in vol["secret"].get("items", [])]
                ok = ref in secrets and all(k in secrets[ref] for k in keys)
                report.check(ok, f"{name}: volume {vol['name']} names Secret {ref}, which the kustomization makes")
            if "configMap" in vol:
                ref = vol["configMap"]["name"]
                report.check(ref in configmaps, f"{name}: volume {vol['name']} names ConfigMap {ref}, which exists")
            if "persistentVolumeClaim" in vol:
                ref = vol["persistentVolumeClaim"]["claimName"]
                report.check(ref in claims, f"{name}: volume {vol['name']} names claim {ref}, which exists")
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    ok = ref["name"] in secrets and ref["key"] in secrets[ref["name"]]
                    report.check(ok, f"{name}/{c['name']}: env {e['name']} names key {ref['key']} of Secret "
                                 f"{ref['name']}, which the kustomization makes")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            report.check(mounts <= volumes, f"{name}/{c['name']}: every volume mount names a pod volume",
                         f"unknown {sorted(mounts - volumes)}")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind) or {}
                for handler in ("httpGet", "tcpSocket"):
                    port = (probe.get(handler) or {}).get("port")
                    if port is not None:
                        ok = port in ports.values() if isinstance(port, int) else port in ports
                        report.check(ok, f"{name}/{c['name']}: {kind} port {port} is a declared container port")
        # Envoy's container ports are exactly the ports its listeners use;
        # its admin interface is on loopback only.
        for c in spec.get("containers", []):
            envoy_cm = next((configmaps[v["configMap"]["name"]] for v in spec.get("volumes", [])
                             if "configMap" in v and any(m["name"] == v["name"] for m in c.get("volumeMounts", []))
                             and "envoy.yaml" in configmaps.get(v["configMap"]["name"], {})), None)
            if envoy_cm is None:
                continue
            envoy = yaml.safe_load(envoy_cm["envoy.yaml"])
            listening = {lst["address"]["socket_address"]["port_value"] for lst in envoy["static_resources"]["listeners"]}
            declared = {p["containerPort"] for p in c.get("ports", [])}
            report.check(listening == declared, f"{name}/{c['name']}: container ports match Envoy's listeners",
                         f"listeners {sorted(listening)}, ports {sorted(declared)}")
            admin = envoy.get("admin", {}).get("address", {}).get("socket_address", {}).get("address")
            report.check(admin in ("127.0.0.1", "::1"), f"{name}/{c['name']}: Envoy's admin interface on loopback",
                         f"bound to {admin}")
    # Autoscalers scale a workload that exists; disruption budgets select
    # pods of one (and, with a fixed minAvailable, no more than it runs).
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        ok = any(w["kind"] == target["kind"] and w["metadata"]["name"] == target["name"] for w, _ in pods)
        report.check(ok, f"HorizontalPodAutoscaler {hpa['metadata']['name']}: scales {target['kind']} "
                     f"{target['name']}, which exists")
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        labels = pdb["spec"]["selector"].get("matchLabels", {})
        selected = [w for w, t in pods if all(t["metadata"]["labels"].get(k) == v for k, v in labels.items())]
        floor = pdb["spec"].get("minAvailable")
        ok = bool(selected) and (not isinstance(floor, int)
                                 or all(floor < w["spec"].get("replicas", 1) or floor == 1 for w in selected))
        report.check(ok, f"PodDisruptionBudget {pdb['metadata']['name']}: selects pods of "
                     f"{[w['metadata']['name'] for w in selected]}, minAvailable {floor} below their replicas "
                     "(or 1 for a single pod)")
    # Services reach a port the selected pods declare.
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"].get("selector", {})
        selected = [t for _, t in pods if all(t["metadata"]["labels"].get(k) == v for k, v in selector.items())]
        named = {p.get("name") for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
        numbers = {p["containerPort"] for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            ok = bool(selected) and (target in named if isinstance(target, str) else target in numbers)
            report.check(ok, f"Service {svc['metadata']['name']}: targetPort {target} is a port of its pods")


def check_gateway_holds_no_store(report: checks.Report, k8s: pathlib.Path, files: list, copies: bool = True) -> None:
    """Scaled out (a control plane beside the gateways): the gateway pods
    mount no volume claim and no master key, and the shared files are the
    single-pod deployment's own."""
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    if CONTROL_PLANE not in names:
        return
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] == GATEWAY:
            spec = d["spec"]["template"]["spec"]
            held = [v["name"] for v in spec.get("volumes", [])
                    if "persistentVolumeClaim" in v or (v.get("secret") or {}).get("secretName") == MASTER_KEY]
            env = [e["name"] for c in spec.get("initContainers", []) + spec["containers"] for e in c.get("env", [])
                   if "MASTER_KEY" in e["name"] or (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name") == MASTER_KEY]
            report.check(not held and not env, f"{k8s}: {GATEWAY} holds no store and no master key",
                         f"volumes {held}, env {env}")
    for shared in SHARED_WITH_SINGLE_POD if copies else []:
        same = (k8s / shared).read_text() == (k8s.parent / shared).read_text()
        report.check(same, f"{k8s / shared} is a copy of {k8s.parent / shared}", "they differ: copy it again")


def rendered_files(k8s: pathlib.Path, work: pathlib.Path) -> list:
    """An overlay's documents as kustomize would emit them (its base
    included, patches applied), one file each, for the checks that read
    whole documents."""
    _, docs = kustomize_lite.render(k8s)
    files = []
    for n, doc in enumerate(docs):
        path = work / f"{n:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(path)
    return files


def check_k8s(report: checks.Report, k8s: pathlib.Path) -> None:
    files = resource_files(report, k8s)
    kustomization = yaml.safe_load((k8s / KUSTOMIZATION).read_text())
    if any((k8s / r).is_dir() for r in kustomization.get("resources", [])):
        # An overlay: its patches are partial documents; check the result.
        with tempfile.TemporaryDirectory(prefix="validate-deploy-") as tmp:
            check_k8s_files(report, k8s, rendered_files(k8s, pathlib.Path(tmp)), overlay=True)
        return
    check_k8s_files(report, k8s, files)


def check_k8s_files(report: checks.Report, k8s: pathlib.Path, files: list, overlay: bool = False) -> None:
    # An overlay's shared files are its base's own (no copies to compare).
    check_gateway_holds_no_store(report, k8s, files, copies=not overlay)
    validate = [str(BIN / "kubernetes-validate"), "--strict", "--quiet"] + [str(f) for f in files]
    report.tool(f"{k8s}: {len(files)} files (kubernetes-validate --strict)", validate)
    for path in files:
        for name, spec in pod_specs(path):
            check_pod(report, path, name, spec)
    check_references(report, k8s, files)


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "envoy")
    report = checks.Report(ok_detail=False)
    check_compose(report, root / "docker" / "docker-compose.yaml")
    check_compose(report, root / "docker" / "docker-compose.yaml", root / "docker" / "docker-compose.global.yaml")
    check_envoy_admin(report, root / "docker" / "envoy.yaml")
    check_dockerfile(report, root / "docker" / "Dockerfile")
    check_dockerfile(report, root / "docker" / "Dockerfile.offline")
    check_k8s(report, root / "k8s")
    check_k8s(report, root / "k8s" / "scale-out")
    check_k8s(report, root / "k8s" / "scale-out" / "global-quota")
    generated = subprocess.run([sys.executable, str(TOOLS / "global_quota_config.py"), "--check"],
                               capture_output=True, text=True, timeout=60)
    report.check(generated.returncode == 0,
                 "the global quota mode's Envoy configs (Kubernetes overlay, Compose override) are what "
                 "tools/global_quota_config.py writes", generated.stderr.strip())
    return report.summary()


if __name__ == "__main__":
    sys.exit(main())
