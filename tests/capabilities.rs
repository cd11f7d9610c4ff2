//! The capability list Envoy enforces (`tokenhub_guard::capabilities`)
//! against the module itself: the import and export tables of the built
//! `tokenhub_guard.wasm`, read with `wasmparser` (no list restated here).
//! Needs the release module: `make wasm` (a prerequisite of `make test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeSet;
use std::path::PathBuf;
use tokenhub_guard::capabilities::{CALLBACKS, HOST_CALLS, WASI};
use wasmparser::{ElementItems, ElementKind, Operator, Parser, Payload, TypeRef};

struct Tables {
    /// (module, name) of every imported function.
    imports: BTreeSet<(String, String)>,
    exports: BTreeSet<String>,
    /// Function index → (module, name) for imported functions, in order.
    imported: Vec<(String, String)>,
    /// Exported function name → function index.
    export_index: std::collections::BTreeMap<String, u32>,
    /// Type index of every function (imports first).
    func_types: Vec<u32>,
    /// Per defined function: direct callees and the type indices of its indirect calls.
    bodies: Vec<(Vec<u32>, Vec<u32>)>,
    /// Functions reachable through the indirect-call table.
    table: BTreeSet<u32>,
}

fn module_tables() -> Tables {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/wasm32-wasip1/release/tokenhub_guard.wasm");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; build the module first with `make wasm`", path.display()));
    let mut tables = Tables {
        imports: BTreeSet::new(),
        exports: BTreeSet::new(),
        imported: Vec::new(),
        export_index: Default::default(),
        func_types: Vec::new(),
        bodies: Vec::new(),
        table: BTreeSet::new(),
    };
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.unwrap_or_else(|e| panic!("{}: not a wasm module: {e}", path.display())) {
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.unwrap_or_else(|e| panic!("import section: {e}"));
                    if let TypeRef::Func(ty) = import.ty {
                        tables.imports.insert((import.module.to_string(), import.name.to_string()));
                        tables.imported.push((import.module.to_string(), import.name.to_string()));
                        tables.func_types.push(ty);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.unwrap_or_else(|e| panic!("export section: {e}"));
                    tables.exports.insert(export.name.to_string());
                    if export.kind == wasmparser::ExternalKind::Func {
                        tables.export_index.insert(export.name.to_string(), export.index);
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    tables.func_types.push(ty.unwrap_or_else(|e| panic!("function section: {e}")));
                }
            }
            Payload::ElementSection(reader) => {
                for element in reader {
                    let element = element.unwrap_or_else(|e| panic!("element section: {e}"));
                    if matches!(element.kind, ElementKind::Declared) {
                        continue;
                    }
                    if let ElementItems::Functions(funcs) = element.items {
                        for f in funcs {
                            tables.table.insert(f.unwrap_or_else(|e| panic!("element: {e}")));
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut direct = Vec::new();
                let mut indirect = Vec::new();
                let mut ops = body.get_operators_reader().unwrap_or_else(|e| panic!("code: {e}"));
                while !ops.eof() {
                    match ops.read().unwrap_or_else(|e| panic!("code: {e}")) {
                        Operator::Call { function_index } | Operator::ReturnCall { function_index } => {
                            direct.push(function_index)
                        }
                        Operator::CallIndirect { type_index, .. } | Operator::ReturnCallIndirect { type_index, .. } => {
                            indirect.push(type_index)
                        }
                        Operator::RefFunc { function_index } => direct.push(function_index),
                        _ => {}
                    }
                }
                tables.bodies.push((direct, indirect));
            }
            _ => {}
        }
    }
    tables
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Every allowed host call is imported by the module and reachable from
/// an allowed callback (no privilege nothing uses); every host call the
/// module can reach that is not allowed is at most one the call graph
/// cannot rule out (indirect calls are over-approximated by signature, so
/// the SDK's unused trait defaults count) and never one that sends data
/// anywhere — but `proxy_grpc_call`, the one outbound call allowed (the
/// global mode's budget top-up to the rate limit service; `src/capabilities.rs`).
/// A host call the guard really makes but the list lacks is
/// stubbed by Envoy, which the e2e suites see as a failed request.
#[test]
#[cfg_attr(target_family = "wasm", ignore = "no file system under the wasm test runners")]
fn allowed_host_calls_are_the_ones_the_module_uses() {
    let tables = module_tables();
    let of = |module: &str| -> BTreeSet<String> {
        tables.imports.iter().filter(|(m, _)| m == module).map(|(_, n)| n.clone()).collect()
    };
    let allowed = names(&HOST_CALLS);
    let imported = of("env");
    let reachable = reachable_imports(&tables);
    let stale: Vec<&String> = allowed.difference(&imported).collect();
    assert!(stale.is_empty(), "capabilities::HOST_CALLS the module does not import: {stale:?}");
    let unreached: Vec<&String> = allowed.difference(&reachable).collect();
    assert!(unreached.is_empty(), "capabilities::HOST_CALLS no allowed callback can reach: {unreached:?}");
    // Outbound traffic, queues, timers, body writes, foreign functions:
    // none is reachable from the callbacks Envoy may enter.
    let outbound: Vec<&String> = reachable
        .iter()
        .filter(|n| {
            n.contains("http_call")
                || ["proxy_grpc_stream", "proxy_grpc_send"].contains(&n.as_str())
                || n.contains("enqueue")
                || n.contains("tick")
                || n.contains("set_buffer")
                || n.contains("foreign")
        })
        .collect();
    assert!(outbound.is_empty(), "host calls that send data reachable from allowed callbacks: {outbound:?}");
    assert_eq!(of("wasi_snapshot_preview1"), names(&WASI), "WASI imports of the module vs capabilities::WASI");
    let modules: BTreeSet<&str> = tables.imports.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(modules, BTreeSet::from(["env", "wasi_snapshot_preview1"]), "import modules");
}

/// Every allowed callback is one the module exports, and the one the guard
/// cannot work without (request headers: otherwise it never runs, fail
/// open) is among them. The SDK exports more callbacks (trailers, logs,
/// done): leaving those out is the point.
#[test]
#[cfg_attr(target_family = "wasm", ignore = "no file system under the wasm test runners")]
fn allowed_callbacks_are_exported_and_include_the_request_path() {
    let tables = module_tables();
    let callbacks = names(&CALLBACKS);
    let missing: Vec<&String> = callbacks.difference(&tables.exports).collect();
    assert!(missing.is_empty(), "allowed callbacks the module does not export: {missing:?}");
    for needed in ["proxy_on_request_headers", "proxy_on_configure", "proxy_on_context_create", "proxy_on_vm_start"] {
        assert!(callbacks.contains(needed), "{needed} must be allowed");
    }
    // Bodies: read for credentials with model allowlists;
    // trailers, logs and done stay out.
    let skipped: Vec<&String> =
        callbacks.iter().filter(|c| c.contains("trailers") || c.contains("_log") || c.contains("done")).collect();
    assert!(skipped.is_empty(), "trailer/log/done callbacks allowed: {skipped:?}");
    for body in ["proxy_on_request_body", "proxy_on_response_body"] {
        assert!(callbacks.contains(body), "{body} must be allowed (model allowlists read the body)");
    }
}

/// Host calls reachable from the allowed callbacks: direct calls, and for
/// an indirect call every function of the table with that signature (an
/// over-approximation: trait objects' unused default methods count).
fn reachable_imports(tables: &Tables) -> BTreeSet<String> {
    let n_imported = tables.imported.len() as u32;
    let mut seen = BTreeSet::new();
    let mut stack: Vec<u32> = CALLBACKS
        .iter()
        .map(|c| *tables.export_index.get(*c).unwrap_or_else(|| panic!("{c} is not exported")))
        .collect();
    // Also the start/initialisation exports Envoy always calls.
    for always in ["_initialize", "_start", "main", "proxy_on_memory_allocate", "malloc"] {
        if let Some(i) = tables.export_index.get(always) {
            stack.push(*i);
        }
    }
    let mut found = BTreeSet::new();
    while let Some(f) = stack.pop() {
        if !seen.insert(f) {
            continue;
        }
        if f < n_imported {
            let (module, name) = &tables.imported[f as usize];
            if module == "env" {
                found.insert(name.clone());
            }
            continue;
        }
        let (direct, indirect) = &tables.bodies[(f - n_imported) as usize];
        stack.extend(direct.iter().copied());
        for ty in indirect {
            stack.extend(tables.table.iter().copied().filter(|g| tables.func_types.get(*g as usize) == Some(ty)));
        }
    }
    found
}
