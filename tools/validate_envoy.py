#!/usr/bin/env python3
"""Validate every Envoy config under envoy/ with `envoy --mode validate`.

Conventions (see envoy/README.md):
  envoy/**/envoy*.yaml, envoy/**/envoy*.yaml.tmpl   Envoy bootstraps, or a
                                                    Kubernetes ConfigMap
                                                    whose data holds one
                                                    (key envoy.yaml)
  envoy/**/*.ecds.{yaml,json}[.example]  ECDS resource files

Templates use {{NAME}} placeholders; they are filled with throw-away values
(validate mode binds no port). Envoy's validate mode really loads the Wasm
module and checks that file paths exist (the TLS certificate too), so the
placeholders point at the real filter, at a bundle dir that holds a
guard.json and at a throw-away certificate.

The container configs (Docker, Kubernetes) name paths inside the container
(CONTAINER_PATHS); those are mapped to the same local files. They must not
drift from the demo template: their client listener's filter chain (TLS,
access log, routes, guard) must equal the template's rendered with the
container paths. A container config taking the guard from the control
plane (envoy/k8s/scale-out) must do so as envoy/xds/envoy.yaml.tmpl does:
the guard's config source and the tokenhub_xds cluster are compared with
that template's.

Every bootstrap is also checked for what validate mode cannot see: each
jwt_authn remote JWKS is fetched from a cluster whose TLS pins the identity
provider (SNI and a DNS subject-alt-name equal to the JWKS URI's host, a
trusted CA), and no access log names a client-settable x-tokenhub-* header
as identity (%REQ(X-TOKENHUB-...)%). A self-check first proves both checks
refuse a mutated demo template.

An ECDS file is checked by embedding each of its resources as a static HTTP
filter in a minimal bootstrap; its sealed-bundle placeholder is replaced by
an empty configuration (the guard's "no bundle" state, which it accepts).

Usage: validate_envoy.py --envoy BIN --wasm FILE [ROOT]
"""

import argparse
import copy
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
ECDS_RESOURCE_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
SEALED_PLACEHOLDER = "<sealed bundle text>"
DEMO_TEMPLATE = "demo/envoy.yaml.tmpl"
CLIENT_LISTENER = "ingress"

# Where the Docker and Kubernetes deployments put things, and the
# placeholder each corresponds to (envoy/docker/Dockerfile, envoy/k8s).
CONTAINER_PATHS = {
    "/opt/tokenhub/wasm/tokenhub_guard.wasm": "WASM_PATH",
    "/var/lib/tokenhub/bundle": "BUNDLE_DIR",
    "/etc/tokenhub/tls/tls.crt": "TLS_CERT",
    "/etc/tokenhub/tls/tls.key": "TLS_KEY",
    # A scaled-out gateway's xDS client certificate (envoy/k8s/scale-out).
    "/etc/tokenhub/xds/tls.crt": "XDS_CERT",
    "/etc/tokenhub/xds/tls.key": "XDS_KEY",
    "/etc/tokenhub/xds/ca.crt": "XDS_CA",
}
# The demo template rendered for the drift check; the ports other than the
# listener's lie outside the compared filter chain.
CONTAINER_VALUES = {
    **{name: path for path, name in CONTAINER_PATHS.items()},
    "LISTEN_PORT": 8443,
    "ACCESS_LOG": "/dev/stdout",
    "ADMIN_PORT": 9901,
    "UPSTREAM_EU_PORT": 8080,
    "UPSTREAM_US_PORT": 8080,
}
# The xDS gateway template rendered for the drift check of a container
# config that takes the guard from the control plane (envoy/k8s/scale-out):
# its guard config source and its xDS cluster must be the template's.
XDS_TEMPLATE = "xds/envoy.yaml.tmpl"
XDS_CLUSTER = "tokenhub_xds"
GUARD_FILTER = "tokenhub.guard"
# The global quota mode (envoy/global-ratelimit/envoy.yaml.tmpl).
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
RATELIMIT_CLUSTER = "ratelimit"
CONTAINER_XDS_VALUES = {
    **CONTAINER_VALUES,
    "NODE_ID": "unused",
    "UPSTREAM_PORT": 8080,
    "XDS_HOST": "tokenhub-control-plane",
    "XDS_PORT": 18000,
    "XDS_SERVER_NAME": "tokenhub-control-plane",
}


