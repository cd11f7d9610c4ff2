#!/usr/bin/env python3
"""Static checks of the Docker and Kubernetes deployments (no engine, no
cluster needed). The Envoy configs inside them are checked by
tools/validate_envoy.py.

Docker (envoy/docker):
  - docker-compose.yaml against the Compose Specification schema
    (check-jsonschema's vendored compose-spec);
  - every service hardened: non-root user, read-only root filesystem, all
    capabilities dropped; every secret it uses declared from a file;
  - the Dockerfiles (the real one and the offline variant) linted with hadolint.
Kubernetes (envoy/k8s):
  - kustomization.yaml lists exactly the resource files in the directory;
  - each of them against the Kubernetes schemas (kubernetes-validate
    --strict);
  - every pod hardened: runAsNonRoot, RuntimeDefault seccomp, and every
    container with a read-only root filesystem, no privilege escalation,
    ALL capabilities dropped, resource requests and limits; the gateway's
    Envoy with readiness and liveness probes.

The tools come from the project's virtualenv (tools/requirements.txt).

Usage: validate_deploy.py [ENVOY_DIR]
"""

import pathlib
import subprocess
import sys

import yaml

BIN = pathlib.Path(sys.executable).parent
NON_ROOT = "65532:65532"
KUSTOMIZATION = "kustomization.yaml"
GATEWAY = "tokenhub-gateway"


class Report:
    """Collects failures; prints each check as it runs."""

    def __init__(self):
        self.failures = 0
        self.passed = 0

    def check(self, ok: bool, label: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok      {label}")
        else:
            self.failures += 1
            print(f"FAILED  {label}{': ' + detail if detail else ''}", file=sys.stderr)
        return ok

    def tool(self, label: str, argv: list) -> bool:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        return self.check(proc.returncode == 0, label, (proc.stdout + proc.stderr).strip())


# ---------------------------------------------------------------------------
# Docker


def check_compose(report: Report, path: pathlib.Path) -> None:
    schema = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)]
    report.tool(f"{path} (Compose Specification schema)", schema)
    doc = yaml.safe_load(path.read_text())
    declared = doc.get("secrets", {})
    for name, service in doc.get("services", {}).items():
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
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret.get("source")
            ok = "file" in declared.get(source, {})
            report.check(ok, f"{path}: service {name} secret {source} comes from a file")


def check_dockerfile(report: Report, path: pathlib.Path) -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        print(f"skipped {path}: hadolint not installed")
        return
    report.tool(f"{path} (hadolint)", [str(hadolint), "--no-color", str(path)])


# ---------------------------------------------------------------------------
# Kubernetes


def resource_files(report: Report, k8s: pathlib.Path) -> list:
    """The files kustomization.yaml lists, checked against the directory."""
    kustomization = yaml.safe_load((k8s / KUSTOMIZATION).read_text())
    listed = kustomization.get("resources", [])
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


def check_pod(report: Report, path: pathlib.Path, name: str, spec: dict) -> None:
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


def check_k8s(report: Report, k8s: pathlib.Path) -> None:
    files = resource_files(report, k8s)
    validate = [str(BIN / "kubernetes-validate"), "--strict", "--quiet"] + [str(f) for f in files]
    report.tool(f"{k8s}: {len(files)} files (kubernetes-validate --strict)", validate)
    for path in files:
        for name, spec in pod_specs(path):
            check_pod(report, path, name, spec)


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "envoy")
    report = Report()
    check_compose(report, root / "docker" / "docker-compose.yaml")
    check_dockerfile(report, root / "docker" / "Dockerfile")
    check_dockerfile(report, root / "docker" / "Dockerfile.offline")
    check_k8s(report, root / "k8s")
    print(f"{report.passed} passed, {report.failures} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
