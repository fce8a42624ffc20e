//! Bounds on what outside Automerge bytes inflate to, checked before automerge sees them.
//!
//! Automerge inflates deflate-compressed data without any limit: a compressed change chunk (type
//! 2) or a document chunk whose columns are deflated can expand a few kilobytes into gigabytes.
//! [`check`] walks the chunks of a byte string, inflates every compressed part into a counter
//! (never into memory) and refuses the input once the total passes a cap. Change chunks pushed by
//! a device must be plain (type 1): [`check_change`] refuses anything else.

use std::io::{Read, Write};

/// The most bytes the compressed parts of one input may inflate to. A saved report with 5,000
/// notes inflates to about 1 MiB; this is far above real use and far below harm.
pub const MAX_INFLATED_BYTES: u64 = 16 << 20;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED_CHANGE: u8 = 2;
const DEFLATE_BIT: u64 = 0b1000;

/// Why outside bytes were refused before automerge read them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("compressed data would inflate to more than {max} bytes")]
    TooLarge { max: u64 },
    #[error("a pushed change must be a plain change chunk (Change::raw_bytes), not compressed or a document")]
    NotAPlainChange,
    #[error("chunk type {0} is not accepted from outside")]
    UnknownChunk(u8),
    #[error("the chunk structure is malformed")]
    Malformed,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], InflateError> {
        let n = usize::try_from(n).map_err(|_| InflateError::Malformed)?;
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(InflateError::Malformed)?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn uleb(&mut self) -> Result<u64, InflateError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.pos).ok_or(InflateError::Malformed)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(InflateError::Malformed)
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

/// A writer that only counts, and fails once more than `left` bytes were written.
struct Budget {
    left: u64,
}

impl Write for Budget {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len() as u64;
        if n > self.left {
            self.left = 0;
            return Err(std::io::Error::other("over budget"));
        }
        self.left -= n;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Inflates `data` into the budget; an error when it does not fit. Garbage that does not inflate
/// is left for automerge to refuse.
fn inflate(data: &[u8], budget: &mut Budget) -> Result<(), InflateError> {
    let mut decoder = flate2::read::DeflateDecoder::new(data);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => {
                budget.write_all(&buf[..n]).map_err(|_| InflateError::TooLarge { max: MAX_INFLATED_BYTES })?
            }
        }
    }
}

/// The column data of a column metadata block: (spec, length) pairs.
fn columns(c: &mut Cursor<'_>) -> Result<Vec<(u64, u64)>, InflateError> {
    let n = c.uleb()?;
    if n > 1_024 {
        return Err(InflateError::Malformed);
    }
    (0..n).map(|_| Ok((c.uleb()?, c.uleb()?))).collect()
}

/// The deflated columns of a document chunk's data.
fn document(data: &[u8], budget: &mut Budget) -> Result<(), InflateError> {
    let mut c = Cursor { bytes: data, pos: 0 };
    let actors = c.uleb()?;
    for _ in 0..actors {
        let len = c.uleb()?;
        c.take(len)?;
    }
    let heads = c.uleb()?;
    c.take(heads.checked_mul(32).ok_or(InflateError::Malformed)?)?;
    let change_cols = columns(&mut c)?;
    let op_cols = columns(&mut c)?;
    for (spec, len) in change_cols.into_iter().chain(op_cols) {
        let col = c.take(len)?;
        if spec & DEFLATE_BIT != 0 {
            inflate(col, budget)?;
        }
    }
    Ok(())
}

/// Walks the chunks of `bytes` (a saved document, incremental saves, concatenated raw changes)
/// and refuses them when their compressed parts would inflate to more than
/// [`MAX_INFLATED_BYTES`] in total, or when a chunk is of a kind Gridsync never sends (bundles).
/// Structure automerge itself would refuse is left to automerge.
pub fn check(bytes: &[u8]) -> Result<(), InflateError> {
    let mut budget = Budget { left: MAX_INFLATED_BYTES };
    let mut c = Cursor { bytes, pos: 0 };
    while !c.done() {
        if c.take(4)? != MAGIC {
            return Err(InflateError::Malformed);
        }
        c.take(4)?; // checksum
        let kind = c.take(1)?[0];
        let len = c.uleb()?;
        let data = c.take(len)?;
        match kind {
            DOCUMENT => document(data, &mut budget)?,
            CHANGE => {}
            COMPRESSED_CHANGE => inflate(data, &mut budget)?,
            other => return Err(InflateError::UnknownChunk(other)),
        }
    }
    Ok(())
}

/// A pushed change must be exactly one plain change chunk: no compression for automerge to
/// inflate, nothing after it.
pub fn check_change(bytes: &[u8]) -> Result<(), InflateError> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4)? != MAGIC {
        return Err(InflateError::Malformed);
    }
    c.take(4)?;
    if c.take(1)?[0] != CHANGE {
        return Err(InflateError::NotAPlainChange);
    }
    let len = c.uleb()?;
    c.take(len)?;
    if !c.done() {
        return Err(InflateError::NotAPlainChange);
    }
    Ok(())
}