def render(text: str, values: dict) -> str:
    def substitute(match):
        name = match.group(1)
        if name not in values:
            raise SystemExit(f"unknown placeholder {{{{{name}}}}}")
        return str(values[name])

    return PLACEHOLDER.sub(substitute, text)


def make_cert(work: pathlib.Path) -> tuple:
    """A throw-away self-signed certificate: validate mode loads it."""
    cert, key = work / "tls.crt", work / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def container_config(path: pathlib.Path) -> str:
    """The bootstrap in a container config file: the file itself, or the
    envoy.yaml of a ConfigMap."""
    text = path.read_text()
    doc = yaml.safe_load(text)
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        return doc["data"]["envoy.yaml"]
    return text


def localize(text: str, values: dict) -> str:
    """Container paths replaced by the local files validation uses."""
    for path, name in CONTAINER_PATHS.items():
        text = text.replace(path, str(values[name]))
    return text


def client_chain(config: dict) -> list:
    listeners = config["static_resources"]["listeners"]
    return next(l["filter_chains"] for l in listeners if l["name"] == CLIENT_LISTENER)


def first_difference(a, b, where="filter_chains"):
    """Where two parsed YAML values first differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}: only in one of them"
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def without_global_quota(chain: list) -> list:
    """A client filter chain without the global quota mode's parts (the
    descriptor actions, the ratelimit filter, its local reply), which
    tools/global_quota_config.py adds to a deployment's config from
    envoy/global-ratelimit/envoy.yaml.tmpl."""
    chain = copy.deepcopy(chain)
    for fc in chain:
        for f in fc.get("filters", []):
            hcm = f.get("typed_config", {})
            for vhost in (hcm.get("route_config") or {}).get("virtual_hosts", []):
                vhost.pop("rate_limits", None)
            if "http_filters" in hcm:
                hcm["http_filters"] = [h for h in hcm["http_filters"] if h.get("name") != RATELIMIT_FILTER]
            mappers = (hcm.get("local_reply_config") or {}).get("mappers")
            if mappers is not None:
                mappers[:] = [m for m in mappers if "rate_limiter_error" not in str(m.get("filter"))]
    return chain


def guard_discovery(chain: list) -> dict:
    """The guard filter's config_discovery in a client filter chain."""
    for fc in chain:
        for f in fc.get("filters", []):
            for h in f.get("typed_config", {}).get("http_filters", []):
                if h.get("name") == GUARD_FILTER:
                    return h["config_discovery"]
    raise SystemExit(f"no {GUARD_FILTER} filter in the client listener")


