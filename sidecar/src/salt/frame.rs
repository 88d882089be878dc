//! Framing of the master's event bus: `{"head": {}, "body": <tag "\n\n" msgpack(data)>}` maps,
//! back to back (3006.0-3006.25, 3007.x, 3008.x) or each behind a 4-byte big-endian length
//! (3006.26+ on the pub socket; 3006.26+, 3007.15+ and 3008.2+ on the pull socket).
//!
//! No library knows Salt's frame prefix, so this is written here. The decoder detects the framing
//! from the first byte of a connection (a fixmap `0x8X` means plain; `0x00`, the high byte of a
//! length under 16 MiB, means prefixed) and never changes it while the connection lives. Frames
//! are cut out of the read buffer without copying (`Bytes`), and the frame extent of a plain
//! stream is found by walking the MessagePack headers, not by a trial decode.

use bytes::{Buf, Bytes, BytesMut};

use super::msgpack::{WalkError, Walker};

/// The end of the tag inside an event body.
pub(crate) const TAGEND: &[u8] = b"\n\n";

/// A frame longer than this is not believed: the stream is out of sync.
pub(crate) const MAX_FRAME: usize = 256 << 20;

/// How frames are delimited on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// MessagePack maps back to back.
    Plain,
    /// Each map behind a 4-byte big-endian length.
    Prefixed,
}

impl std::fmt::Display for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::Prefixed => "length-prefixed",
        })
    }
}

/// A frame that could not be used; the decoder has already skipped past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event frame ({len} bytes skipped): {reason}")]
pub struct BadFrame {
    /// How many bytes of the stream were dropped.
    pub len: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// The stream cannot be resynchronised; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream out of sync: {0}")]
pub struct Desync(pub &'static str);

/// One step of the decoder.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A frame's body: `tag "\n\n" msgpack(data)`.
    Body(Bytes),
    /// A frame was malformed and skipped.
    Bad(BadFrame),
}

/// An event that could not be used; the decoder has already moved past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEvent {
    #[error(transparent)]
    Frame(#[from] BadFrame),
    #[error(transparent)]
    Event(#[from] super::event::EventError),
}

/// Cuts frames out of the bytes read from one connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    framing: Option<Framing>,
}

impl FrameDecoder {
    /// A decoder for a fresh connection (framing not yet known).
    pub fn new() -> Self {
        Self::default()
    }

