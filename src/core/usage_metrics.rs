//! Token and cost metrics per tenant and model, with bounded label sets.
//!
//! Envoy metrics have no labels of their own: the label values are parts of
//! the metric name, `tokenhub.usage.tenant.<tenant>.model.<model>.<kind>`,
//! which the shipped Envoy configurations turn into Prometheus labels with
//! `stats_config.stats_tags` (`tokenhub_usage_<kind>{tenant="…",model="…"}`).
//!
//! The bound: every series is defined by the bundle, never by traffic.
//! - `tenant`: a tenant id of the bundle (the request's authenticated
//!   tenant; never a client-sent value).
//! - `model`: the price-table entry the model matches (its exact name, or
//!   its `prefix*` pattern as `prefix_`), else `other`. A model a client
//!   invents (within an allowlist's `prefix*`, or unrestricted) is `other`.
//!
//! So at most tenants × (price entries + 1) × `KINDS` series.
//! Label values keep `a-z A-Z 0-9 - _` only (any other byte becomes `_`,
//! e.g. `gpt-4.1` → `gpt-4_1`), since `.` separates Envoy name parts.

use crate::core::bundle::compile::{ModelPattern, Policy};

/// What is counted per tenant and model: requests whose usage was read,
/// input, output and cached-input tokens, and cost in nano-dollars.
pub const KINDS: [&str; 5] = ["requests", "input_tokens", "output_tokens", "cached_tokens", "cost_nano_usd"];

/// The label of a model not in the price table.
pub const OTHER: &str = "other";

/// `a-z A-Z 0-9 - _`, any other byte `_`.
pub fn label(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b == b'-' { b as char } else { '_' }).collect()
}

/// The bounded label of `model` on the provider at `provider`.
pub fn model_label(policy: &Policy, provider: usize, model: Option<&str>) -> String {
    let Some(model) = model else { return OTHER.to_string() };
    match policy.price_rule(provider, model) {
        Some(ModelPattern::Exact(name)) => label(name),
        Some(ModelPattern::Prefix(prefix)) => label(&format!("{prefix}*")),
        None => OTHER.to_string(),
    }
}

/// The metric names of one tenant and model label, in the order of `KINDS`.
pub fn metric_names(tenant: &str, model_label: &str) -> [String; 5] {
    let tenant = label(tenant);
    KINDS.map(|kind| format!("tokenhub.usage.tenant.{tenant}.model.{model_label}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::bundle::schema::{BundleDoc, PriceDoc, ProviderDoc, SCHEMA_VERSION};
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn labels_come_from_the_price_table_else_other() {
        let provider = ProviderDoc {
            id: "openai".into(),
            path_prefix: "/v1/".into(),
            header: "authorization".into(),
            format: "Bearer {secret}".into(),
            secret: None,
            shared_endpoints: vec![],
        };
        let price = |model: &str| PriceDoc {
            provider: "openai".into(),
            model: model.into(),
            input: 1,
            cached_input: 0,
            output: 1,
        };
        let doc = BundleDoc {
            schema: SCHEMA_VERSION,
            version: 1,
            providers: vec![provider],
            prices: vec![price("gpt-4.1"), price("gpt-4o*")],
            ..Default::default()
        };
        let policy = crate::core::bundle::compile(&doc).unwrap();
        assert_eq!(model_label(&policy, 0, Some("gpt-4.1")), "gpt-4_1");
        assert_eq!(model_label(&policy, 0, Some("gpt-4o-mini-2024-07-18")), "gpt-4o_", "the pattern, not the name");
        assert_eq!(model_label(&policy, 0, Some("gpt-4o-anything-a-client-invents")), "gpt-4o_");
        assert_eq!(model_label(&policy, 0, Some("o3")), OTHER);
        assert_eq!(model_label(&policy, 0, None), OTHER);
        assert_eq!(model_label(&policy, 7, Some("gpt-4.1")), OTHER, "prices are per provider");
        assert_eq!(metric_names("acme.eu", "gpt-4_1")[1], "tokenhub.usage.tenant.acme_eu.model.gpt-4_1.input_tokens");
    }
}
