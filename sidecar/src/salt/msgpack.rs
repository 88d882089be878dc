//! A small zero-copy MessagePack walker over a byte slice.
//!
//! `rmpv` decodes whole values, and on a short buffer it cannot tell "need more bytes" from
//! "garbage" cheaply, nor say where a value ends without building it. The event reader needs
//! exactly those two things: the extent of a frame in a stream with no length prefix, and the
//! byte range of a job's `return` so that a 100 KB output is not copied until someone asks for it.
//! This walker does only that: it reads markers, scalars and lengths, and skips values. Full
//! decoding of free-form values is left to `rmpv`.

use std::borrow::Cow;

/// Why the walker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// The slice ends inside the value: read more bytes and try again.
    Incomplete,
    /// The bytes are not the MessagePack we expect here.
    Malformed(&'static str),
}

/// Nesting deeper than this is treated as malformed (Salt's data is a few levels deep).
const MAX_DEPTH: usize = 512;

/// A cursor over a MessagePack byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WalkError> {
        let end = self.pos.checked_add(n).ok_or(WalkError::Malformed("length overflow"))?;
        let slice = self.buf.get(self.pos..end).ok_or(WalkError::Incomplete)?;
        self.pos = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, WalkError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, WalkError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn len(&mut self, n: usize) -> Result<usize, WalkError> {
        usize::try_from(self.be(n)?).map_err(|_| WalkError::Malformed("length too large"))
    }

    /// The marker byte of the next value, without consuming it.
    pub(crate) fn peek(&self) -> Result<u8, WalkError> {
        self.buf.get(self.pos).copied().ok_or(WalkError::Incomplete)
    }

    /// A map header: the number of entries.
    pub(crate) fn map_len(&mut self) -> Result<usize, WalkError> {
        match self.byte()? {
            m @ 0x80..=0x8f => Ok(usize::from(m & 0x0f)),
            0xde => self.len(2),
            0xdf => self.len(4),
            _ => Err(WalkError::Malformed("expected a map")),
        }
    }

    /// An array header: the number of elements.
    pub(crate) fn array_len(&mut self) -> Result<usize, WalkError> {
        match self.byte()? {
            m @ 0x90..=0x9f => Ok(usize::from(m & 0x0f)),
            0xdc => self.len(2),
            0xdd => self.len(4),
            _ => Err(WalkError::Malformed("expected an array")),
        }
    }

    /// A str or bin value, as raw bytes (no UTF-8 validation; Salt's old encoders put arbitrary
    /// bytes in str, and its newer ones put bytes in bin).
    pub(crate) fn raw(&mut self) -> Result<&'a [u8], WalkError> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 | 0xc4 => self.len(1)?,
            0xda | 0xc5 => self.len(2)?,
            0xdb | 0xc6 => self.len(4)?,
            _ => return Err(WalkError::Malformed("expected a string")),
        };
        self.take(n)
    }

    /// A str or bin value as text; invalid UTF-8 is replaced rather than refused.
    pub(crate) fn text(&mut self) -> Result<Cow<'a, str>, WalkError> {
        let raw = self.raw()?;
        // `from_utf8` is the fast path; the lossy scan only runs on bad bytes.
        Ok(match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(raw),
        })
    }

    /// The payload length of a str or bin value, leaving the cursor at its first payload byte.
    pub(crate) fn raw_len(&mut self) -> Result<usize, WalkError> {
        match self.byte()? {
            m @ 0xa0..=0xbf => Ok(usize::from(m & 0x1f)),
            0xd9 | 0xc4 => self.len(1),
            0xda | 0xc5 => self.len(2),
            0xdb | 0xc6 => self.len(4),
            _ => Err(WalkError::Malformed("expected a string")),
        }
    }

    /// A str value, or nil. Anything else is skipped and reads as `None`.
    pub(crate) fn opt_text(&mut self) -> Result<Option<Cow<'a, str>>, WalkError> {
        match self.peek()? {
            0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => self.text().map(Some),
            _ => self.skip().map(|()| None),
        }
    }

    /// An integer (any width), or `None` (skipped) if the value is not an integer in i64 range.
    pub(crate) fn opt_int(&mut self) -> Result<Option<i64>, WalkError> {
        let m = self.peek()?;
        let v = match m {
            0x00..=0x7f => {
                self.pos += 1;
                i64::from(m)
            }
            0xe0..=0xff => {
                self.pos += 1;
                i64::from(i8::from_be_bytes([m]))
            }
            0xcc..=0xcf => {
                self.pos += 1;
                let v = self.be(1 << (m - 0xcc))?;
                match i64::try_from(v) {
                    Ok(v) => v,
                    Err(_) => return Ok(None),
                }
            }
            0xd0..=0xd3 => {
                self.pos += 1;
                let width = 1usize << (m - 0xd0);
                let raw = self.be(width)?;
                let shift = 64 - 8 * width;
                // Sign-extend from `width` bytes: reinterpreting the bits is the intent here.
                #[allow(clippy::cast_possible_wrap)]
                let signed = (raw << shift) as i64;
                signed >> shift
            }
            _ => {
                self.skip()?;
                return Ok(None);
            }
        };
        Ok(Some(v))
    }

    /// A boolean, or `None` (skipped) for anything else.
    pub(crate) fn opt_bool(&mut self) -> Result<Option<bool>, WalkError> {
        match self.peek()? {
            0xc2 => {
                self.pos += 1;
                Ok(Some(false))
            }
            0xc3 => {
                self.pos += 1;
                Ok(Some(true))
            }
            _ => self.skip().map(|()| None),
        }
    }

    /// Skips one whole value, however deeply nested, without recursion.
    pub(crate) fn skip(&mut self) -> Result<(), WalkError> {
        // `pending` counts values still to skip at the current nesting level stack.
        let mut pending: Vec<usize> = Vec::new();
        let mut todo = 1usize;
        loop {
            while todo == 0 {
                match pending.pop() {
                    Some(t) => todo = t,
                    None => return Ok(()),
                }
            }
            todo -= 1;
            let m = self.byte()?;
            let children = match m {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
                0x80..=0x8f => 2 * usize::from(m & 0x0f),
                0x90..=0x9f => usize::from(m & 0x0f),
                0xa0..=0xbf => {
                    self.take(usize::from(m & 0x1f))?;
                    0
                }
                0xc1 => return Err(WalkError::Malformed("reserved marker 0xc1")),
                0xc4 | 0xd9 => {
                    let n = self.len(1)?;
                    self.take(n)?;
                    0
                }
                0xc5 | 0xda => {
                    let n = self.len(2)?;
                    self.take(n)?;
                    0
                }
                0xc6 | 0xdb => {
                    let n = self.len(4)?;
                    self.take(n)?;
                    0
                }
                0xc7 => {
                    let n = self.len(1)?;
                    self.take(1 + n)?;
                    0
                }
                0xc8 => {
                    let n = self.len(2)?;
                    self.take(1 + n)?;
                    0
                }
                0xc9 => {
                    let n = self.len(4)?;
                    self.take(1 + n)?;
                    0
                }
                0xca => self.take(4).map(|_| 0)?,
                0xcb => self.take(8).map(|_| 0)?,
                0xcc..=0xcf => self.take(1 << (m - 0xcc)).map(|_| 0)?,
                0xd0..=0xd3 => self.take(1 << (m - 0xd0)).map(|_| 0)?,
                0xd4..=0xd8 => self.take(1 + (1 << (m - 0xd4))).map(|_| 0)?,
                0xdc => self.len(2)?,
                0xdd => self.len(4)?,
                0xde => self.len(2)?.checked_mul(2).ok_or(WalkError::Malformed("map too large"))?,
                0xdf => self.len(4)?.checked_mul(2).ok_or(WalkError::Malformed("map too large"))?,
            };
            if children > 0 {
                if pending.len() >= MAX_DEPTH {
                    return Err(WalkError::Malformed("nested too deeply"));
                }
                pending.push(todo);
                todo = children;
            }
        }
    }
}
