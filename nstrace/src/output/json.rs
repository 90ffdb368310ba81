//! A small JSON writer for the NDJSON lines: members go straight into a
//! byte buffer in the order written, without building a `serde_json::Value`
//! first. The output is exactly what `serde_json::to_writer` makes of the
//! same `Value`: strings that need escaping go through serde_json's own
//! serializer (the others are copied as they are, which is what it does with
//! them), and integers are formatted by `itoa`, as serde_json formats them.

use std::io;

/// A value that can be written as JSON.
pub trait ToJson {
    /// Appends the JSON text of `self` to `out`.
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()>;
}

/// Implements [`ToJson`] for integers with `itoa` (serde_json's formatter).
macro_rules! via_itoa {
    ($($t:ty),*) => {
        $(impl ToJson for $t {
            fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
                Ok(())
            }
        })*
    };
}

via_itoa!(u64, u32, i64, i32);

/// Whether serde_json would escape nothing in `s`: it escapes `"`, `\\` and
/// the control characters below 0x20, and nothing else. Eight bytes at a
/// time (most strings are plain, and this runs on every string written).
fn needs_no_escape(s: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// High bit set in the bytes of the result for bytes of `x` below `n`
    /// (exact as to whether there is any, for `n` <= 0x80).
    fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
    }
    fn special(x: u64) -> u64 {
        below(x, 0x20) | below(x ^ (ONES * 0x22), 1) | below(x ^ (ONES * 0x5c), 1)
    }
    fn word(bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        u64::from_ne_bytes(word)
    }
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        found |= special(word(chunk));
    }
    let rest = chunks.remainder().len();
    if rest > 0 {
        found |= match bytes.len() {
            // The last eight bytes again, overlapping what was seen.
            n if n >= 8 => special(word(&bytes[n - 8..])),
            // Shorter: the bytes, padded with spaces (which need no escape).
            _ => special(
                bytes
                    .iter()
                    .fold(ONES * 0x20, |w, &b| (w << 8) | u64::from(b)),
            ),
        };
    }
    found == 0
}

impl ToJson for str {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        if needs_no_escape(self) {
            out.reserve(self.len() + 2);
            out.push(b'"');
            out.extend_from_slice(self.as_bytes());
            out.push(b'"');
            Ok(())
        } else {
            serde_json::to_writer(out, self).map_err(io::Error::other)
        }
    }
}

/// A name from nstrace's own tables (event types, syscall and errno names):
/// plain ASCII that needs no escaping, so it is copied without the check,
/// which is most of the cost of writing a short string. A test checks that
/// every syscall and errno name is plain.
#[derive(Debug, Clone, Copy)]
pub struct Plain(pub &'static str);

impl Plain {
    /// Whether `s` may be written as a [`Plain`] name.
    pub fn allowed(s: &str) -> bool {
        needs_no_escape(s)
    }
}

impl ToJson for Plain {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        debug_assert!(Plain::allowed(self.0), "{:?}", self.0);
        out.reserve(self.0.len() + 2);
        out.push(b'"');
        out.extend_from_slice(self.0.as_bytes());
        out.push(b'"');
        Ok(())
    }
}

impl ToJson for bool {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
        Ok(())
    }
}

impl ToJson for String {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        self.as_str().write_json(out)
    }
}

impl ToJson for std::sync::Arc<str> {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        (**self).write_json(out)
    }
}

impl ToJson for std::borrow::Cow<'_, str> {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        (**self).write_json(out)
    }
}

impl<T: ToJson + ?Sized> ToJson for &T {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        (**self).write_json(out)
    }
}

impl<T: ToJson> ToJson for Option<T> {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Some(v) => v.write_json(out),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }
}

impl<T: ToJson> ToJson for [T] {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.push(b'[');
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            v.write_json(out)?;
        }
        out.push(b']');
        Ok(())
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        self.as_slice().write_json(out)
    }
}

/// Writes `"0x…"`, the way the NDJSON shows addresses and flag words.
pub fn write_hex(out: &mut Vec<u8>, v: u64) -> io::Result<()> {
    use std::io::Write;
    write!(out, "\"{v:#x}\"")
}

