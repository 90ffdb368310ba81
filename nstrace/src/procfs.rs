//! Reading `/proc` files in as few syscalls as possible.
//!
//! `std::fs::read_to_string` asks for the file's size first (a `statx`) and,
//! since `/proc` reports 0, starts with a small read and grows its buffer by
//! doubling: about eight reads for a 2 KiB mount table. nstrace reads a
//! table for every new mount namespace, so here it is one `openat`, one
//! read that usually takes the whole file, and the read that sees its end,
//! into a buffer kept for the next file (a fresh 16 KiB buffer each time
//! costs the allocator more than the parsing). The buffer stays at the size
//! of the largest file read.

use std::io::{self, Read};

/// Big enough for a typical mount table in one read.
const FIRST_READ: usize = 16 * 1024;

/// The whole of `file` from its current position, appended to `buf`.
fn read_all(file: &mut std::fs::File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(FIRST_READ);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        match file.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(());
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

thread_local! {
    /// The buffer [`with_text`] reads into, kept between calls.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` of the text of the file at `path` (UTF-8, as `/proc` writes it for
/// the files nstrace reads; anything else is an error).
pub fn with_text<T>(path: &str, f: impl FnOnce(&str) -> T) -> io::Result<T> {
    with_file_text(&mut std::fs::File::open(path)?, f)
}

/// [`with_text`] of a file already open, from its current position.
pub fn with_file_text<T>(file: &mut std::fs::File, f: impl FnOnce(&str) -> T) -> io::Result<T> {
    BUFFER.with(|cell| {
        // A nested call (none today) gets a buffer of its own.
        let mut own = Vec::new();
        let mut borrowed = cell.try_borrow_mut();
        let buf = match borrowed.as_mut() {
            Ok(b) => &mut **b,
            Err(_) => &mut own,
        };
        buf.clear();
        read_all(file, buf)?;
        let text =
            std::str::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(f(text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(path: &str) -> io::Result<String> {
        with_text(path, str::to_owned)
    }

    #[test]
    fn reads_a_proc_file_whole() {
        let ours = read_text("/proc/self/mountinfo").unwrap();
        let std = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!ours.is_empty());
        assert_eq!(ours, std);
    }

    #[test]
    fn reads_files_longer_than_the_first_read() {
        let dir = std::env::temp_dir().join(format!("nstrace-procfs-{}", std::process::id()));
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        assert!(text.len() > 3 * FIRST_READ);
        std::fs::write(&dir, &text).unwrap();
        let got = read_text(dir.to_str().unwrap());
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(got.unwrap(), text);
    }

    #[test]
    fn the_buffer_kept_between_files_holds_only_the_last() {
        let dir = std::env::temp_dir();
        let long = dir.join(format!("nstrace-procfs-long-{}", std::process::id()));
        let short = dir.join(format!("nstrace-procfs-short-{}", std::process::id()));
        std::fs::write(&long, "a".repeat(5000)).unwrap();
        std::fs::write(&short, "bb").unwrap();
        let a = with_text(long.to_str().unwrap(), str::len);
        let b = read_text(short.to_str().unwrap());
        std::fs::remove_file(&long).unwrap();
        std::fs::remove_file(&short).unwrap();
        assert_eq!(a.unwrap(), 5000);
        assert_eq!(b.unwrap(), "bb");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_an_error() {
        let path = std::env::temp_dir().join(format!("nstrace-procfs-bin-{}", std::process::id()));
        std::fs::write(&path, b"\xff\xfe").unwrap();
        let got = read_text(path.to_str().unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(read_text("/proc/0/mountinfo").is_err());
    }
}
