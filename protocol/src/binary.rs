//! Binary output frames (since version 2): a job's output as raw bytes in a binary WebSocket
//! frame, behind a small JSON header, instead of a JSON text `output` whose `data` must be
//! escaped (every `\n` of a log becomes two bytes) or base64-encoded. Sent only to a sidecar
//! that acknowledged `connect` with `protocol` 2 or more; every other message stays JSON text.
//!
//! Layout of one frame:
//!
//! ```text
//! byte 0        0x01 (the kind: output)
//! bytes 1..5    H, the header's length in bytes, unsigned 32-bit big-endian
//! bytes 5..5+H  the header: JSON {"job_name","job_instance","machine","timestamp","stream","seq"}
//! the rest      the output bytes, raw (any bytes, no encoding)
//! ```
//!
//! The header carries what a text `output` carries besides `data`, with the same names and the
//! same meaning (`seq` numbering, acks and nacks are shared with text frames).

use serde::{Deserialize, Serialize};

use crate::{DecodeError, MAX_FRAME_BYTES, Output, OutputData, RunKey, Seq, Stream, Timestamp};

/// The first byte of a binary output frame.
pub const BINARY_OUTPUT: u8 = 0x01;
/// The protocol version that introduced binary output frames.
pub const BINARY_OUTPUT_VERSION: u32 = 2;
/// The largest header accepted (a header holds names and a timestamp: far below this).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The header of a binary output frame: an `output` message without `data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputHeader {
    #[serde(flatten)]
    pub run: RunKey,
    pub timestamp: Timestamp,
    #[serde(default)]
    pub stream: Stream,
    pub seq: Seq,
}

/// One decoded binary output frame; `data` borrows from the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct BinaryOutput<'a> {
    pub header: OutputHeader,
    pub data: &'a [u8],
}

impl OutputHeader {
    /// The whole frame for `data` under this header.
    pub fn encode_frame(&self, data: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(5 + 160 + data.len());
        frame.push(BINARY_OUTPUT);
        frame.extend_from_slice(&[0; 4]);
        // Plain data with string keys: serializing into a Vec cannot fail.
        serde_json::to_writer(&mut frame, self).unwrap_or_default();
        let header_len = u32::try_from(frame.len() - 5).unwrap_or(u32::MAX);
        frame[1..5].copy_from_slice(&header_len.to_be_bytes());
        frame.extend_from_slice(data);
        frame
    }

    /// The same chunk as a JSON text `output` (for peers older than version 2).
    pub fn to_text(&self, data: &[u8]) -> Output {
        let OutputData { data, encoding } = OutputData::from_bytes(data);
        Output {
            run: self.run.clone(),
            timestamp: self.timestamp,
            stream: self.stream,
            data,
            encoding,
            seq: self.seq,
        }
    }
}

impl<'a> BinaryOutput<'a> {
    /// Parses one binary frame. Frames over [`MAX_FRAME_BYTES`] plus the header are refused.
    pub fn decode(frame: &'a [u8]) -> Result<Self, DecodeError> {
        if frame.len() > MAX_FRAME_BYTES + MAX_HEADER_BYTES + 5 {
            return Err(DecodeError::TooLarge {
                len: frame.len(),
                limit: MAX_FRAME_BYTES + MAX_HEADER_BYTES + 5,
            });
        }
        let (kind, rest) = frame.split_first().ok_or(DecodeError::Binary("an empty frame"))?;
        if *kind != BINARY_OUTPUT {
            return Err(DecodeError::Binary("an unknown kind of binary frame"));
        }
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(DecodeError::Binary("no header"))?;
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        if len > MAX_HEADER_BYTES || len > rest.len() {
            return Err(DecodeError::Binary("a header longer than the frame or the limit"));
        }
        let (header, data) = rest.split_at(len);
        Ok(Self { header: serde_json::from_slice(header)?, data })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header() -> OutputHeader {
        OutputHeader {
            run: RunKey {
                job_name: "backup".into(),
                job_instance: "backup_1763892000".into(),
                machine: "web1".into(),
            },
            timestamp: Timestamp::now(),
            stream: Stream::Stderr,
            seq: Seq(7),
        }
    }

    #[test]
    fn any_bytes_round_trip() {
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let frame = header().encode_frame(&data);
        assert_eq!(frame[0], BINARY_OUTPUT);
        let decoded = BinaryOutput::decode(&frame).unwrap();
        assert_eq!(decoded.data, &data[..]);
        assert_eq!(decoded.header.seq, Seq(7));
        assert_eq!(decoded.header.stream, Stream::Stderr);
        assert_eq!(decoded.header.run.job_instance.as_str(), "backup_1763892000");
        let empty = header().encode_frame(b"");
        assert_eq!(BinaryOutput::decode(&empty).unwrap().data, b"");
    }

    #[test]
    fn the_text_form_carries_the_same_bytes() {
        let h = header();
        let text = h.to_text(b"\xff\x00y\n");
        assert_eq!(text.payload().to_bytes().unwrap(), b"\xff\x00y\n");
        assert_eq!((text.seq, text.stream), (h.seq, h.stream));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let good = header().encode_frame(b"data");
        let mut bad_kind = good.clone();
        bad_kind[0] = 9;
        let mut long_header = good.clone();
        long_header[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut not_json = good.clone();
        not_json[5] = b'x';
        for frame in [&b""[..], &[1][..], &[1, 0, 0][..], &bad_kind, &long_header, &not_json] {
            assert!(BinaryOutput::decode(frame).is_err(), "{frame:?}");
        }
        let huge = vec![BINARY_OUTPUT; MAX_FRAME_BYTES * 2];
        assert!(matches!(BinaryOutput::decode(&huge), Err(DecodeError::TooLarge { .. })));
    }
}
