#!/usr/bin/env python3
"""Validate every Envoy config under envoy/ with `envoy --mode validate`.

Conventions (see envoy/README.md):
  envoy/**/envoy*.yaml, envoy/**/envoy*.yaml.tmpl   Envoy bootstraps
  envoy/**/*.ecds.yaml, envoy/**/*.ecds.yaml.example ECDS resource files

Templates use {{NAME}} placeholders; they are filled with throw-away values
(validate mode binds no port). Envoy's validate mode really loads the Wasm
module and checks that file paths exist, so the placeholders point at the
real filter and at a bundle dir that holds a guard.yaml.

An ECDS file is checked by embedding each of its resources as a static HTTP
filter in a minimal bootstrap; its sealed-bundle placeholder is replaced by
an empty configuration (the guard's "no bundle" state, which it accepts).

Usage: validate_envoy.py --envoy BIN --wasm FILE [ROOT]
"""

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
ECDS_RESOURCE_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
SEALED_PLACEHOLDER = "<sealed bundle text>"


def render(text: str, values: dict) -> str:
    def substitute(match):
        name = match.group(1)
        if name not in values:
            raise SystemExit(f"unknown placeholder {{{{{name}}}}}")
        return str(values[name])

    return PLACEHOLDER.sub(substitute, text)


def run_validate(envoy: str, config: pathlib.Path, label: str) -> bool:
    proc = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == 0:
        print(f"ok      {label}")
        return True
    print(f"FAILED  {label}\n{proc.stdout}{proc.stderr}", file=sys.stderr)
    return False


def ecds_bootstrap(resource: dict) -> dict:
    """A minimal bootstrap running the resource's filter statically."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ecds_check",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": []}]},
        "http_filters": [
            {"name": resource["name"], "typed_config": resource["typed_config"]},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    listener = {
        "name": "ecds_check",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    return {"node": {"id": "validate", "cluster": "validate"}, "static_resources": {"listeners": [listener]}}


def check_ecds(envoy: str, path: pathlib.Path, text: str, work: pathlib.Path) -> bool:
    doc = yaml.safe_load(text.replace(SEALED_PLACEHOLDER, ""))
    resources = doc.get("resources") or []
    if len(resources) != 1:
        print(f"FAILED  {path}: expected exactly one resource", file=sys.stderr)
        return False
    resource = resources[0]
    if resource.get("@type") != ECDS_RESOURCE_TYPE or resource.get("name") != "tokenhub.guard":
        print(f"FAILED  {path}: resource must be a TypedExtensionConfig named tokenhub.guard", file=sys.stderr)
        return False
    config = work / (path.name + ".bootstrap.yaml")
    config.write_text(yaml.safe_dump(ecds_bootstrap(resource)))
    return run_validate(envoy, config, f"{path} (as a static filter)")


def placeholder_values(work: pathlib.Path, wasm: pathlib.Path) -> dict:
    bundle = work / "bundle"
    bundle.mkdir(exist_ok=True)
    # Envoy refuses to start when the ECDS path does not exist; an empty
    # resource list is rejected and leaves the default_config in force.
    (bundle / "guard.yaml").write_text("resources: []\n")
    return {
        "LISTEN_PORT": 10000,
        "ADMIN_PORT": 10001,
        "UPSTREAM_PORT": 10002,
        "BUNDLE_DIR": bundle,
        "WASM_PATH": wasm,
        "ACCESS_LOG": work / "access.log",
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envoy", required=True)
    parser.add_argument("--wasm", required=True, type=pathlib.Path)
    parser.add_argument("root", nargs="?", default="envoy", type=pathlib.Path)
    args = parser.parse_args()
    if not args.wasm.is_file():
        raise SystemExit(f"{args.wasm} missing: build it first (make wasm)")

    with tempfile.TemporaryDirectory(prefix="validate-envoy-") as tmp:
        work = pathlib.Path(tmp)
        values = placeholder_values(work, args.wasm.resolve())
        results = []
        for path in sorted(args.root.rglob("envoy*.yaml*")):
            config = work / (path.name.replace(".tmpl", "") + ".rendered.yaml")
            config.write_text(render(path.read_text(), values))
            results.append(run_validate(args.envoy, config, str(path)))
        for path in sorted(args.root.rglob("*.ecds.yaml*")):
            results.append(check_ecds(args.envoy, path, render(path.read_text(), values), work))
    if not results:
        raise SystemExit(f"no Envoy configs found under {args.root}")
    print(f"{results.count(True)} passed, {results.count(False)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