/// The text before the value of a member with the literal key `$k`:
/// `,"$k":` (the comma is left out for an object's first member). Made at
/// compile time, for [`Obj::key`] and [`Obj::field`].
macro_rules! key {
    ($k:literal) => {
        concat!(",\"", $k, "\":")
    };
}
pub(crate) use key;

/// An object being written: `{` when made, `}` at [`Obj::end`].
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// Starts a member, `prefix` being its `key!`, and returns the buffer
    /// to write its value into.
    // Inlined, `prefix` is a literal of known length, which the copies
    // below then make with a few moves instead of a call to memcpy.
    #[inline(always)]
    pub fn key(&mut self, prefix: &'static str) -> &mut Vec<u8> {
        debug_assert!(prefix.starts_with(",\"") && prefix.ends_with("\":"));
        if self.empty {
            self.empty = false;
            self.out.extend_from_slice(&prefix.as_bytes()[1..]);
        } else {
            self.out.extend_from_slice(prefix.as_bytes());
        }
        self.out
    }

    /// Starts member `name`, a key known only at run time (an argument's
    /// name). It is written as is: it must be a plain name (letters, digits,
    /// `_`), which every name in nstrace's tables is.
    pub fn name_key(&mut self, name: &str) -> &mut Vec<u8> {
        debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        self.out.reserve(name.len() + 4);
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// Writes a member, `prefix` being its `key!`, with value `v`.
    pub fn field<T: ToJson + ?Sized>(&mut self, prefix: &'static str, v: &T) -> io::Result<()> {
        v.write_json(self.key(prefix))
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn written<T: ToJson + ?Sized>(v: &T) -> String {
        let mut out = Vec::new();
        v.write_json(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let all: String = (0u32..0x250).filter_map(char::from_u32).collect();
        for s in [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "é ✓ \u{2028}\u{2029} 𝄞",
            all.as_str(),
        ] {
            assert_eq!(written(s), Value::from(s).to_string(), "{s:?}");
        }
    }

    #[test]
    fn every_byte_to_escape_is_seen_wherever_it_is() {
        for len in 1..=24 {
            for at in 0..len {
                for special in ['"', '\\', '\u{0}', '\n', '\u{1f}', ' ', '\u{7f}', 'é'] {
                    let mut s: String = "abcdefghijklmnopqrstuvwx"[..len].into();
                    s.replace_range(at..=at, special.encode_utf8(&mut [0; 4]));
                    assert_eq!(written(s.as_str()), Value::from(s.as_str()).to_string());
                }
            }
        }
    }

    #[test]
    fn numbers_options_and_arrays_match_serde_json() {
        assert_eq!(written(&u64::MAX), json!(u64::MAX).to_string());
        assert_eq!(written(&i64::MIN), json!(i64::MIN).to_string());
        assert_eq!(written(&-1i32), "-1");
        assert_eq!(written(&i32::MIN), json!(i32::MIN).to_string());
        assert_eq!(written(&u32::MAX), json!(u32::MAX).to_string());
        assert_eq!(written(&0u32), "0");
        assert_eq!(written(&None::<bool>), "null");
        assert_eq!(written(&Some(true)), "true");
        let v = vec!["a".to_string(), "b\"".to_string()];
        assert_eq!(written(&v), json!(v).to_string());
        assert_eq!(written(&Vec::<u32>::new()), "[]");
    }

    #[test]
    fn objects_keep_the_order_written() {
        let mut out = Vec::new();
        let mut o = Obj::new(&mut out);
        o.field(key!("b"), &1u32).unwrap();
        let mut inner = Obj::new(o.key(key!("a")));
        inner.field(key!("x"), "y").unwrap();
        inner.end();
        write_hex(o.key(key!("h")), 255).unwrap();
        let mut named = Obj::new(o.name_key("n_1"));
        named.name_key("m").extend_from_slice(b"null");
        named.name_key("k").extend_from_slice(b"2");
        named.end();
        o.end();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":1,"a":{"x":"y"},"h":"0xff","n_1":{"m":null,"k":2}}"#
        );
        let mut out = Vec::new();
        Obj::new(&mut out).end();
        assert_eq!(out, b"{}");
    }
}
