//! No-op Proxy-Wasm HTTP filter: the cost of any Wasm filter in Envoy (VM
//! entry for each callback the SDK registers, context creation) with no
//! logic at all. Used only by `make bench`.
//!
//! With a plugin configuration it becomes a cost ladder instead: a
//! comma-separated list of the host calls the guard makes on its allow path,
//! done without any decision logic, so the benchmark can tell what the
//! Proxy-Wasm boundary costs apart from what the guard's own code costs:
//!   headers  get_http_request_headers_bytes (one call, all headers)
//!   source   get_property(source.address)
//!   time     get_current_time
//!   rewrite  set five `x-tokenhub-*` headers and `authorization` (the
//!            guard's six header writes: the client's `authorization` is
//!            overwritten by the injected one, not removed first)
//!   metric   increment a counter
//!   batch    instead of `rewrite`: the same result in one call that
//!            replaces the whole header map (proxy_set_header_map_pairs)
//! and, single host calls priced on their own (bench/allow_path.py --host-calls):
//!   write1   replace one header
//!   add6     `rewrite` with the five identity headers appended, not replaced
//!   state5   five filter-state values (set_property)
//!   state1   one filter-state value
//!   get4     four single-header reads (proxy_get_header_map_value)
//! and the floor (`make bench`'s wasm-floor rows: the host calls any
//! Proxy-Wasm guard makes on an allow path, with no identity headers):
//!   inject   replace `authorization` (the provider credential)
//!   quota    what quotas need on top, the guard's layout: for two scopes
//!            (a key and its tenant) one shared-data read and one
//!            compare-and-swap each, and three `ratelimit-*` response
//!            header replaces
//! Empty configuration (the default) = none of them: the pure no-op.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
}}

#[derive(Clone, Copy, Default)]
struct Ops {
    headers: bool,
    source: bool,
    time: bool,
    rewrite: bool,
    batch: bool,
    metric: Option<u32>,
    write1: bool,
    state5: bool,
    state1: bool,
    get4: bool,
    add6: bool,
    inject: bool,
    quota: bool,
}

#[derive(Default)]
struct NoopRoot {
    ops: Ops,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        let mut ops = Ops::default();
        for op in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match op {
                "headers" => ops.headers = true,
                "source" => ops.source = true,
                "time" => ops.time = true,
                "rewrite" => ops.rewrite = true,
                "batch" => ops.batch = true,
                "write1" => ops.write1 = true,
                "state5" => ops.state5 = true,
                "state1" => ops.state1 = true,
                "get4" => ops.get4 = true,
                "add6" => ops.add6 = true,
                "inject" => ops.inject = true,
                "quota" => ops.quota = true,
                "metric" => match hostcalls::define_metric(MetricType::Counter, "bench.ladder") {
                    Ok(id) => ops.metric = Some(id),
                    Err(_) => return false,
                },
                _ => return false,
            }
        }
        self.ops = ops;
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp { ops: self.ops }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct NoopHttp {
    ops: Ops,
}

impl Context for NoopHttp {}

const IDENTITY: [(&str, &str); 5] = [
    ("x-tokenhub-tenant", "t-allow"),
    ("x-tokenhub-sub-account", "main"),
    ("x-tokenhub-key-id", "AbCdEf012345"),
    ("x-tokenhub-region", "eu"),
    ("x-tokenhub-auth", "api_key"),
];

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let ops = self.ops;
        if ops.headers {
            std::hint::black_box(self.get_http_request_headers_bytes());
        }
        if ops.source {
            std::hint::black_box(self.get_property(vec!["source", "address"]));
        }
        if ops.time {
            std::hint::black_box(self.get_current_time());
        }
        if ops.rewrite {
            for (name, value) in IDENTITY {
                self.set_http_request_header(name, Some(value));
            }
            self.set_http_request_header("authorization", Some("Bearer sk-bench-upstream-secret"));
        }
        if ops.batch {
            let current = self.get_http_request_headers();
            let mut pairs: Vec<(&str, &str)> = current
                .iter()
                .filter(|(n, _)| n != "authorization" && !n.starts_with("x-tokenhub-"))
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            pairs.extend(IDENTITY);
            pairs.push(("authorization", "Bearer sk-bench-upstream-secret"));
            self.set_http_request_headers(pairs);
        }
        if ops.write1 {
            self.set_http_request_header("x-tokenhub-tenant", Some("t-allow"));
        }
        if ops.add6 {
            for (name, value) in IDENTITY {
                self.add_http_request_header(name, value);
            }
            self.set_http_request_header("authorization", Some("Bearer sk-bench-upstream-secret"));
        }
        if ops.state5 {
            for (name, value) in IDENTITY {
                self.set_property(vec![&name[2..]], Some(value.as_bytes()));
            }
        }
        if ops.state1 {
            self.set_property(vec!["tokenhub_identity"], Some(b"t-allow main AbCdEf012345 eu api_key"));
        }
        if ops.get4 {
            for name in ["authorization", "x-api-key", ":method", ":path"] {
                std::hint::black_box(self.get_http_request_header(name));
            }
        }
        if ops.inject {
            self.set_http_request_header("authorization", Some("Bearer sk-bench-upstream-secret"));
        }
        if ops.quota {
            for scope in QUOTA_SCOPES {
                count(scope);
            }
        }
        if let Some(id) = ops.metric {
            let _ = hostcalls::increment_metric(id, 1);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.ops.quota {
            for (name, value) in
                [("ratelimit-limit", "1000000"), ("ratelimit-remaining", "999999"), ("ratelimit-reset", "42")]
            {
                self.set_http_response_header(name, Some(value));
            }
        }
        Action::Continue
    }
}

/// One shared-data entry per scope, as the guard keeps them (two windows).
const QUOTA_SCOPES: [&str; 2] = ["tokenhub.q|k|AbCdEf012345", "tokenhub.q|t|t-allow"];

/// One read and one compare-and-swap of a scope's entry, with a value the
/// size of the guard's (two windows: start, count).
fn count(scope: &str) {
    let (value, cas) = hostcalls::get_shared_data(scope).unwrap_or((None, None));
    let hits =
        value.and_then(|v| v.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))).unwrap_or(0);
    let mut entry = [0u8; 32];
    entry[..8].copy_from_slice(&(hits + 1).to_le_bytes());
    let _ = hostcalls::set_shared_data(scope, Some(&entry), cas);
}
