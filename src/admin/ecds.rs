//! The guard's ECDS resource, in its one definition: what `publish` writes
//! to the file Envoy watches (a `DiscoveryResponse` as JSON, or as binary
//! protobuf when the file is named `*.pb`), what the xDS push sends, and
//! the one reader of both file forms.
//!
//! Why two file forms: Envoy reads a JSON file through protobuf's JSON
//! parser, which takes seconds for a million-key bundle (78 MB of base64);
//! the binary form is the same message without that parse (see
//! bench/results/keys.md). Envoy picks the parser by the file's extension.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, AsyncDataSource, DataSource, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{
    plugin_config, CapabilityRestrictionConfig, EnvironmentVariables, FailurePolicy, PluginConfig, SanitizationConfig,
    VmConfig,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::{Any, BytesValue, StringValue};
use prost::{Message, Name};
use serde_json::json;
use std::path::Path;

/// The filter's name in Envoy's `config_discovery`.
pub const FILTER_NAME: &str = "tokenhub.guard";
/// The plugin's name and root id.
pub const PLUGIN_NAME: &str = "tokenhub_guard";
/// The published VM (the bootstraps' default_config has a VM of its own).
pub const VM_ID: &str = "tokenhub_guard";
pub const RUNTIME: &str = "envoy.wasm.runtime.v8";
/// The Envoy process's variable that carries the bundle key into the VM.
pub const BUNDLE_KEY_ENV: &str = "TOKENHUB_BUNDLE_KEY";
/// The type every ECDS resource and subscription carries.
pub const TYPED_EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const BYTES_VALUE: &str = "type.googleapis.com/google.protobuf.BytesValue";

/// How the ECDS file is written, as Envoy reads it: by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON (also valid YAML, so `.json`, `.yaml` or anything else).
    Json,
    /// Binary protobuf: Envoy's rule is a name ending in `.pb` (any case).
    Protobuf,
}

impl Format {
    pub fn of(path: &Path) -> Self {
        match path.extension().is_some_and(|e| e.eq_ignore_ascii_case("pb")) {
            true => Format::Protobuf,
            false => Format::Json,
        }
    }
}

/// From this many keys, a JSON file costs Envoy a noticeable parse on every
/// reload (~2 s at 1 000 000 keys, bench/results/keys.md).
pub const LARGE_FOR_JSON: usize = 100_000;

/// The advice for a publish of `keys` keys to `path`, when its form is the
/// slow one for that size.
pub fn format_advice(path: &Path, keys: usize) -> Option<String> {
    (keys >= LARGE_FOR_JSON && Format::of(path) == Format::Json).then(|| {
        format!(
            "{keys} keys in a JSON ECDS file: Envoy spends ~2 s per 1 000 000 keys parsing it on every reload, \
             before any worker sees a revoke; publish to the binary form instead (`tokenhub-admin publish \
             --ecds-file {}`, the same resource) and point Envoy's config_discovery path at that file",
            path.with_extension("pb").display()
        )
    })
}

/// What a published resource carries that changes between publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardResource {
    pub sealed: Vec<u8>,
    pub wasm_path: String,
}

impl GuardResource {
    pub fn new(sealed: &[u8], wasm_path: &Path) -> Self {
        Self { sealed: sealed.to_vec(), wasm_path: wasm_path.to_string_lossy().into_owned() }
    }

    /// The file's bytes.
    pub fn to_file(&self, format: Format) -> Result<Vec<u8>, String> {
        match format {
            Format::Json => serde_json::to_vec_pretty(&self.to_json()).map_err(|e| e.to_string()),
            Format::Protobuf => Ok(DiscoveryResponse {
                resources: vec![self.to_any()],
                type_url: TYPED_EXTENSION_CONFIG.into(),
                ..Default::default()
            }
            .encode_to_vec()),
        }
    }

    /// Reads a file `to_file` wrote. `Ok(None)`: nothing published yet
    /// (no resources: the `{"resources": []}` placeholder).
    pub fn from_file(contents: &[u8], format: Format) -> Result<Option<Self>, String> {
        match format {
            Format::Json => {
                let value: serde_json::Value =
                    serde_json::from_slice(contents).map_err(|e| format!("not JSON ({e})"))?;
                if value["resources"].as_array().is_some_and(Vec::is_empty) {
                    return Ok(None);
                }
                Self::from_json(&value).map(Some).ok_or_else(|| NOT_OURS.into())
            }
            Format::Protobuf => {
                let response = DiscoveryResponse::decode(contents)
                    .map_err(|e| format!("not a binary protobuf DiscoveryResponse ({e})"))?;
                match response.resources.first() {
                    None => Ok(None),
                    Some(any) => Self::from_any(any).map(Some).ok_or_else(|| NOT_OURS.into()),
                }
            }
        }
    }

