//! A small JSON writer for the NDJSON lines: members go straight into a
//! byte buffer in the order written, without building a `serde_json::Value`
//! first. Strings and integers are written by serde_json's own serializer,
//! so escaping and number formats are exactly what `serde_json::to_writer`
//! makes of a `Value`.

use std::io;

/// A value that can be written as JSON.
pub trait ToJson {
    /// Appends the JSON text of `self` to `out`.
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()>;
}

/// Implements [`ToJson`] with serde_json's serializer (its escaping of
/// strings, its formatting of integers).
macro_rules! via_serde_json {
    ($($t:ty),*) => {
        $(impl ToJson for $t {
            fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
                serde_json::to_writer(out, self).map_err(io::Error::other)
            }
        })*
    };
}

via_serde_json!(u64, u32, i64, i32, str);

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

    /// Starts member `key` and returns the buffer to write its value into.
    /// `key` is written as is: it must be a plain name (letters, digits,
    /// `_`), which every key nstrace writes is.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// Writes member `key` with value `v`.
    pub fn field<T: ToJson + ?Sized>(&mut self, key: &str, v: &T) -> io::Result<()> {
        v.write_json(self.key(key))
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
    fn numbers_options_and_arrays_match_serde_json() {
        assert_eq!(written(&u64::MAX), json!(u64::MAX).to_string());
        assert_eq!(written(&i64::MIN), json!(i64::MIN).to_string());
        assert_eq!(written(&-1i32), "-1");
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
        o.field("b", &1u32).unwrap();
        let mut inner = Obj::new(o.key("a"));
        inner.field("x", "y").unwrap();
        inner.end();
        write_hex(o.key("h"), 255).unwrap();
        o.end();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":1,"a":{"x":"y"},"h":"0xff"}"#
        );
        let mut out = Vec::new();
        Obj::new(&mut out).end();
        assert_eq!(out, b"{}");
    }
}
