//! Why a request was refused, and how that looks to the client: an HTTP
//! status and an OpenAI-style JSON error that SDKs already parse. The reason
//! is also the metric label, so denials are counted without logging content.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    NoBundle,
    MissingCredential,
    DuplicateCredential,
    MalformedCredential,
    BadChecksum,
    UnknownKey,
    WrongSecret,
    KeyDisabled,
    KeyExpired,
    UnknownPrincipal,
    InvalidToken,
    TenantDisabled,
    SubAccountDisabled,
    IpNotAllowed,
    TenantMismatch,
    MethodNotAllowed,
    PathNotAllowed,
    PathNotNormalized,
    NoProvider,
    ProviderNotConfigured,
    QuotaExceeded,
    FilterFault,
}

impl DenyReason {
    pub const ALL: [DenyReason; 22] = [
        Self::NoBundle,
        Self::MissingCredential,
        Self::DuplicateCredential,
        Self::MalformedCredential,
        Self::BadChecksum,
        Self::UnknownKey,
        Self::WrongSecret,
        Self::KeyDisabled,
        Self::KeyExpired,
        Self::UnknownPrincipal,
        Self::InvalidToken,
        Self::TenantDisabled,
        Self::SubAccountDisabled,
        Self::IpNotAllowed,
        Self::TenantMismatch,
        Self::MethodNotAllowed,
        Self::PathNotAllowed,
        Self::PathNotNormalized,
        Self::NoProvider,
        Self::ProviderNotConfigured,
        Self::QuotaExceeded,
        Self::FilterFault,
    ];

    /// Stable snake_case label for metrics and access logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoBundle => "no_bundle",
            Self::MissingCredential => "missing_credential",
            Self::DuplicateCredential => "duplicate_credential",
            Self::MalformedCredential => "malformed_credential",
            Self::BadChecksum => "bad_checksum",
            Self::UnknownKey => "unknown_key",
            Self::WrongSecret => "wrong_secret",
            Self::KeyDisabled => "key_disabled",
            Self::KeyExpired => "key_expired",
            Self::UnknownPrincipal => "unknown_principal",
            Self::InvalidToken => "invalid_token",
            Self::TenantDisabled => "tenant_disabled",
            Self::SubAccountDisabled => "sub_account_disabled",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::TenantMismatch => "tenant_mismatch",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PathNotAllowed => "path_not_allowed",
            Self::PathNotNormalized => "path_not_normalized",
            Self::NoProvider => "no_provider",
            Self::ProviderNotConfigured => "provider_not_configured",
            Self::QuotaExceeded => "quota_exceeded",
            Self::FilterFault => "filter_fault",
        }
    }

    pub fn status(self) -> u32 {
        match self {
            Self::MissingCredential
            | Self::DuplicateCredential
            | Self::MalformedCredential
            | Self::BadChecksum
            | Self::UnknownKey
            | Self::WrongSecret
            | Self::KeyDisabled
            | Self::KeyExpired
            | Self::UnknownPrincipal
            | Self::InvalidToken => 401,
            Self::TenantDisabled
            | Self::SubAccountDisabled
            | Self::IpNotAllowed
            | Self::TenantMismatch
            | Self::MethodNotAllowed
            | Self::PathNotAllowed => 403,
            Self::PathNotNormalized => 400,
            Self::NoProvider => 404,
            Self::QuotaExceeded => 429,
            Self::NoBundle | Self::ProviderNotConfigured | Self::FilterFault => 503,
        }
    }

    /// (OpenAI error type, code, message). Messages are constant: they never
    /// echo anything the client sent.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        const AUTH: &str = "authentication_error";
        const PERM: &str = "permission_error";
        match self {
            Self::MissingCredential => (
                AUTH,
                "missing_api_key",
                "No API key provided. Send it as 'Authorization: Bearer thk_...' or 'x-api-key: thk_...'.",
            ),
            Self::DuplicateCredential => {
                (AUTH, "invalid_api_key", "More than one API key was provided. Send exactly one.")
            }
            Self::MalformedCredential | Self::BadChecksum => (
                AUTH,
                "invalid_api_key",
                "The API key is malformed. TokenHub keys look like thk_ followed by 50 letters and digits.",
            ),
            Self::UnknownKey | Self::WrongSecret => (AUTH, "invalid_api_key", "Incorrect API key provided."),
            Self::KeyDisabled => (AUTH, "invalid_api_key", "This API key has been disabled."),
            Self::KeyExpired => (AUTH, "invalid_api_key", "This API key has expired."),
            Self::UnknownPrincipal => (AUTH, "unknown_principal", "This identity is not mapped to a TokenHub account."),
            Self::InvalidToken => (AUTH, "invalid_token", "The identity token was not accepted: expired, not yet valid, from an unknown issuer or audience, or badly signed."),
            Self::TenantDisabled => (PERM, "account_disabled", "The account this key belongs to is disabled."),
            Self::SubAccountDisabled => (PERM, "account_disabled", "The sub-account this key belongs to is disabled."),
            Self::IpNotAllowed => {
                (PERM, "ip_not_allowed", "Requests from this IP address are not allowed for this key.")
            }
            Self::TenantMismatch => (PERM, "tenant_mismatch", "The tenant in the request does not match the API key."),
            Self::MethodNotAllowed => (PERM, "insufficient_scope", "This API key may not use this HTTP method."),
            Self::PathNotAllowed => (PERM, "insufficient_scope", "This API key may not access this path."),
            Self::PathNotNormalized => {
                ("invalid_request_error", "invalid_path", "The request path is not in normalized form.")
            }
            Self::NoProvider => ("invalid_request_error", "unknown_url", "No upstream provider serves this path."),
            Self::QuotaExceeded => (
                "rate_limit_error",
                "rate_limit_exceeded",
                "Rate limit reached. Retry after the time in the Retry-After header.",
            ),
            Self::ProviderNotConfigured => (
                "service_unavailable",
                "provider_not_configured",
                "The upstream provider is not configured for this account.",
            ),
            Self::NoBundle => (
                "service_unavailable",
                "policy_unavailable",
                "The gateway has no valid policy loaded; requests are refused until one is.",
            ),
            Self::FilterFault => {
                ("service_unavailable", "gateway_fault", "The gateway could not evaluate the request.")
            }
        }
    }

    /// The JSON body sent to the client.
    pub fn body(self) -> String {
        let (kind, code, message) = self.parts();
        format!(r#"{{"error":{{"type":"{kind}","code":"{code}","message":"{message}"}}}}"#)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_and_wrong_secret_look_identical_to_the_client() {
        assert_eq!(DenyReason::UnknownKey.body(), DenyReason::WrongSecret.body());
        assert_eq!(DenyReason::UnknownKey.status(), DenyReason::WrongSecret.status());
    }
}
