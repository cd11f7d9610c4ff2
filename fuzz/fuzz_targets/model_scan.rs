//! See `tokenhub_guard_fuzz::model_scan` for what this target checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenhub_guard_fuzz::model_scan(data));