    /// The framing seen on this connection, once the first byte arrived.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// The buffer to read into (append only).
    pub(crate) fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next event: `Ok(None)` when more bytes are needed, `Ok(Some(Err(_)))` for a bad
    /// frame or event that was skipped (log it and go on), `Err` when the stream is out of sync
    /// and the connection must be dropped.
    pub fn next_event(&mut self) -> Result<Option<Result<super::Event, BadEvent>>, Desync> {
        Ok(self.next()?.map(|d| match d {
            Decoded::Body(body) => super::Event::from_body(body).map_err(BadEvent::from),
            Decoded::Bad(bad) => Err(BadEvent::from(bad)),
        }))
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub(crate) fn next(&mut self) -> Result<Option<Decoded>, Desync> {
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        let framing = *self.framing.get_or_insert(if first & 0xf0 == 0x80 {
            Framing::Plain
        } else {
            Framing::Prefixed
        });
        match framing {
            Framing::Prefixed => self.next_prefixed(),
            Framing::Plain => Ok(self.next_plain()),
        }
    }

    fn next_prefixed(&mut self) -> Result<Option<Decoded>, Desync> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME {
            return Err(Desync("frame length over 256 MiB"));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let frame = self.buf.split_to(len);
        let mut walker = Walker::new(&frame);
        let body = body_range(&mut walker);
        let whole = walker.position() == frame.len();
        Ok(Some(match body {
            Ok(range) if whole => Decoded::Body(cut(frame, range)),
            Ok(_) => Decoded::Bad(BadFrame { len, reason: "bytes after the frame map" }),
            Err(WalkError::Incomplete) => Decoded::Bad(BadFrame { len, reason: "truncated frame" }),
            Err(WalkError::Malformed(reason)) => Decoded::Bad(BadFrame { len, reason }),
        }))
    }

    fn next_plain(&mut self) -> Option<Decoded> {
        let mut walker = Walker::new(&self.buf);
        match body_range(&mut walker) {
            Ok(range) => {
                let len = walker.position();
                Some(Decoded::Body(cut(self.buf.split_to(len), range)))
            }
            Err(WalkError::Incomplete) => {
                // Make room for the whole frame at once rather than growing read by read.
                if let Some(len) = plain_frame_len(&self.buf).filter(|l| *l <= MAX_FRAME) {
                    self.buf.reserve(len.saturating_sub(self.buf.len()));
                }
                None
            }
            Err(WalkError::Malformed(reason)) => {
                // Skip the whole value if it is valid MessagePack, else resynchronise at the next
                // thing that looks like a frame start.
                let mut skipper = Walker::new(&self.buf);
                let len = match skipper.skip() {
                    Ok(()) => skipper.position(),
                    Err(WalkError::Incomplete) if self.buf.len() < MAX_FRAME => return None,
                    Err(_) => resync_point(&self.buf),
                };
                self.buf.advance(len);
                Some(Decoded::Bad(BadFrame { len, reason }))
            }
        }
    }
}

/// The `range` of a frame, shared with the read buffer (no copy, one reference).
fn cut(mut frame: BytesMut, range: std::ops::Range<usize>) -> Bytes {
    frame.truncate(range.end);
    frame.advance(range.start);
    frame.freeze()
}

/// The total length of a plain frame, once its header up to the body's length is buffered.
fn plain_frame_len(buf: &[u8]) -> Option<usize> {
    let mut w = Walker::new(buf);
    for _ in 0..w.map_len().ok()? {
        if w.raw().ok()? == b"body" {
            let len = w.raw_len().ok()?;
            return w.position().checked_add(len);
        }
        w.skip().ok()?;
    }
    None
}

/// Where a frame may start again after garbage: the next `{"head"` or `{"body"` fixmap.
fn resync_point(buf: &[u8]) -> usize {
    let found = buf.windows(6).skip(1).position(|w| w == b"\x82\xa4head" || w == b"\x82\xa4body");
    found.map_or(buf.len(), |p| p + 1)
}

/// Walks one frame map and returns the byte range of its `body` value's payload.
fn body_range(walker: &mut Walker<'_>) -> Result<std::ops::Range<usize>, WalkError> {
    let entries = walker.map_len()?;
    let mut body = None;
    for _ in 0..entries {
        let key = walker.raw()?;
        if key == b"body" {
            let raw = walker.raw()?;
            let end = walker.position();
            body = Some(end - raw.len()..end);
        } else {
            walker.skip()?;
        }
    }
    body.ok_or(WalkError::Malformed("frame has no body"))
}

/// Splits a body at the first `"\n\n"` into tag and packed data.
pub(crate) fn split_body(body: &[u8]) -> Option<(&[u8], usize)> {
    let at = body.windows(2).position(|w| w == TAGEND)?;
    Some((&body[..at], at + 2))
}

/// Builds the bytes that fire one event: a frame as Salt's `frame_msg_ipc` packs it, with the
/// body as msgpack bin (the 3007 puller refuses str bodies with non-UTF-8 bytes).
pub fn encode_frame(tag: &str, data: &rmpv::Value, framing: Framing) -> Vec<u8> {
    let mut body = Vec::with_capacity(tag.len() + 64);
    body.extend_from_slice(tag.as_bytes());
    body.extend_from_slice(TAGEND);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut body, data);
    let frame = rmpv::Value::Map(vec![
        ("head".into(), rmpv::Value::Map(Vec::new())),
        ("body".into(), rmpv::Value::Binary(body)),
    ]);
    let mut payload = Vec::new();
    let _ = rmpv::encode::write_value(&mut payload, &frame);
    match framing {
        Framing::Plain => payload,
        Framing::Prefixed => {
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            let mut out = Vec::with_capacity(4 + payload.len());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&payload);
            out
        }
    }
}

/// Drains the decoder into bodies (tests).
#[cfg(test)]
pub(crate) fn drain(decoder: &mut FrameDecoder) -> Result<Vec<Decoded>, Desync> {
    let mut out = Vec::new();
    while let Some(d) = decoder.next()? {
        out.push(d);
    }
    Ok(out)
}
