//! [`Text`]: a string that borrows the bytes of the frame it was read from, so decoding an
//! event's tag, jid, minion id and function allocates nothing. A clone is a fresh copy: text
//! kept beyond its event (a minion id in a set, a jid in a table) never holds a whole read
//! buffer alive.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// UTF-8 text in shared bytes (invariant: always valid UTF-8).
pub struct Text(Bytes);

impl Text {
    /// Text over `bytes` without copying them; invalid UTF-8 is replaced (then copied).
    pub(crate) fn from_utf8_bytes(bytes: Bytes) -> Self {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Self(bytes),
            Err(_) => Self::from(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// The part `sub` of this text (which must lie inside it), without copying.
    pub(crate) fn slice_ref(&self, sub: &str) -> Self {
        Self(self.0.slice_ref(sub.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // The invariant: every constructor checked or was given UTF-8, and the bytes are
        // immutable. A failure here would be a bug in this file; an empty string is a safe answer.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Clone for Text {
    /// A copy detached from the read buffer (see the module doc).
    fn clone(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl Default for Text {
    fn default() -> Self {
        Self(Bytes::new())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    /// As `str` hashes, so that `Borrow<str>` lookups work.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_until_cloned_and_compares_as_str() {
        let frame = Bytes::from_static(b"salt/job/1/ret/m1\n\n");
        let tag = Text::from_utf8_bytes(frame.slice(..17));
        assert_eq!(tag, "salt/job/1/ret/m1");
        assert_eq!(tag.as_ptr(), frame.as_ptr(), "no copy");
        let kept = tag.clone();
        assert_ne!(kept.as_ptr(), frame.as_ptr(), "a clone is detached");
        assert_eq!(kept, tag);
        let bad = Text::from_utf8_bytes(Bytes::from_static(b"a\xffb"));
        assert_eq!(bad, "a\u{fffd}b");
        let set: std::collections::HashSet<Text> = [Text::from("m1")].into();
        assert!(set.contains("m1"));
    }
}
