//! Why a request was refused, and how that looks to the client: an HTTP
//! status and an OpenAI-style JSON error that SDKs already parse. The reason
//! is also the metric label, so denials are counted without logging content.
//!
//! Every reason is written once, in the `deny_reasons!` table below (the way
//! Envoy's filters name every stat once in an `ALL_…_STATS` macro): the enum,
//! `DenyReason::ALL`, the label, the metric name, the status and the client
//! message all come from that one row. The integration harness and the
//! filter's metrics iterate `ALL`; nothing restates the list.

const AUTH: &str = "authentication_error";
const PERM: &str = "permission_error";
const INVALID: &str = "invalid_request_error";
const UNAVAILABLE: &str = "service_unavailable";
const BAD_KEY: &str = "The API key is malformed. TokenHub keys look like thk_ followed by 50 letters and digits.";
const INCORRECT_KEY: &str = "Incorrect API key provided.";

/// One row per reason: `Variant => "label", status, (OpenAI type, code,
/// constant message);`. Messages never echo anything the client sent.
macro_rules! deny_reasons {
    ($( $(#[$meta:meta])* $variant:ident => $label:literal, $status:literal, ($kind:expr, $code:literal, $message:expr); )+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DenyReason {
            $( $(#[$meta])* $variant, )+
        }

        impl DenyReason {
            /// How many reasons there are.
            pub const COUNT: usize = [$($label),+].len();

            /// Every reason, in table order.
            pub const ALL: [DenyReason; Self::COUNT] = [$(Self::$variant),+];

            /// Stable snake_case label for metrics and access logs.
            pub const fn label(self) -> &'static str {
                match self { $(Self::$variant => $label),+ }
            }

            /// The guard's counter for this reason (`tokenhub.denied.<label>`;
            /// Envoy shows it as `wasmcustom.tokenhub.denied.<label>`, and in
            /// Prometheus as `tokenhub_denied_<label>`).
            pub const fn metric_name(self) -> &'static str {
                match self { $(Self::$variant => concat!("tokenhub.denied.", $label)),+ }
            }

            /// The HTTP status the client gets.
            pub const fn status(self) -> u32 {
                match self { $(Self::$variant => $status),+ }
            }

            /// (OpenAI error type, code, message). Messages are constant:
            /// they never echo anything the client sent.
            pub const fn parts(self) -> (&'static str, &'static str, &'static str) {
                match self { $(Self::$variant => ($kind, $code, $message)),+ }
            }
        }
    };
}

deny_reasons! {
    NoBundle => "no_bundle", 503,
        (UNAVAILABLE, "policy_unavailable", "The gateway has no valid policy loaded; requests are refused until one is.");
    MissingCredential => "missing_credential", 401,
        (AUTH, "missing_api_key", "No API key provided. Send it as 'Authorization: Bearer thk_...' or 'x-api-key: thk_...'.");
    DuplicateCredential => "duplicate_credential", 401,
        (AUTH, "invalid_api_key", "More than one API key was provided. Send exactly one.");
    MalformedCredential => "malformed_credential", 401, (AUTH, "invalid_api_key", BAD_KEY);
    BadChecksum => "bad_checksum", 401, (AUTH, "invalid_api_key", BAD_KEY);
    UnknownKey => "unknown_key", 401, (AUTH, "invalid_api_key", INCORRECT_KEY);
    WrongSecret => "wrong_secret", 401, (AUTH, "invalid_api_key", INCORRECT_KEY);
    KeyDisabled => "key_disabled", 401, (AUTH, "invalid_api_key", "This API key has been disabled.");
    KeyExpired => "key_expired", 401, (AUTH, "invalid_api_key", "This API key has expired.");
    UnknownPrincipal => "unknown_principal", 401,
        (AUTH, "unknown_principal", "This identity is not mapped to a TokenHub account.");
    InvalidToken => "invalid_token", 401,
        (AUTH, "invalid_token", "The identity token was not accepted: expired, not yet valid, from an unknown issuer or audience, or badly signed.");
    TenantDisabled => "tenant_disabled", 403,
        (PERM, "account_disabled", "The account this key belongs to is disabled.");
    SubAccountDisabled => "sub_account_disabled", 403,
        (PERM, "account_disabled", "The sub-account this key belongs to is disabled.");
    IpNotAllowed => "ip_not_allowed", 403,
        (PERM, "ip_not_allowed", "Requests from this IP address are not allowed for this key.");
    TenantMismatch => "tenant_mismatch", 403,
        (PERM, "tenant_mismatch", "The tenant in the request does not match the API key.");
    MethodNotAllowed => "method_not_allowed", 403,
        (PERM, "insufficient_scope", "This API key may not use this HTTP method.");
    PathNotAllowed => "path_not_allowed", 403, (PERM, "insufficient_scope", "This API key may not access this path.");
    PathNotNormalized => "path_not_normalized", 400,
        (INVALID, "invalid_path", "The request path is not in normalized form.");
    NoProvider => "no_provider", 404, (INVALID, "unknown_url", "No upstream provider serves this path.");
    /// The endpoint keeps data at the provider (files, batches, assistants,
    /// stored responses…): the platform's shared credential may not be used
    /// for it, only the tenant's own provider secret.
    SharedCredentialRefused => "shared_credential_refused", 403,
        (PERM, "provider_credential_required", "This endpoint stores data at the upstream provider and is only available with your account's own provider credential, not the platform's shared one.");
    ProviderNotConfigured => "provider_not_configured", 503,
        (UNAVAILABLE, "provider_not_configured", "The upstream provider is not configured for this account.");
    /// The key, sub-account or tenant lists its models and this is not one.
    ModelNotAllowed => "model_not_allowed", 403,
        (PERM, "model_not_allowed", "This API key may not use the requested model.");
    /// A key with a model allowlist sent a body whose model could not be
    /// read: not a JSON object, no string `model` member near the start, or
    /// two of them.
    ModelUnreadable => "model_unreadable", 400,
        (INVALID, "model_required", "This API key may use only some models: the request body must be a JSON object with one string 'model' member, within the first 4 MiB.");
    QuotaExceeded => "quota_exceeded", 429,
        ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached. Retry after the time in the Retry-After header.");
    BudgetExceeded => "budget_exceeded", 429,
        ("rate_limit_error", "token_budget_exceeded", "Token or spend budget reached. Retry after the time in the Retry-After header.");
    ModelNotPriced => "model_not_priced", 403,
        (PERM, "model_not_priced", "This account has a spend budget: the request body must be JSON naming a model the gateway has a price for.");
    FilterFault => "filter_fault", 503, (UNAVAILABLE, "gateway_fault", "The gateway could not evaluate the request.");
}

impl DenyReason {
    /// The JSON body sent to the client.
    pub fn body(self) -> String {
        let (kind, code, message) = self.parts();
        format!(r#"{{"error":{{"type":"{kind}","code":"{code}","message":"{message}"}}}}"#)
    }
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn every_body_is_openai_shaped_json() {
        for r in DenyReason::ALL {
            let v: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
            assert!(v["error"]["type"].is_string(), "{r:?}");
            assert!(v["error"]["code"].is_string(), "{r:?}");
            assert!(v["error"]["message"].is_string(), "{r:?}");
            assert!((400..600).contains(&r.status()));
        }
    }

    #[test]
    fn labels_are_unique_metric_safe() {
        let labels: std::collections::HashSet<_> = DenyReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DenyReason::ALL.len());
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn metric_names_are_the_labels_under_tokenhub_denied() {
        for r in DenyReason::ALL {
            assert_eq!(r.metric_name(), format!("tokenhub.denied.{}", r.label()));
        }
        let distinct: std::collections::HashSet<_> = DenyReason::ALL.iter().collect();
        assert_eq!(distinct.len(), DenyReason::COUNT);
    }

    #[test]
    fn unknown_and_wrong_secret_look_identical_to_the_client() {
        assert_eq!(DenyReason::UnknownKey.body(), DenyReason::WrongSecret.body());
        assert_eq!(DenyReason::UnknownKey.status(), DenyReason::WrongSecret.status());
    }
}
