"""Every Envoy configuration the benchmarks run, in one place.

The client-facing connection manager and the guard's filter entry are taken
from `envoy/local/envoy.yaml.tmpl` — the template the end-to-end tests and
`make demo` render — so the bench measures the guard exactly as it is
deployed and cannot drift from it. What the bench changes is stated where
it is changed: no access log (its cost does not depend on the filter under
test), no `jwt_authn` (OIDC is not measured), its own routes, and the
filters under test in place of the guard.
"""

import copy
import functools
import json
import re

import yaml

from .common import EXTAUTHZ_BIN, NOOP_WASM, GUARD_WASM, ROOT

LOCAL_TEMPLATE = ROOT / "envoy" / "local" / "envoy.yaml.tmpl"
LUA_SOURCE = ROOT / "bench" / "harness" / "keycheck.lua"
ECDS_FILE = "guard.json"

# The no-op filter doing the guard's allow-path host calls, cumulatively.
LADDER = [
    ("wasm-headers", "headers"),
    ("wasm-headers-source-time", "headers,source,time"),
    ("wasm-glue-rewrite", "headers,source,time,rewrite"),
    ("wasm-glue-all", "headers,source,time,rewrite,metric"),
]
# The same result as wasm-glue-all with the six header writes replaced by
# one call that replaces the whole header map (what a batched guard would do).
ALTERNATIVE = ("wasm-glue-batched", "source,time,batch,metric")
# The floor under targets 1-3: the host calls any Proxy-Wasm guard makes on
# an allow path (the header map, for the credential and the client's
# `x-tokenhub-*` headers to strip; the peer address; the clock, for expiry
# and windows; the provider credential written; a counter), with no decision
# and no identity headers; and what quotas add to it (two scopes' shared-data
# read and compare-and-swap, three `ratelimit-*` response headers).
FLOOR = ("wasm-floor", "headers,source,time,inject,metric")
FLOOR_QUOTA = ("wasm-floor-quota", "headers,source,time,inject,metric,quota")

# The provider credential every allowed request gets (bench/tools' policy).
PROVIDER_SECRET = "Bearer sk-bench-upstream-secret"


