//! The guard's ECDS resource as protobuf, for the xDS push: the same
//! resource `publish` writes as JSON (names, VM, capability list, sealed
//! bundle), read back from the published file so the file stays the one
//! source of what Envoy runs.

use crate::admin::publish::{self, GuardResource};
use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, AsyncDataSource, DataSource, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{
    plugin_config, CapabilityRestrictionConfig, EnvironmentVariables, FailurePolicy, PluginConfig, SanitizationConfig,
    VmConfig,
};
use envoy_types::pb::google::protobuf::{Any, BytesValue};
use prost::{Message, Name};

/// The type every ECDS resource and subscription carries.
pub const TYPED_EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// One published bundle, ready to push.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The bundle version (from its sealed header): the xDS `version_info`.
    pub version: u64,
    /// The encoded `TypedExtensionConfig`.
    pub resource: Any,
}

/// Reads what `publish` wrote. `Ok(None)`: nothing published yet (the
/// `{"resources": []}` placeholder). `Err`: a file that is not a guard
/// resource, with the reason.
pub fn snapshot_of_file(contents: &[u8]) -> Result<Option<Snapshot>, String> {
    let value: serde_json::Value = serde_json::from_slice(contents).map_err(|e| format!("not JSON ({e})"))?;
    if value["resources"].as_array().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    let guard = GuardResource::from_json(&value).ok_or("not a tokenhub.guard ECDS resource")?;
    let version =
        crate::core::bundle::delta::peek_header(&guard.sealed).map_err(|e| format!("sealed bundle: {e}"))?.version;
    Ok(Some(Snapshot { version, resource: encode(&guard) }))
}

/// The resource as Envoy decodes it from a `DiscoveryResponse`.
pub fn encode(guard: &GuardResource) -> Any {
    #[allow(deprecated)] // PluginConfig's capability_restriction_config: where Envoy 1.36–1.40 read it.
    let plugin = PluginConfig {
        name: publish::PLUGIN_NAME.into(),
        root_id: publish::PLUGIN_NAME.into(),
        vm: Some(plugin_config::Vm::VmConfig(VmConfig {
            vm_id: publish::VM_ID.into(),
            runtime: publish::RUNTIME.into(),
            code: Some(AsyncDataSource {
                specifier: Some(async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::Filename(guard.wasm_path.clone())),
                    ..Default::default()
                })),
            }),
            environment_variables: Some(EnvironmentVariables {
                host_env_keys: vec![publish::BUNDLE_KEY_ENV.into()],
                ..Default::default()
            }),
            ..Default::default()
        })),
        configuration: Some(Any {
            type_url: BytesValue::type_url(),
            value: BytesValue { value: guard.sealed.clone() }.encode_to_vec(),
        }),
        failure_policy: FailurePolicy::FailReload as i32,
        capability_restriction_config: Some(CapabilityRestrictionConfig {
            allowed_capabilities: crate::capabilities::all().map(|c| (c.to_string(), SanitizationConfig {})).collect(),
        }),
        ..Default::default()
    };
    let config = TypedExtensionConfig {
        name: publish::FILTER_NAME.into(),
        typed_config: Some(Any { type_url: Wasm::type_url(), value: Wasm { config: Some(plugin) }.encode_to_vec() }),
    };
    Any { type_url: TYPED_EXTENSION_CONFIG.into(), value: config.encode_to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn decode(any: &Any) -> PluginConfig {
        let config = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
        assert_eq!(config.name, publish::FILTER_NAME);
        Wasm::decode(config.typed_config.unwrap().value.as_slice()).unwrap().config.unwrap()
    }

    /// The pushed resource says what the published file says, field by field.
    #[test]
    #[allow(deprecated)]
    fn the_pushed_resource_matches_the_published_file() {
        let json = publish::ecds_resource(b"sealed", Path::new("/w/guard.wasm"));
        let guard = GuardResource::from_json(&json).unwrap();
        assert_eq!(guard.sealed, b"sealed");
        let plugin = decode(&encode(&guard));
        let file = &json["resources"][0]["typed_config"]["config"];
        assert_eq!(plugin.name, file["name"]);
        assert_eq!(plugin.root_id, file["root_id"]);
        assert_eq!(plugin.failure_policy, FailurePolicy::FailReload as i32);
        let Some(plugin_config::Vm::VmConfig(vm)) = &plugin.vm else { panic!("no vm_config") };
        assert_eq!(vm.vm_id, file["vm_config"]["vm_id"]);
        assert_eq!(vm.runtime, file["vm_config"]["runtime"]);
        assert_eq!(
            vm.environment_variables.as_ref().unwrap().host_env_keys,
            vec![file["vm_config"]["environment_variables"]["host_env_keys"][0].as_str().unwrap()]
        );
        let bytes = BytesValue::decode(plugin.configuration.unwrap().value.as_slice()).unwrap();
        assert_eq!(bytes.value, b"sealed");
        let mut pushed: Vec<_> =
            plugin.capability_restriction_config.unwrap().allowed_capabilities.into_keys().collect();
        let mut written: Vec<_> = file["capability_restriction_config"]["allowed_capabilities"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        pushed.sort();
        written.sort();
        assert_eq!(pushed, written);
    }

    #[test]
    fn nothing_published_and_garbage_are_told_apart() {
        assert_eq!(snapshot_of_file(br#"{"resources": []}"#), Ok(None));
        assert!(snapshot_of_file(b"{").unwrap_err().contains("not JSON"));
        assert!(snapshot_of_file(br#"{"resources": [{}]}"#).unwrap_err().contains("not a tokenhub.guard"));
    }
}
