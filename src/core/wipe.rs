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

/// A secret held as text (a provider credential, or a header value that
/// embeds one): zeroed when dropped, so every copy — the store document,
/// the bundle packed from it, the compiled policy — leaves nothing behind.
/// Serialized as a plain string; `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl std::ops::Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// `value` as JSON in a buffer sized before it is written and zeroed when
/// dropped, with `spare` bytes of room for what the caller appends: a
/// buffer that grew would leave its earlier copies behind, unzeroed.
pub fn to_json_zeroizing<T: serde::Serialize>(
    value: &T,
    spare: usize,
) -> serde_json::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut size = ByteCount(0);
    serde_json::to_writer(&mut size, value)?;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(size.0 + spare));
    serde_json::to_writer(&mut *out, value)?;
    Ok(out)
}

/// Counts what would be written.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
