//! Error texts without the values they quote: a serde error reads
//! `invalid type: string "sk-…", expected u64`, and such text reaches
//! Envoy's log (a bundle the filter refuses), HTTP responses, stderr and
//! audit details.

/// A serde error's text without the values it may quote. Quoted strings and backquoted
/// values become `…`; field names, what was expected and the position stay.
/// For input from clients, where even a key may be a pasted secret.
pub fn safe_serde_error(e: &serde_json::Error) -> String {
    redact_quoted(&e.to_string(), &VALUE_TAGS)
}

/// For documents we wrote (a bundle): values go, but an unknown field keeps
/// its name, which tells an operator which side is older.
pub fn serde_error_naming_fields(e: &serde_json::Error) -> String {
    redact_quoted(&e.to_string(), &VALUE_TAGS[..5])
}

/// Backquoted text that is a value (not a field or variant name we define).
const VALUE_TAGS: [&str; 6] = ["integer ", "floating point ", "string ", "char ", "unknown variant ", "unknown field "];

fn redact_quoted(text: &str, value_tags: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['"', '`']) {
        let (before, after) = rest.split_at(i);
        out.push_str(before);
        let quote = after.chars().next().unwrap_or('"');
        let body = &after[1..];
        let Some(end) = body.find(quote) else {
            out.push_str(after);
            return out;
        };
        let redact = quote == '"' || value_tags.iter().any(|t| out.ends_with(t));
        if redact {
            out.push(quote);
            out.push('…');
            out.push(quote);
        } else {
            out.push_str(&after[..end + 2]);
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn serde_errors_lose_the_values_they_quote() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Q {
            n: u64,
            mode: Option<Mode>,
        }
        #[derive(serde::Deserialize, Debug)]
        enum Mode {
            A,
        }
        for (input, secret) in [
            (r#"{"n":"sk-live-SECRET"}"#, "sk-live-SECRET"),
            (r#"{"n":1,"sk-live-FIELD":1}"#, "sk-live-FIELD"),
            (r#"{"n":1,"mode":"sk-live-VARIANT"}"#, "sk-live-VARIANT"),
            (r#"{"n":-987654321}"#, "987654321"),
        ] {
            let e = serde_json::from_str::<Q>(input).unwrap_err();
            assert!(e.to_string().contains(secret), "the test needs serde to quote it: {e}");
            let safe = safe_serde_error(&e);
            assert!(!safe.contains(secret), "{safe}");
            assert!(safe.contains("line 1"), "{safe}");
        }
        let e = serde_json::from_str::<Q>(r#"{}"#).unwrap_err();
        assert_eq!(safe_serde_error(&e), "missing field `n` at line 1 column 2");
    }

    #[test]
    fn bundle_errors_keep_unknown_field_names_but_no_value() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Doc {
            n: u64,
        }
        let e = serde_json::from_str::<Doc>(r#"{"n":1,"quota_mode":1}"#).unwrap_err();
        assert!(serde_error_naming_fields(&e).contains("quota_mode"), "{e}");
        let e = serde_json::from_str::<Doc>(r#"{"n":"sk-live-SECRET"}"#).unwrap_err();
        assert!(!serde_error_naming_fields(&e).contains("sk-live-SECRET"), "{e}");
    }
}