def check_drift(root: pathlib.Path, path: pathlib.Path, text: str) -> bool:
    """The container config's client listener equals the demo template's.
    A config with the xDS cluster (a scaled-out gateway) must take the
    guard from the control plane exactly as envoy/xds/envoy.yaml.tmpl does
    (config source and cluster); whether and how long its listener warms
    until the first push (apply_default_config_without_warming,
    initial_fetch_timeout) is its own choice."""
    config = yaml.safe_load(text)
    demo = yaml.safe_load(render((root / DEMO_TEMPLATE).read_text(), CONTAINER_VALUES))
    expected = client_chain(demo)
    against = DEMO_TEMPLATE
    clusters = {c["name"]: c for c in config["static_resources"].get("clusters", [])}
    if XDS_CLUSTER in clusters:
        xds = yaml.safe_load(render((root / XDS_TEMPLATE).read_text(), CONTAINER_XDS_VALUES))
        ours = guard_discovery(client_chain(config))
        discovery = guard_discovery(expected)
        discovery["config_source"] = dict(guard_discovery(client_chain(xds))["config_source"])
        for warming in ("apply_default_config_without_warming",):
            discovery[warming] = ours.get(warming)
        discovery["config_source"]["initial_fetch_timeout"] = ours["config_source"].get("initial_fetch_timeout")
        template_cluster = next(c for c in xds["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER)
        found = first_difference(template_cluster, clusters[XDS_CLUSTER], f"clusters[{XDS_CLUSTER}]")
        if found:
            print(f"FAILED  {path}: xDS cluster drifted from {root / XDS_TEMPLATE}: {found}", file=sys.stderr)
            return False
        against = f"{DEMO_TEMPLATE}, guard config source and xDS cluster as {XDS_TEMPLATE}"
    ours = client_chain(config)
    if RATELIMIT_CLUSTER in clusters:
        ours = without_global_quota(ours)
        against += " (its global quota parts aside: tools/global_quota_config.py)"
    found = first_difference(expected, ours)
    if found:
        print(f"FAILED  {path}: drifted from {against}: {found}", file=sys.stderr)
        return False
    print(f"ok      {path} (same client listener as {against})")
    return True


def walk(value):
    """Every dict inside a parsed YAML value, depth first."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def jwks_problems(config: dict) -> list:
    """Each remote JWKS must be fetched from a cluster whose TLS pins the
    identity provider: SNI and a DNS SAN equal to the JWKS URI's host, and
    a trusted CA. Otherwise any publicly trusted certificate for any name
    is accepted, and whoever redirects the connection serves their own
    signing keys."""
    clusters = {c.get("name"): c for c in (config.get("static_resources") or {}).get("clusters") or []}
    problems = []
    for node in walk(config):
        remote = node.get("remote_jwks")
        if not isinstance(remote, dict):
            continue
        uri = (remote.get("http_uri") or {}).get("uri", "")
        name = (remote.get("http_uri") or {}).get("cluster", "")
        host = re.sub(r"^https://([^/:]+).*$", r"\1", uri)
        if not uri.startswith("https://"):
            problems.append(f"remote JWKS {uri!r} is not fetched over https")
            continue
        cluster = clusters.get(name)
        if cluster is None:
            problems.append(f"remote JWKS {uri}: no static cluster {name!r}")
            continue
        tls = ((cluster.get("transport_socket") or {}).get("typed_config")) or {}
        validation = (tls.get("common_tls_context") or {}).get("validation_context") or {}
        sans = validation.get("match_typed_subject_alt_names") or []
        pinned = any(s.get("san_type") == "DNS" and (s.get("matcher") or {}).get("exact") == host for s in sans)
        if tls.get("sni") != host:
            problems.append(f"cluster {name}: sni must be {host} (the JWKS URI's host), not {tls.get('sni')!r}")
        if not validation.get("trusted_ca"):
            problems.append(f"cluster {name}: no trusted_ca")
        if not pinned:
            problems.append(
                f"cluster {name}: validation_context.match_typed_subject_alt_names must pin "
                f"{{san_type: DNS, matcher: {{exact: {host}}}}}"
            )
    return problems


def access_log_problems(text: str) -> list:
    """No access log may log a client's x-tokenhub-* claim as identity:
    %REQ(X-TOKENHUB-...)% reads the header whether or not the guard ran
    (a request refused before it still carries the client's value). Use
    the %CEL(...)% form gated on the guard having run (envoy/README.md)."""
    claims = [
        f"access log logs a client-settable header as identity: {m.group(0)} "
        "(use %CEL('wasm.tokenhub_decision' in filter_state || has(upstream.address) ? ... )%)"
        for m in re.finditer(r"%REQ\(\s*X-TOKENHUB-[A-Z-]+[^%]*%", text, re.IGNORECASE)
    ]
    # Envoy's own client address bypasses a tenant's truncation at write
    # time (GDPR): log the one the guard recorded.
    addresses = [
        f"access log logs Envoy's client address {m.group(0)}, bypassing a tenant's IP truncation "
        f"(use {CLIENT_ADDRESS_FORMAT})"
        for m in re.finditer(r"%DOWNSTREAM_(DIRECT_)?REMOTE_ADDRESS[A-Z_]*(\([^%]*\))?%", text)
    ]
    return claims + addresses


CLIENT_ADDRESS_FORMAT = (
    "%CEL('wasm.tokenhub_client' in filter_state ? filter_state['wasm.tokenhub_client'] : source.address)%"
)


def client_address_problems(config: dict) -> list:
    """A gateway sends no client address to the provider (a third party): every connection manager that takes the client address from
    the TCP peer must not append it to x-forwarded-for, and its routes must
    drop the x-envoy-external-address Envoy sets. The guard removes
    client-sent address headers and forwards one only for opted-in tenants."""
    problems = []
    for node in walk(config):
        if node.get("use_remote_address") is not True:
            continue
        name = node.get("stat_prefix", "?")
        if node.get("skip_xff_append") is not True:
            problems.append(f"connection manager {name}: skip_xff_append: true (the client address reaches the provider)")
        for vhost in (node.get("route_config") or {}).get("virtual_hosts") or []:
            if "x-envoy-external-address" not in (vhost.get("request_headers_to_remove") or []):
                problems.append(
                    f"connection manager {name}, virtual host {vhost.get('name')}: "
                    "request_headers_to_remove: [x-envoy-external-address]"
                )
    return problems


def check_security(path, text: str) -> bool:
    """The checks Envoy's validate mode cannot make: pinned JWKS TLS, access
    logs that never name a client claim as identity, no client address
    toward the provider."""
    config = yaml.safe_load(text) or {}
    problems = jwks_problems(config) + access_log_problems(text) + client_address_problems(config)
    for problem in problems:
        print(f"FAILED  {path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"ok      {path} (JWKS TLS pinned, no client claim or raw client address logged, no client address upstream)")
    return not problems


def self_check(root: pathlib.Path, values: dict) -> bool:
    """The security checks can fail: the demo template with a JWKS cluster's
    SAN pin removed, its SNI changed, or a raw %REQ(X-TOKENHUB-TENANT)% in
    the access log must each be refused."""
    text = render((root / DEMO_TEMPLATE).read_text(), values)
    config = yaml.safe_load(text)
    clusters = [c for c in config["static_resources"]["clusters"] if c["name"].startswith("jwks_")]
    if not clusters or jwks_problems(config):
        print(f"FAILED  self-check: {DEMO_TEMPLATE} has no pinned JWKS cluster to mutate", file=sys.stderr)
        return False
    ok = True
    for mutate, what in [
        (lambda v: v.pop("match_typed_subject_alt_names"), "SAN pin removed"),
        (lambda v: v.update(match_typed_subject_alt_names=[{"san_type": "DNS", "matcher": {"exact": "evil.example"}}]),
         "SAN of another name"),
    ]:
        mutated = yaml.safe_load(text)
        cluster = next(c for c in mutated["static_resources"]["clusters"] if c["name"] == clusters[0]["name"])
        mutate(cluster["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"])
        if not jwks_problems(mutated):
            print(f"FAILED  self-check: a JWKS cluster with its {what} passed", file=sys.stderr)
            ok = False
    mutated = yaml.safe_load(text)
    cluster = next(c for c in mutated["static_resources"]["clusters"] if c["name"] == clusters[0]["name"])
    cluster["transport_socket"]["typed_config"]["sni"] = "evil.example"
    if not jwks_problems(mutated):
        print("FAILED  self-check: a JWKS cluster with another SNI passed", file=sys.stderr)
        ok = False
    if not access_log_problems('tenant: "%REQ(X-TOKENHUB-TENANT)%"'):
        print("FAILED  self-check: a raw %REQ(X-TOKENHUB-TENANT)% passed", file=sys.stderr)
        ok = False
    if not access_log_problems('client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"'):
        print("FAILED  self-check: a raw %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% passed", file=sys.stderr)
        ok = False
    if CLIENT_ADDRESS_FORMAT not in text or access_log_problems(text):
        print(f"FAILED  self-check: {DEMO_TEMPLATE} does not log the guard's client address", file=sys.stderr)
        ok = False
    if client_address_problems(config):
        print(f"FAILED  self-check: {DEMO_TEMPLATE} forwards a client address", file=sys.stderr)
        ok = False
    for key in ["skip_xff_append", "route_config"]:
        mutated = yaml.safe_load(text)
        manager = next(n for n in walk(mutated) if n.get("use_remote_address") is True)
        if key == "route_config":
            manager[key]["virtual_hosts"][0].pop("request_headers_to_remove")
        else:
            manager.pop(key)
        if not client_address_problems(mutated):
            print(f"FAILED  self-check: a connection manager without {key}'s client address removal passed", file=sys.stderr)
            ok = False
    if ok:
        print("ok      self-check: the security checks refuse unpinned JWKS, logged claims and forwarded addresses")
    return ok


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
    (bundle / "guard.json").write_text("{\"resources\": []}\n")
    cert, key = make_cert(work)
    return {
        "OIDC_ISSUER": "https://issuer.tokenhub.invalid",
        # A public key whose private half was discarded (as in the harness).
        "OIDC_JWKS": '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"unused","n":"r1PJKdvUsyZ1k6vRg08f16wdFBNOyNxU10IeBuSNxbYWbPLc0g8of4nNRC2ng4lbaWRCITGZkexQOyrgjtpH0wL6e-qe03QVsp29ufQWq0gBnkCQJ3glrWjgEZStP2eVjIU7U9YLxfHdzFyXdvung0T1eBnMTD7UnI8wXeppIS6k7lpjcPbGWoefVluxRl77e-Fqr-LYEbCteA25kD1A9BXFUxD4DrN03vskE-QhREfNPvz2Ie6km6Fbdx6fnO0Tc63iVIiyggM3GmkCdshAkpO1YPLazLAr3sYM_r33uEmP0yBXamm7dbGmw2218i6Pm1RaCnQHx7RXmuECTz5mlw","e":"AQAB"}]}',
        "LISTEN_PORT": 10000,
        "ADMIN_PORT": 10001,
        "UPSTREAM_PORT": 10002,
        "UPSTREAM_EU_PORT": 10003,
        "UPSTREAM_US_PORT": 10004,
        "RATELIMIT_PORT": 10005,
        "BUNDLE_DIR": bundle,
        "WASM_PATH": wasm,
        "ACCESS_LOG": work / "access.log",
        "TLS_CERT": cert,
        "TLS_KEY": key,
        # envoy/xds: a gateway of the control plane (validate mode loads the
        # TLS files, so any certificate will do).
        "NODE_ID": "validate",
        "XDS_HOST": "127.0.0.1",
        "XDS_PORT": 10005,
        "XDS_SERVER_NAME": "tokenhub-control-plane",
        "XDS_CA": cert,
        "XDS_CERT": cert,
        "XDS_KEY": key,
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
        results = [self_check(args.root, values)]
        for n, path in enumerate(sorted(args.root.rglob("envoy*.yaml*"))):
            config = work / f"{n}-{path.name.replace('.tmpl', '')}.rendered.yaml"
            if path.name.endswith(".tmpl"):
                rendered = render(path.read_text(), values)
                config.write_text(rendered)
                results.append(check_security(path, rendered))
            else:
                text = container_config(path)
                results.append(check_drift(args.root, path, text))
                results.append(check_security(path, text))
                config.write_text(localize(text, values))
            results.append(run_validate(args.envoy, config, str(path)))
        for path in sorted(args.root.rglob("*.ecds.*")):
            results.append(check_ecds(args.envoy, path, render(path.read_text(), values), work))
    if not results:
        raise SystemExit(f"no Envoy configs found under {args.root}")
    print(f"{results.count(True)} passed, {results.count(False)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
