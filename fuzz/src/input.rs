//! A cursor over the fuzzer's bytes. Reading past the end yields zeros, so
//! every input decodes to something and short inputs stay meaningful.

pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for slot in &mut out {
            *slot = self.byte();
        }
        out
    }

    /// One of `items`, chosen by the next byte.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }
}

/// Builds inputs for the seed corpus (the inverse of the decoders).
#[derive(Default)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    pub fn byte(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The byte that makes `Input::pick` choose `item` from `items`.
    pub fn index_of<T: PartialEq + std::fmt::Debug>(&mut self, items: &[T], item: &T) -> &mut Self {
        match items.iter().position(|i| i == item) {
            Some(i) if i < 256 => self.byte(i as u8),
            _ => panic!("{item:?} is not in the pool"),
        }
    }
}