def render(template, values):
    """`{{NAME}}` placeholders replaced; any left over is an error."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", str(value))
    left = sorted(set(re.findall(r"\{\{([A-Z_]+)\}\}", text)))
    if left:
        raise SystemExit(f"bench: {template}: placeholders not filled: {', '.join(left)}")
    return text


@functools.lru_cache(maxsize=None)
def local_template(bundle_dir="/nonexistent", wasm=str(GUARD_WASM)):
    """envoy/local/envoy.yaml.tmpl, rendered and parsed (ports and the
    OIDC issuer are placeholders the bench replaces or does not use)."""
    text = render(LOCAL_TEMPLATE, {
        "LISTEN_PORT": 0, "ADMIN_PORT": 0, "UPSTREAM_PORT": 0, "BUNDLE_DIR": bundle_dir, "WASM_PATH": wasm,
        "ACCESS_LOG": "/dev/null", "OIDC_ISSUER": "unused", "OIDC_JWKS": "{}",
    })
    return yaml.safe_load(text)


def _template_hcm(bundle_dir="/nonexistent"):
    doc = local_template(bundle_dir)
    listener = next(x for x in doc["static_resources"]["listeners"] if x["name"] == "ingress")
    return listener["filter_chains"][0]["filters"][0]


def hcm(stat_prefix, routes, http_filters):
    """The deployed client-facing connection manager (envoy/local), with the
    bench's routes and `http_filters` (then the template's router) in place
    of the deployed filters, and no access log."""
    config = copy.deepcopy(_template_hcm())
    tc = config["typed_config"]
    tc["stat_prefix"] = stat_prefix
    tc.pop("access_log", None)
    vhost = tc["route_config"]["virtual_hosts"][0]
    tc["route_config"] = {"name": stat_prefix, "virtual_hosts": [dict(vhost, routes=routes)]}
    router = [f for f in tc["http_filters"] if f["name"] == "envoy.filters.http.router"]
    if len(router) != 1:
        raise SystemExit(f"bench: {LOCAL_TEMPLATE}: expected one router filter in the ingress listener")
    tc["http_filters"] = list(http_filters) + router
    return config


def listener(name, port, hcm_config):
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        # A port taken by another process fails the start (and start() retries
        # with new ports) instead of being shared with it.
        "enable_reuse_port": False,
        "filter_chains": [{"filters": [hcm_config]}],
    }


def static_cluster(name, port, http2=False):
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }}
    return cluster


def bootstrap(ports, http_filters, secrets=(), clusters=()):
    """Two listeners in one Envoy: `ingress` (the filters under test, then
    the router to cluster `upstream`) and `upstream` (a direct_response).
    `/v1/check` on the upstream echoes the headers it received, for the sanity
    check before any measurement. `clusters`: more, e.g. the ext_authz service."""
    echo = [{"header": {"key": f"x-seen-{h}", "value": f"%REQ({h})%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for h in ("authorization", "x-api-key", "x-tokenhub-tenant", "x-tokenhub-key-id")]
    upstream_routes = [
        {"match": {"prefix": "/v1/check"}, "direct_response": {"status": 200, "body": {"inline_string": "{\"ok\":true}"}},
         "response_headers_to_add": echo},
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "{\"ok\":true}"}}},
    ]
    ingress_routes = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}]
    return {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["admin"]}}},
        "static_resources": {
            "listeners": [
                listener("ingress", ports["listen"], hcm("ingress", ingress_routes, http_filters)),
                listener("upstream", ports["upstream"], hcm("upstream", upstream_routes, [])),
            ],
            "clusters": [static_cluster("upstream", ports["upstream"]), *clusters],
            "secrets": list(secrets),
        },
    }


# --------------------------------------------------------------------------
# The filters under test
# --------------------------------------------------------------------------

def native_filters(creds, keys):
    """Envoy's nearest native equivalent of the guard: api_key_auth (key →
    client, key removed, client forwarded as the tenant header), rbac (the
    tenant's CIDR allowlist), credential_injector (the provider secret)."""
    credentials = [{"key": creds["allow"], "client": "t-allow"}]
    credentials += [{"key": f"thk_filler{i:08d}", "client": f"f{i // 100:05d}"} for i in range(max(0, keys - 1))]
    filters = [
        {"name": "envoy.filters.http.api_key_auth", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": credentials,
            "key_sources": [{"header": "authorization"}],
            "forwarding": {"header": "x-tokenhub-tenant", "hide_credentials": True},
        }},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"tenant-allowlist": {
                "permissions": [{"any": True}],
                "principals": [{"remote_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}}],
            }}},
        }},
        {"name": "envoy.filters.http.credential_injector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": True,
            "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                "credential": {"name": "provider-secret"},
                "header": "authorization",
            }},
        }},
    ]
    secrets = [{"name": "provider-secret", "generic_secret": {"secret": {"inline_string": PROVIDER_SECRET}}}]
    return filters, secrets


def guard_capabilities():
    """The guard's capability_restriction_config, as `tokenhub-admin publish`
    writes it (the reference ECDS file is kept identical by a unit test)."""
    example = json.loads((ROOT / "envoy" / "local" / "guard.ecds.json.example").read_text())
    return example["resources"][0]["typed_config"]["config"]["capability_restriction_config"]