    /// As `from_file`, reading the file named `path`, in its format.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        let contents = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_file(&contents, Format::of(path)).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The resource in the protobuf JSON mapping. The sealed bundle is a
    /// BytesValue (base64 here): Envoy decodes it once and hands each VM
    /// the raw envelope.
    pub fn to_json(&self) -> serde_json::Value {
        let capabilities: serde_json::Map<String, serde_json::Value> =
            crate::capabilities::all().map(|c| (c.to_string(), json!({}))).collect();
        json!({
            "resources": [{
                "@type": TYPED_EXTENSION_CONFIG,
                "name": FILTER_NAME,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": PLUGIN_NAME,
                        "root_id": PLUGIN_NAME,
                        "vm_config": {
                            "vm_id": VM_ID,
                            "runtime": RUNTIME,
                            "code": { "local": { "filename": self.wasm_path } },
                            "environment_variables": { "host_env_keys": [BUNDLE_KEY_ENV] }
                        },
                        "configuration": {
                            "@type": BYTES_VALUE,
                            "value": STANDARD.encode(&self.sealed)
                        },
                        // A crashed VM answers 503 and is reloaded for later
                        // requests: never open, and not down for good.
                        "failure_policy": "FAIL_RELOAD",
                        "capability_restriction_config": { "allowed_capabilities": capabilities }
                    }
                }
            }]
        })
    }

    fn from_json(resource: &serde_json::Value) -> Option<Self> {
        let entry = &resource["resources"][0];
        (entry["name"] == FILTER_NAME).then_some(())?;
        let config = &entry["typed_config"]["config"];
        let wasm_path = config["vm_config"]["code"]["local"]["filename"].as_str()?.to_string();
        // The BytesValue `publish` writes, or a hand-written StringValue.
        let configuration = &config["configuration"];
        let value = configuration["value"].as_str()?;
        let sealed = match configuration["@type"] == BYTES_VALUE {
            true => STANDARD.decode(value).ok()?,
            false => value.as_bytes().to_vec(),
        };
        Some(Self { sealed, wasm_path })
    }

    /// The resource as Envoy decodes it from a `DiscoveryResponse`.
    pub fn to_any(&self) -> Any {
        #[allow(deprecated)] // PluginConfig's capability_restriction_config: where Envoy 1.36–1.40 read it.
        let plugin = PluginConfig {
            name: PLUGIN_NAME.into(),
            root_id: PLUGIN_NAME.into(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: VM_ID.into(),
                runtime: RUNTIME.into(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Local(DataSource {
                        specifier: Some(data_source::Specifier::Filename(self.wasm_path.clone())),
                        ..Default::default()
                    })),
                }),
                environment_variables: Some(EnvironmentVariables {
                    host_env_keys: vec![BUNDLE_KEY_ENV.into()],
                    ..Default::default()
                }),
                ..Default::default()
            })),
            configuration: Some(Any {
                type_url: BytesValue::type_url(),
                value: BytesValue { value: self.sealed.clone() }.encode_to_vec(),
            }),
            failure_policy: FailurePolicy::FailReload as i32,
            capability_restriction_config: Some(CapabilityRestrictionConfig {
                allowed_capabilities: crate::capabilities::all()
                    .map(|c| (c.to_string(), SanitizationConfig {}))
                    .collect(),
            }),
            ..Default::default()
        };
        let config = TypedExtensionConfig {
            name: FILTER_NAME.into(),
            typed_config: Some(Any {
                type_url: Wasm::type_url(),
                value: Wasm { config: Some(plugin) }.encode_to_vec(),
            }),
        };
        Any { type_url: TYPED_EXTENSION_CONFIG.into(), value: config.encode_to_vec() }
    }

    fn from_any(any: &Any) -> Option<Self> {
        let config = TypedExtensionConfig::decode(any.value.as_slice()).ok()?;
        (config.name == FILTER_NAME).then_some(())?;
        let plugin = Wasm::decode(config.typed_config?.value.as_slice()).ok()?.config?;
        let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else { return None };
        let Some(async_data_source::Specifier::Local(DataSource {
            specifier: Some(data_source::Specifier::Filename(wasm_path)),
            ..
        })) = vm.code?.specifier
        else {
            return None;
        };
        let configuration = plugin.configuration?;
        let sealed = match configuration.type_url == BYTES_VALUE {
            true => BytesValue::decode(configuration.value.as_slice()).ok()?.value,
            false => StringValue::decode(configuration.value.as_slice()).ok()?.value.into_bytes(),
        };
        Some(Self { sealed, wasm_path })
    }
}

