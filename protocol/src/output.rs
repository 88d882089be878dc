//! Output bytes on the wire. JSON strings hold text, and a job's output is bytes: valid UTF-8
//! travels as text in `data` (what the original wrapper and server expect), anything else as
//! base64 with `"encoding": "base64"`, so no byte is ever lost to a lossy decode.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Which pipe a chunk came from. The original wrapper merged both into `stdout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    #[default]
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// How `data` is encoded. Absent means text. Since version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Base64,
}

/// The payload of one `output` message, as sent: the text and its encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputData {
    pub data: String,
    pub encoding: Option<Encoding>,
}

impl OutputData {
    /// Encodes raw bytes: as text when they are valid UTF-8, else as base64. Senders cut
    /// chunks on character boundaries (see [`utf8_boundary`]) so text stays text.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self { data: text.to_owned(), encoding: None },
            Err(_) => Self { data: STANDARD.encode(bytes), encoding: Some(Encoding::Base64) },
        }
    }

    /// The raw bytes this payload carries; `None` if `data` is not valid base64.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        match self.encoding {
            None => Some(self.data.as_bytes().to_vec()),
            Some(Encoding::Base64) => STANDARD.decode(&self.data).ok(),
        }
    }
}

/// The largest `n <= bytes.len()` such that `bytes[..n]` does not end inside a UTF-8
/// character, so a chunk cut there and the rest both stay valid text when the whole is. If
/// the tail is not the start of a valid character, the whole length is returned.
pub fn utf8_boundary(bytes: &[u8]) -> usize {
    // A character is at most 4 bytes: only the last 3 can belong to an unfinished one.
    let len = bytes.len();
    for back in 1..=3.min(len) {
        let b = bytes[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let need = match b {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return len,
        };
        return if need > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_never_splits_a_character() {
        let text = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        for cut in 0..=text.len() {
            let n = utf8_boundary(&text[..cut]);
            assert!(std::str::from_utf8(&text[..n]).is_ok(), "cut {cut} -> {n}");
            assert!(std::str::from_utf8(&text[n..]).is_ok(), "cut {cut} -> {n}");
            assert!(cut - n < 4);
        }
        assert_eq!(utf8_boundary(b"\xff\xfe"), 2);
    }

    #[test]
    fn bytes_survive_either_encoding() {
        for bytes in [&b"plain\r\nline"[..], b"\xff\x00binary\xc3", b""] {
            assert_eq!(OutputData::from_bytes(bytes).to_bytes().as_deref(), Some(bytes));
        }
        assert_eq!(OutputData::from_bytes(b"\xff").encoding, Some(Encoding::Base64));
        assert_eq!(OutputData::from_bytes("é".as_bytes()).encoding, None);
    }
}