def noop_filters(ops="", restricted=False):
    """The no-op Wasm filter; with `ops`, the host-call ladder (see
    bench/noop-filter/src/lib.rs). `restricted`: with the guard's
    capability_restriction_config (plus the ladder's one extra host call), so
    Envoy skips the same callbacks it skips for the guard."""
    config = {
        "name": "noop", "root_id": "noop",
        "vm_config": {"vm_id": "noop", "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(NOOP_WASM)}}},
    }
    if restricted:
        caps = guard_capabilities()
        caps["allowed_capabilities"]["proxy_set_header_map_pairs"] = {}
        config["capability_restriction_config"] = caps
    if ops:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": ops}
    return [{"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config}}]


def guard_filters(bundle_dir, ecds_file=ECDS_FILE):
    """The guard's entry of envoy/local/envoy.yaml.tmpl, verbatim: filesystem
    ECDS on a watched directory, empty default config (fail closed); only
    the file's name may differ (guard.pb: the binary form)."""
    tc = _template_hcm(str(bundle_dir))["typed_config"]
    guard = [f for f in tc["http_filters"] if f["name"] == "tokenhub.guard"]
    if len(guard) != 1:
        raise SystemExit(f"bench: {LOCAL_TEMPLATE}: expected one tokenhub.guard filter in the ingress listener")
    entry = copy.deepcopy(guard[0])
    path = entry["config_discovery"]["config_source"]["path_config_source"]["path"]
    if path != f"{bundle_dir}/{ECDS_FILE}":
        raise SystemExit(f"bench: {LOCAL_TEMPLATE}: the guard reads {path}, the bench writes {ECDS_FILE}")
    entry["config_discovery"]["config_source"]["path_config_source"]["path"] = f"{bundle_dir}/{ecds_file}"
    return [entry]


EXTAUTHZ_CLUSTER = "ext_authz"


def ext_authz_filters():
    """Envoy's ext_authz HTTP filter calling the bench's gRPC service
    (bench/extauthz) on loopback; an error or timeout refuses the request."""
    return [{"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "grpc_service": {"envoy_grpc": {"cluster_name": EXTAUTHZ_CLUSTER}, "timeout": "2s"},
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": 503},
    }}]


def ext_authz_cluster(port):
    return static_cluster(EXTAUTHZ_CLUSTER, port, http2=True)


def ext_authz_argv(port, bundle):
    """The service, reading the guard's own ECDS file (key in the environment)."""
    return [str(EXTAUTHZ_BIN), "--listen", f"127.0.0.1:{port}", "--ecds", str(bundle["live"] / ECDS_FILE)]


def _lua_string(s):
    if not re.fullmatch(r"[A-Za-z0-9_./:+=-]*", s):
        raise SystemExit(f"bench: unexpected character in a Lua key table value: {s!r}")
    return f'"{s}"'


def lua_filters(creds, keys):
    """Envoy's Lua filter doing the key check from a table (keycheck.lua).
    Envoy's Lua API has no hash function (its crypto calls are
    importPublicKey / verifySignature), so the table holds the keys
    themselves, as api_key_auth's does, not their SHA-256."""
    tenants = {"t-allow": ["127.0.0.1/32"], "t-quota": ["127.0.0.1/32"], "t-elsewhere": ["192.0.2.0/24"]}
    rows = [(creds["allow"], "t-allow"), (creds["quota"], "t-quota"), (creds["wrong_ip"], "t-elsewhere")]
    rows += [(f"thk_filler{i:08d}{'0' * 38}", f"f{i // 100:05d}") for i in range(max(0, keys - 3))]
    lines = []
    for key, tenant in rows:
        cidrs = ", ".join(_lua_string(c) for c in tenants.get(tenant, ["198.51.100.0/24"]))
        lines.append(f"  [{_lua_string(key)}] = {{tenant = {_lua_string(tenant)}, sub_account = \"main\", "
                     f"key_id = {_lua_string(key[4:16])}, region = \"eu\", cidrs = {{{cidrs}}}}},")
    source = LUA_SOURCE.read_text().replace("--{{KEYS}}", "\n".join(lines)).replace(
        "{{PROVIDER_SECRET}}", PROVIDER_SECRET)
    return [{"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": source},
    }}]