const NOT_OURS: &str = "not a tokenhub.guard ECDS resource (resources[0] is not the file `publish` writes)";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(any: &Any) -> PluginConfig {
        let config = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
        assert_eq!(config.name, FILTER_NAME);
        Wasm::decode(config.typed_config.unwrap().value.as_slice()).unwrap().config.unwrap()
    }

    fn guard() -> GuardResource {
        GuardResource::new(b"sealed\x00\xff", Path::new("/w/guard.wasm"))
    }

    /// The protobuf form says what the JSON form says, field by field.
    #[test]
    #[allow(deprecated)]
    fn the_protobuf_resource_matches_the_json_one() {
        let json = guard().to_json();
        let plugin = decode(&guard().to_any());
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
        assert_eq!(bytes.value, b"sealed\x00\xff");
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
    fn both_file_forms_read_back_what_was_written() {
        for format in [Format::Json, Format::Protobuf] {
            let bytes = guard().to_file(format).unwrap();
            assert_eq!(GuardResource::from_file(&bytes, format), Ok(Some(guard())), "{format:?}");
        }
        // The forms are told apart by the name only, as Envoy does.
        assert_eq!(Format::of(Path::new("/e/guard.ecds.pb")), Format::Protobuf);
        assert_eq!(Format::of(Path::new("/e/GUARD.PB")), Format::Protobuf);
        assert_eq!(Format::of(Path::new("/e/guard.json")), Format::Json);
        assert_eq!(Format::of(Path::new("/e/guard.pb_text")), Format::Json);
        let json = guard().to_file(Format::Json).unwrap();
        assert!(GuardResource::from_file(&json, Format::Protobuf).is_err());
    }

    #[test]
    fn a_large_json_file_gets_the_advice_to_use_the_binary_form() {
        let json = Path::new("/e/guard.json");
        assert_eq!(format_advice(json, LARGE_FOR_JSON - 1), None);
        let advice = format_advice(json, LARGE_FOR_JSON).unwrap();
        assert!(advice.contains("--ecds-file /e/guard.pb"), "{advice}");
        assert_eq!(format_advice(Path::new("/e/guard.pb"), 10 * LARGE_FOR_JSON), None);
    }

    #[test]
    fn nothing_published_and_garbage_are_told_apart() {
        let read = |bytes: &[u8], format| GuardResource::from_file(bytes, format);
        assert_eq!(read(br#"{"resources": []}"#, Format::Json), Ok(None));
        assert!(read(b"{", Format::Json).unwrap_err().contains("not JSON"));
        assert!(read(br#"{"resources": [{}]}"#, Format::Json).unwrap_err().contains("not a tokenhub.guard"));
        assert_eq!(read(b"", Format::Protobuf), Ok(None));
        assert!(read(b"\xff\xff\xff", Format::Protobuf).unwrap_err().contains("not a binary protobuf"));
        let other = DiscoveryResponse {
            resources: vec![Any { type_url: TYPED_EXTENSION_CONFIG.into(), value: b"\x0a\x03abc".to_vec() }],
            ..Default::default()
        };
        assert!(read(&other.encode_to_vec(), Format::Protobuf).unwrap_err().contains("not a tokenhub.guard"));
    }

    /// The documented example is exactly what `publish` writes, up to the
    /// placeholders (the wasm path, and the bundle: empty bytes here).
    #[test]
    fn the_reference_ecds_file_matches_what_publish_writes() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/local/guard.ecds.json.example");
        let text = std::fs::read_to_string(&example).unwrap_or_default();
        let text = text.replace("<sealed bundle text>", "").replace("{{WASM_PATH}}", "/w/tokenhub_guard.wasm");
        let documented: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(documented, GuardResource::new(b"", Path::new("/w/tokenhub_guard.wasm")).to_json());
    }

    /// A hand-written StringValue configuration is read as its text, in
    /// both forms.
    #[test]
    fn a_string_value_configuration_is_read_as_text() {
        let mut json = guard().to_json();
        json["resources"][0]["typed_config"]["config"]["configuration"] =
            json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "plain"});
        let read = GuardResource::from_file(&serde_json::to_vec(&json).unwrap(), Format::Json).unwrap().unwrap();
        assert_eq!(read.sealed, b"plain");
    }
}
