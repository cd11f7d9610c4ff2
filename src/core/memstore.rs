//! In-memory stores with Proxy-Wasm shared-data semantics, for the core's
//! tests of everything kept in shared data (quota counters, the newest
//! bundle): the CAS token bumps on every write; a write to a missing entry,
//! or with CAS 0, ignores the token (as Envoy does).

use crate::core::quota::{CounterStore, StoreError};
use std::cell::RefCell;
use std::collections::HashMap;

type Entries = HashMap<String, (Vec<u8>, u32)>;

fn get(map: &Entries, key: &str) -> (Option<Vec<u8>>, u32) {
    match map.get(key) {
        Some((v, c)) => (Some(v.clone()), *c),
        None => (None, 0),
    }
}

fn set(map: &mut Entries, key: &str, value: &[u8], cas: u32) -> bool {
    match map.get_mut(key) {
        Some((v, c)) if *c == cas || cas == 0 => {
            *v = value.to_vec();
            *c += 1;
            true
        }
        Some(_) => false,
        None => {
            map.insert(key.into(), (value.to_vec(), 1));
            true
        }
    }
}

/// One VM's view, with injected faults.
#[derive(Default)]
pub struct MemStore {
    map: RefCell<Entries>,
    /// Simulated contention: the next N writes fail with a CAS mismatch.
    conflicts: RefCell<usize>,
    /// Every write fails with a store error.
    failing: RefCell<bool>,
}

impl MemStore {
    pub fn conflict_next(&self, writes: usize) {
        *self.conflicts.borrow_mut() = writes;
    }

    pub fn fail_writes(&self, failing: bool) {
        *self.failing.borrow_mut() = failing;
    }
}

impl CounterStore for MemStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        get(&self.map.borrow(), key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, StoreError> {
        if *self.failing.borrow() {
            return Err(StoreError);
        }
        if *self.conflicts.borrow() > 0 {
            *self.conflicts.borrow_mut() -= 1;
            return Ok(false);
        }
        Ok(set(&mut self.map.borrow_mut(), key, value, cas))
    }
}

/// The process-wide map every worker thread shares.
#[cfg(not(target_family = "wasm"))]
#[derive(Default)]
pub struct SyncStore(std::sync::Mutex<Entries>);

#[cfg(not(target_family = "wasm"))]
impl CounterStore for SyncStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        self.0.lock().map(|m| get(&m, key)).unwrap_or((None, 0))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, StoreError> {
        self.0.lock().map(|mut m| set(&mut m, key, value, cas)).map_err(|_| StoreError)
    }
}
