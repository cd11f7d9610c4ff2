//! Buffers the filter gets from the host that held a client's credential
//! (the request headers: `authorization`, `x-api-key`) or a metered body's
//! bytes: overwritten with zeros before their memory goes back to the
//! allocator ("immediate destruction"). Body chunks use
//! `zeroize::Zeroizing<Vec<u8>>`; headers come as name/value pairs, which
//! `zeroize` does not cover, hence this type.

use zeroize::Zeroize;

/// Request headers as the host hands them over; every name and value is
/// zeroed (to its full capacity) when dropped.
pub struct WipedHeaders(Vec<(String, Vec<u8>)>);

impl WipedHeaders {
    pub fn new(headers: Vec<(String, Vec<u8>)>) -> Self {
        Self(headers)
    }
}

impl std::ops::Deref for WipedHeaders {
    type Target = [(String, Vec<u8>)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for WipedHeaders {
    fn drop(&mut self) {
        for (name, value) in &mut self.0 {
            name.zeroize();
            value.zeroize();
        }
    }
}
