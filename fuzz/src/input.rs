//! A byte reader for structured fuzz inputs: every read succeeds (missing bytes read as zero or
//! empty), so any input is a valid script and mutations stay meaningful.

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A `u16` little-endian length, then that many bytes (fewer at the end of the input).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        let n = n.min(self.data.len());
        let (c, rest) = self.data.split_at(n);
        self.data = rest;
        c
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// The encoder of what [`Input::chunk`] reads (for seeds).
pub fn chunk(out: &mut Vec<u8>, c: &[u8]) {
    let n = u16::try_from(c.len()).expect("seed chunk below 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(c);
}
