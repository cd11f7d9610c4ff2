//! What the xDS push serves: the published file's resource (see
//! `admin::ecds`), read back from the file so the file stays the one source
//! of what Envoy runs.

use crate::admin::ecds::{Format, GuardResource};
use envoy_types::pb::google::protobuf::Any;

/// One published bundle, ready to push.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The bundle version (from its sealed header): the xDS `version_info`.
    pub version: u64,
    /// The encoded `TypedExtensionConfig`.
    pub resource: Any,
}

/// Reads what `publish` wrote, in `format`. `Ok(None)`: nothing published
/// yet. `Err`: a file that is not a guard resource, with the reason.
pub fn snapshot_of_file(contents: &[u8], format: Format) -> Result<Option<Snapshot>, String> {
    let Some(guard) = GuardResource::from_file(contents, format)? else { return Ok(None) };
    let version =
        crate::core::bundle::delta::peek_header(&guard.sealed).map_err(|e| format!("sealed bundle: {e}"))?.version;
    Ok(Some(Snapshot { version, resource: guard.to_any() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_without_a_bundle_header_is_refused() {
        let guard = GuardResource::new(b"not sealed", std::path::Path::new("/w/guard.wasm"));
        for format in [Format::Json, Format::Protobuf] {
            let err = snapshot_of_file(&guard.to_file(format).unwrap(), format).unwrap_err();
            assert!(err.contains("sealed bundle"), "{err}");
        }
        assert_eq!(snapshot_of_file(br#"{"resources": []}"#, Format::Json), Ok(None));
    }
}
