//! The filter's buffers that held a credential or body bytes are zeroed
//! before their memory is released: a global allocator that looks into
//! every block it is handed back counts the blocks still holding a marker.
//! A plain `Vec` with the marker is the control (the check can fail).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tokenhub_guard::core::wipe::WipedHeaders;
use zeroize::Zeroizing;

/// What a freed block must not hold (a credential's bytes).
const MARKER: &[u8] = b"thk_MARKERc0ffee5ecret";

// Per thread: each test arms and counts its own frees only.
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static FREED_WITH_MARKER: Cell<usize> = const { Cell::new(0) };
}

struct Inspecting;

unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.try_with(Cell::get).unwrap_or(false) && layout.size() >= MARKER.len() {
            // SAFETY: the block is still ours until System.dealloc below.
            let block = std::slice::from_raw_parts(ptr, layout.size());
            if block.windows(MARKER.len()).any(|w| w == MARKER) {
                let _ = FREED_WITH_MARKER.try_with(|n| n.set(n.get() + 1));
            }
        }
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Inspecting = Inspecting;

fn freed_with_marker(f: impl FnOnce()) -> usize {
    let before = FREED_WITH_MARKER.with(Cell::get);
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    FREED_WITH_MARKER.with(Cell::get) - before
}

#[test]
fn credential_and_body_buffers_are_zeroed_before_release() {
    let with_marker = || {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(MARKER);
        value
    };
    // The control: a plain buffer goes back to the allocator as it was.
    assert_eq!(freed_with_marker(|| drop(with_marker())), 1, "the inspecting allocator sees nothing");
    // The request headers as the host hands them over.
    let freed = freed_with_marker(|| {
        let headers = WipedHeaders::new(vec![
            (":path".to_string(), b"/v1/chat/completions".to_vec()),
            ("authorization".to_string(), with_marker()),
            (String::from_utf8(MARKER.to_vec()).unwrap(), b"a header named like a secret".to_vec()),
        ]);
        assert_eq!(headers[1].1.len(), MARKER.len() + 7);
        drop(headers);
    });
    assert_eq!(freed, 0, "a header buffer was released with the credential in it");
    // A body chunk (its capacity larger than its length: zeroed whole).
    let freed = freed_with_marker(|| {
        let mut chunk = Vec::with_capacity(4096);
        chunk.extend_from_slice(MARKER);
        chunk.truncate(3);
        drop(Zeroizing::new(chunk));
    });
    assert_eq!(freed, 0, "a body chunk was released with its bytes in it");
}

/// Publishing's core steps — pack the policy (JSON of the provider
/// secrets), seal, open and compile (header values rendered from them) —
/// release no block that still holds a secret: no buffer grows with a
/// secret in it, and every copy zeroes itself when dropped.
#[test]
fn packing_sealing_and_compiling_leave_no_secret_behind() {
    use tokenhub_guard::core::bundle::{open_and_compile, pack, seal, BundleKey};
    let marker = std::str::from_utf8(MARKER).unwrap();
    let mut doc = common::base_doc();
    doc.providers[0].secret = Some(format!("sk-{marker}").into());
    doc.tenants[1].provider_secrets.insert("openai".into(), format!("own-{marker}").into());
    let key = BundleKey::from_bytes([3; 32]);
    let freed = freed_with_marker(|| {
        let plain = pack(&doc).unwrap();
        let sealed = seal::seal(&plain, &key, doc.version, [7; 12]).unwrap();
        let sealed = seal::to_binary(&sealed).unwrap();
        let policy = open_and_compile(&sealed, &key).unwrap();
        assert!(policy.providers.iter().any(|p| p.default_value.as_deref().is_some_and(|v| v.contains(marker))));
        drop((plain, policy, doc.clone()));
    });
    assert_eq!(freed, 0, "publishing released a block with a provider secret in it");
}

/// The admin's secrets zero themselves when dropped: the store document
/// (bundle key, audit key, provider secrets) and a 2FA state (seeds).
#[cfg(feature = "admin")]
#[test]
fn admin_secrets_are_zeroed_when_dropped() {
    use tokenhub_guard::admin::store::StoreDoc;
    use tokenhub_guard::admin::totp::SecondFactor;
    use tokenhub_guard::core::bundle::schema::{ProviderDoc, TenantDoc};
    let marked = |prefix: &str| format!("{prefix}{}", std::str::from_utf8(MARKER).unwrap());
    assert_eq!(freed_with_marker(|| drop(marked("control-"))), 1, "the inspecting allocator sees nothing");
    let freed = freed_with_marker(|| {
        let mut doc = StoreDoc::default();
        doc.bundle_key = marked("bk-");
        doc.audit.key = marked("ak-");
        doc.policy.providers.push(ProviderDoc { secret: Some(marked("sk-").into()), ..Default::default() });
        let own = [("openai".to_string(), marked("own-").into())].into();
        doc.policy.tenants.push(TenantDoc { provider_secrets: own, ..Default::default() });
        drop(doc);
    });
    assert_eq!(freed, 0, "a store document was released with a secret in it");
    let freed = freed_with_marker(|| {
        let mut sf = SecondFactor::default();
        sf.secret = Some(marked("seed-"));
        sf.pending = Some(marked("pending-"));
        drop(sf);
    });
    assert_eq!(freed, 0, "a 2FA state was released with its seed in it");
}
