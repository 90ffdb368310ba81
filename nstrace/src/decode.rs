//! Decoding of kernel records into [`Event`]s: the only place that knows the
//! byte layout of `nstrace-common` records and the meaning of raw arguments.

use std::borrow::Cow;
use std::mem::size_of;

use nstrace_common::{
    CapRecord, ExecRecord, ExitRecord, ForkRecord, Header, KlogRecord, MountWalk, RecordKind,
    SyscallRecord, WalkRecord, WalkedMount, ARGV_LEN, BLOB_LEN, COMM_LEN, KLOG_LEN, PATH_LEN,
    STR_LEN, SYSCALL_NO_ENTRY, WALK_MOUNTS,
};
use thiserror::Error;

use crate::errnos::{errno_name, signal_name};
use crate::event::{
    escape_bytes, ArgValue, CapCheck, Comm, Event, EventKind, ExitStatus, NsRef, Syscall,
};
use crate::flags::{self, enum_name};
use crate::syscalls::{self, ArgKind, BlobKind, RetKind, SyscallDef};

/// A record that cannot be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind requires.
    #[error("record of kind {kind} is {len} bytes, expected at least {want}")]
    Short {
        /// Raw kind.
        kind: u32,
        /// Bytes received.
        len: usize,
        /// Bytes expected.
        want: usize,
    },
    /// Unknown kind value.
    #[error("record of unknown kind {0}")]
    UnknownKind(u32),
}

/// A [`RecordKind::Walk`] record: the mounts of a mount namespace that a
/// traced unshare(2) just made, as the kernel listed them then. Not an
/// event: nstrace builds the namespace's table from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNsWalk {
    /// The caller (thread-group id).
    pub pid: u32,
    /// The new mount namespace.
    pub mnt_ns: u32,
    /// Every mount was listed (the walk got back to the root).
    pub complete: bool,
    /// The mounts, depth first from the root (as the kernel's `next_mnt`).
    pub mounts: Vec<WalkedMount>,
}

/// The walk `bytes` holds if it is a [`RecordKind::Walk`] record;
/// `Ok(None)` for a record of any other kind. The record is cut after its
/// mounts, so it is read field by field rather than as a whole.
pub fn new_ns_walk(bytes: &[u8]) -> Result<Option<NewNsWalk>, DecodeError> {
    let raw_kind: u32 = read_record(bytes, 0)?;
    if RecordKind::from_raw(raw_kind) != Some(RecordKind::Walk) {
        return Ok(None);
    }
    let header: Header = read_record(bytes, raw_kind)?;
    let walk_at = std::mem::offset_of!(WalkRecord, walk);
    let field = |off: usize| -> Result<u32, DecodeError> {
        read_record(bytes.get(walk_at + off..).unwrap_or_default(), raw_kind).map_err(|_| {
            DecodeError::Short {
                kind: raw_kind,
                len: bytes.len(),
                want: WalkRecord::size_for(0),
            }
        })
    };
    let mnt_ns = field(std::mem::offset_of!(MountWalk, mnt_ns))?;
    let count = field(std::mem::offset_of!(MountWalk, count))?.min(WALK_MOUNTS);
    let complete = field(std::mem::offset_of!(MountWalk, complete))? != 0;
    let want = WalkRecord::size_for(count);
    if bytes.len() < want {
        return Err(DecodeError::Short {
            kind: raw_kind,
            len: bytes.len(),
            want,
        });
    }
    let first = walk_at + std::mem::offset_of!(MountWalk, mounts);
    let mounts = bytes[first..want]
        .chunks_exact(size_of::<WalkedMount>())
        .map(|chunk| read_record::<WalkedMount>(chunk, raw_kind))
        .collect::<Result<_, _>>()?;
    Ok(Some(NewNsWalk {
        pid: header.pid,
        mnt_ns,
        complete,
        mounts,
    }))
}

/// Reads a `T` from the start of `bytes` (which may be unaligned).
fn read_record<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    check_len::<T>(bytes, kind)?;
    // SAFETY: the length is checked and every `nstrace-common` record is
    // plain integers and byte arrays, for which any bit pattern is valid.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A `T` at the start of `bytes`, borrowed where `bytes` is aligned for it
/// (records from the ring buffer always are: the kernel places them on
/// 8-byte boundaries) and copied otherwise. A syscall record is about 1.6 KB,
/// and copying it was a seventh of the pipeline's time.
fn view_record<T: Copy>(bytes: &[u8], kind: u32) -> Result<Cow<'_, T>, DecodeError> {
    check_len::<T>(bytes, kind)?;
    let ptr = bytes.as_ptr().cast::<T>();
    if ptr.is_aligned() {
        // SAFETY: the pointer is aligned for `T`, the length is checked, the
        // borrow lives as long as `bytes`, and every bit pattern is a valid
        // `T` (plain integers and byte arrays, as in `read_record`).
        Ok(Cow::Borrowed(unsafe { &*ptr }))
    } else {
        read_record(bytes, kind).map(Cow::Owned)
    }
}

fn check_len<T>(bytes: &[u8], kind: u32) -> Result<(), DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind,
            len: bytes.len(),
            want: size_of::<T>(),
        });
    }
    Ok(())
}

/// Turns records into events, numbering them and reporting losses in-band.
#[derive(Debug, Default)]
pub struct Decoder {
    seq: u64,
    /// Records the kernel reported as lost so far.
    pub lost: u64,
    comms: CommCache,
}

/// Command names already decoded, by their raw bytes: every event of a
/// process carries its name, and making it anew for each (checking the
/// UTF-8, escaping, allocating, and freeing it after) was about a tenth of
/// the pipeline's work. Direct-mapped: a name whose slot another took is
/// decoded again, and memory stays fixed.
#[derive(Debug)]
struct CommCache {
    slots: Vec<Option<([u8; COMM_LEN], Comm)>>,
}

/// Slots of [`CommCache`] (a power of two).
const COMM_SLOTS: usize = 64;

impl Default for CommCache {
    fn default() -> Self {
        Self {
            slots: vec![None; COMM_SLOTS],
        }
    }
}

impl CommCache {
    fn get(&mut self, raw: &[u8; COMM_LEN]) -> Comm {
        let mut words = [0u64; 2];
        for (w, chunk) in words.iter_mut().zip(raw.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        let mixed = (words[0] ^ words[1].rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = &mut self.slots[(mixed >> 58) as usize % COMM_SLOTS];
        match slot {
            Some((key, comm)) if key == raw => Comm::clone(comm),
            _ => {
                let comm: Comm = c_string(raw).into();
                *slot = Some((*raw, Comm::clone(&comm)));
                comm
            }
        }
    }
}

impl Decoder {
    /// A decoder whose first event gets `seq` 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next sequence number for a line that is not an event.
    pub fn take_seq(&mut self) -> u64 {
        self.next_seq()
    }

    /// The sequence number of the last event made (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Decodes one record; a preceding loss becomes a [`EventKind::Lost`] event first.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
        let raw_kind: u32 = read_record(bytes, 0)?;
        let kind = RecordKind::from_raw(raw_kind).ok_or(DecodeError::UnknownKind(raw_kind))?;
        let header: Header = read_record(bytes, raw_kind)?;
        if header.lost_before > 0 {
            out.push(self.lost_event(u64::from(header.lost_before), &header));
        }
        let event = match kind {
            RecordKind::Syscall => {
                let rec = view_record::<SyscallRecord>(bytes, raw_kind)?;
                self.event(&rec.header, EventKind::Syscall(decode_syscall(&rec)))
            }
            RecordKind::Fork => {
                let rec: ForkRecord = read_record(bytes, raw_kind)?;
                // The record is the parent's; the event is about the child.
                Event {
                    seq: self.next_seq(),
                    ts_ns: rec.header.ts_ns,
                    pid: rec.child_pid,
                    tid: rec.child_tid,
                    comm: self.comms.get(&rec.header.comm),
                    kind: EventKind::Fork {
                        ppid: rec.header.pid,
                        ns: rec.child_ns,
                    },
                }
            }
            RecordKind::Exec => {
                let rec = view_record::<ExecRecord>(bytes, raw_kind)?;
                let (argv, argv_truncated) = split_argv(&rec);
                let filename = match rec.filename_len {
                    n if n > 0 => c_string(&rec.filename[..(n as usize).min(PATH_LEN)]),
                    _ => String::new(),
                };
                self.event(
                    &rec.header,
                    EventKind::Exec {
                        ppid: rec.ppid,
                        filename,
                        argv,
                        argv_truncated,
                        ns: rec.ns,
                        adopted: rec.adopted != 0,
                    },
                )
            }
            RecordKind::Cap => {
                let rec: CapRecord = read_record(bytes, raw_kind)?;
                self.event(
                    &rec.header,
                    EventKind::Cap(CapCheck {
                        cap: rec.cap,
                        allowed: rec.ret == 0,
                        target: rec.target,
                        cred_ns: rec.cred_ns,
                        euid: rec.euid,
                    }),
                )
            }
            RecordKind::Klog => {
                let rec = view_record::<KlogRecord>(bytes, raw_kind)?;
                let n = usize::try_from(rec.len).unwrap_or(0).min(KLOG_LEN);
                let text = c_string(&rec.text[..n]).trim_end().to_string();
                self.event(&rec.header, EventKind::Klog { text })
            }
            // Not an event (its header carries no loss): see `new_ns_walk`.
            RecordKind::Walk => return Ok(()),
            RecordKind::Exit => {
                let rec: ExitRecord = read_record(bytes, raw_kind)?;
                self.event(
                    &rec.header,
                    EventKind::Exit {
                        ppid: rec.ppid,
                        status: ExitStatus::from_wait_status(rec.exit_code),
                    },
                )
            }
        };
        out.push(event);
        Ok(())
    }

    /// An event nstrace itself observed (not from a kernel record), numbered
    /// in the same sequence.
    pub fn synthetic(&mut self, ts_ns: u64, pid: u32, comm: Comm, kind: EventKind) -> Event {
        Event {
            seq: self.next_seq(),
            ts_ns,
            pid,
            tid: pid,
            comm,
            kind,
        }
    }

    /// A loss the kernel reported outside any record (at the end of a trace).
    pub fn trailing_loss(&mut self, count: u64, ts_ns: u64) -> Event {
        self.lost += count;
        Event {
            seq: self.next_seq(),
            ts_ns,
            pid: 0,
            tid: 0,
            comm: Comm::from(""),
            kind: EventKind::Lost { count },
        }
    }

    fn lost_event(&mut self, count: u64, header: &Header) -> Event {
        self.lost += count;
        Event {
            seq: self.next_seq(),
            ts_ns: header.ts_ns,
            pid: 0,
            tid: 0,
            comm: Comm::from(""),
            kind: EventKind::Lost { count },
        }
    }

    fn event(&mut self, header: &Header, kind: EventKind) -> Event {
        Event {
            seq: self.next_seq(),
            ts_ns: header.ts_ns,
            pid: header.pid,
            tid: header.tid,
            comm: self.comms.get(&header.comm),
            kind,
        }
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    escape_bytes(&bytes[..end])
}

fn split_argv(rec: &ExecRecord) -> (Vec<String>, bool) {
    if rec.argv_len <= 0 {
        return (Vec::new(), rec.argv_total > 0);
    }
    let len = (rec.argv_len as usize).min(ARGV_LEN);
    let block = &rec.argv[..len];
    let truncated = rec.argv_total > len as u64;
    let mut args: Vec<String> = block
        .split(|&b| b == 0)
        .map(escape_bytes)
        .collect::<Vec<_>>();
    // A complete block ends with a NUL, which leaves one empty piece.
    if !truncated && args.last().is_some_and(|s| s.is_empty()) {
        args.pop();
    }
    (args, truncated)
}

/// Decodes a syscall record with the table in [`syscalls`].
fn decode_syscall(rec: &SyscallRecord) -> Syscall {
    let def = syscalls::by_nr(rec.nr);
    let no_entry = rec.flags & SYSCALL_NO_ENTRY != 0;
    let args = match def {
        Some(def) if !no_entry => decode_args(def, rec),
        _ => Vec::new(),
    };
    let ns_before = match def {
        Some(def) if def.changes_ns() && !no_entry => Some(rec.ns_before),
        _ => None,
    };
    Syscall {
        name: def.map_or_else(
            || Cow::Owned(format!("syscall_{}", rec.nr)),
            |d| Cow::Borrowed(d.name),
        ),
        nr: rec.nr,
        args,
        ret: rec.ret,
        ns: rec.ns_after,
        ns_before,
        duration_ns: rec.exit_ts_ns.saturating_sub(rec.header.ts_ns),
        no_entry,
        cap_repeats: rec.cap_repeats,
        ret_kind: def.map_or(RetKind::Status, |d| d.ret),
        state: rec.state,
        fd_ns: (rec.fd_magic == nstrace_common::NSFS_MAGIC && !no_entry)
            .then(|| u32::try_from(rec.fd_ino).ok())
            .flatten()
            .map(|inum| {
                let kind = crate::event::ns_kind(rec.fd_ns_type);
                NsRef {
                    inum,
                    kind,
                    level: matches!(kind, Some("pid" | "user")).then_some(rec.fd_ns_level),
                }
            }),
        targets: Vec::new(),
    }
}

fn decode_args(def: &SyscallDef, rec: &SyscallRecord) -> Vec<(&'static str, ArgValue)> {
    let mut out = Vec::with_capacity(def.args.len());
    for (i, &(name, kind)) in def.args.iter().enumerate() {
        let raw = rec.args[i];
        let value = match kind {
            ArgKind::Str => string_arg(def, rec, i),
            ArgKind::FsconfigValue => {
                let cmd = rec.args[1];
                if flags::FSCONFIG_STRING_VALUE.contains(&cmd) {
                    string_arg(def, rec, i)
                } else if cmd == flags::FSCONFIG_SET_BINARY && raw != 0 {
                    ArgValue::Bytes(rec.args[4])
                } else if raw == 0 {
                    ArgValue::Null
                } else {
                    ArgValue::Ptr(raw)
                }
            }
            ArgKind::Fd | ArgKind::NsFd => ArgValue::Int(i64::from(raw as i32)),
            ArgKind::DirFd => match raw as i32 {
                -100 => ArgValue::Name("AT_FDCWD".into()),
                fd => ArgValue::Int(i64::from(fd)),
            },
            ArgKind::Flags(set) => ArgValue::Flags(set.decode(raw)),
            ArgKind::MountFlags => {
                ArgValue::Flags(flags::MOUNT.decode(flags::strip_mount_magic(raw)))
            }
            ArgKind::CloneFlags => {
                let sig = (raw & flags::CLONE_EXIT_SIGNAL_MASK) as i32;
                let mut names = flags::CLONE.decode(raw & !flags::CLONE_EXIT_SIGNAL_MASK);
                if sig != 0 {
                    names.push(signal_name(sig));
                }
                ArgValue::Flags(names)
            }
            ArgKind::NsType => ArgValue::Flags(flags::CLONE.decode(raw)),
            ArgKind::FsconfigCmd => match enum_name(flags::FSCONFIG_CMDS, raw) {
                Some(n) => ArgValue::Name(n.into()),
                None => ArgValue::Int(raw as i64),
            },
            ArgKind::Int => ArgValue::Int(raw as i64),
            ArgKind::Size => ArgValue::Int(raw as i64),
            ArgKind::Ptr => ArgValue::Ptr(raw),
            ArgKind::Blob => blob_arg(def, rec, raw),
        };
        out.push((name, value));
    }
    out
}

fn string_arg(def: &SyscallDef, rec: &SyscallRecord, index: usize) -> ArgValue {
    let addr = rec.args[index];
    if addr == 0 {
        return ArgValue::Null;
    }
    let Some(slot) = def.str_slot(index) else {
        return ArgValue::Ptr(addr);
    };
    match rec.str_len[slot] {
        // 0 is an empty string too: some kernels' strncpy_from_user_nofault
        // count no NUL for it (6.1 and 6.12 guests did; 6.18 says 1).
        n if n >= 0 => {
            let n = (n as usize).min(STR_LEN);
            let truncated = n == STR_LEN && rec.strs[slot][STR_LEN - 1] == 0;
            ArgValue::Str {
                text: c_string(&rec.strs[slot][..n]),
                truncated,
            }
        }
        n => ArgValue::Unreadable {
            addr,
            error: errno_name(-n).unwrap_or("EFAULT").to_string(),
        },
    }
}

fn blob_arg(def: &SyscallDef, rec: &SyscallRecord, addr: u64) -> ArgValue {
    if addr == 0 {
        return ArgValue::Null;
    }
    let len = rec.blob_len;
    if len <= 0 {
        return ArgValue::Unreadable {
            addr,
            error: errno_name(-len).unwrap_or("EFAULT").to_string(),
        };
    }
    let bytes = &rec.blob[..(len as usize).min(BLOB_LEN)];
    let word = |i: usize| -> Option<u64> {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
    };
    let mut fields = Vec::new();
    match def.blob {
        Some(BlobKind::CloneArgs) => {
            // struct clone_args: flags, pidfd, child_tid, parent_tid,
            // exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup.
            if let Some(f) = word(0) {
                fields.push(("flags", ArgValue::Flags(flags::CLONE.decode(f))));
                if let Some(sig) = word(4) {
                    let v = if sig == 0 {
                        ArgValue::Int(0)
                    } else {
                        ArgValue::Name(signal_name(sig as i32))
                    };
                    fields.push(("exit_signal", v));
                }
                if f & 0x2_0000_0000 != 0 {
                    if let Some(cg) = word(10) {
                        fields.push(("cgroup", ArgValue::Int(cg as i64)));
                    }
                }
            }
        }
        Some(BlobKind::MountAttr) => {
            // struct mount_attr: attr_set, attr_clr, propagation, userns_fd.
            if let (Some(set), Some(clr)) = (word(0), word(1)) {
                fields.push(("attr_set", ArgValue::Flags(flags::MOUNT_ATTR.decode(set))));
                fields.push(("attr_clr", ArgValue::Flags(flags::MOUNT_ATTR.decode(clr))));
            }
            if let Some(p) = word(2) {
                fields.push(("propagation", ArgValue::Flags(flags::PROPAGATION.decode(p))));
            }
            if let Some(fd) = word(3) {
                fields.push(("userns_fd", ArgValue::Int(fd as i64)));
            }
        }
        None => return ArgValue::Ptr(addr),
    }
    ArgValue::Struct(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nstrace_common::NsIds;

    fn header(kind: RecordKind) -> Header {
        let mut comm = [0u8; COMM_LEN];
        comm[..5].copy_from_slice(b"mount");
        Header {
            kind: kind as u32,
            lost_before: 0,
            ts_ns: 1_000,
            pid: 42,
            tid: 43,
            comm,
        }
    }

    fn as_bytes<T>(v: &T) -> &[u8] {
        // SAFETY: test-only view of a plain-data record.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    fn mount_record(ret: i64) -> SyscallRecord {
        let mut rec = SyscallRecord {
            header: header(RecordKind::Syscall),
            exit_ts_ns: 1_500,
            nr: syscalls::by_name("mount").unwrap().nr,
            ret,
            args: [0x1000, 0x2000, 0x3000, 0xc0ed_0000 | 2 | 4 | 8, 0, 0],
            ns_before: NsIds::default(),
            ns_after: NsIds { inum: [7; 10] },
            state: nstrace_common::TaskState::default(),
            ..SyscallRecord::zeroed()
        };
        for (slot, s) in [b"proc".as_slice(), b"/proc", b"proc"].iter().enumerate() {
            rec.strs[slot][..s.len()].copy_from_slice(s);
            rec.str_len[slot] = s.len() as i32 + 1;
        }
        rec
    }

    #[test]
    fn failed_mount_decodes_with_names_and_errno() {
        let rec = mount_record(-1);
        let mut out = Vec::new();
        Decoder::new().decode(as_bytes(&rec), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let ev = &out[0];
        assert_eq!((ev.seq, ev.pid, ev.tid, &*ev.comm), (1, 42, 43, "mount"));
        let EventKind::Syscall(sc) = &ev.kind else {
            panic!("not a syscall: {ev:?}")
        };
        assert_eq!(sc.name, "mount");
        assert_eq!(sc.errno(), Some(1));
        assert_eq!(sc.duration_ns, 500);
        assert_eq!(sc.ns.inum[0], 7);
        assert_eq!(sc.ns_before, None, "mount does not change namespaces");
        let text = |s: &str| ArgValue::Str {
            text: s.into(),
            truncated: false,
        };
        assert_eq!(
            sc.args,
            vec![
                ("source", text("proc")),
                ("target", text("/proc")),
                ("fstype", text("proc")),
                (
                    "flags",
                    ArgValue::Flags(vec![
                        "MS_NOSUID".into(),
                        "MS_NODEV".into(),
                        "MS_NOEXEC".into()
                    ])
                ),
                ("data", ArgValue::Null),
            ]
        );
    }

    #[test]
    fn unaligned_records_decode_as_aligned_ones() {
        let rec = mount_record(-1);
        let mut aligned = Vec::new();
        Decoder::new().decode(as_bytes(&rec), &mut aligned).unwrap();
        // The same bytes one past an 8-byte boundary: copied, not borrowed.
        let mut shifted = vec![0u64; size_of::<SyscallRecord>() / 8 + 2];
        let base = shifted.as_mut_ptr().cast::<u8>();
        // SAFETY: the u64 buffer has room for the record plus one byte.
        let unaligned =
            unsafe { std::slice::from_raw_parts_mut(base.add(1), size_of::<SyscallRecord>()) };
        unaligned.copy_from_slice(as_bytes(&rec));
        assert!(!unaligned.as_ptr().cast::<SyscallRecord>().is_aligned());
        let mut copied = Vec::new();
        Decoder::new().decode(unaligned, &mut copied).unwrap();
        assert_eq!(format!("{aligned:?}"), format!("{copied:?}"));
    }

    #[test]
    fn lost_records_come_first_in_band() {
        let mut rec = mount_record(0);
        rec.header.lost_before = 3;
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        dec.decode(as_bytes(&rec), &mut out).unwrap();
        assert_eq!(out[0].kind, EventKind::Lost { count: 3 });
        assert_eq!((out[0].seq, out[1].seq), (1, 2));
        assert_eq!(dec.lost, 3);
    }

    #[test]
    fn unreadable_and_truncated_strings() {
        let mut rec = mount_record(0);
        rec.str_len[0] = -14;
        rec.strs[1] = [b'a'; STR_LEN];
        rec.strs[1][STR_LEN - 1] = 0;
        rec.str_len[1] = STR_LEN as i32;
        let sc = decode_syscall(&rec);
        assert_eq!(
            sc.args[0].1,
            ArgValue::Unreadable {
                addr: 0x1000,
                error: "EFAULT".into()
            }
        );
        assert!(
            matches!(&sc.args[1].1, ArgValue::Str { truncated: true, text } if text.len() == 255)
        );
    }

    #[test]
    fn clone3_struct_and_ns_before() {
        let def = syscalls::by_name("clone3").unwrap();
        let mut rec = mount_record(1234);
        rec.nr = def.nr;
        rec.args = [0x5000, 88, 0, 0, 0, 0];
        rec.blob_len = 88;
        let flags: u64 = 0x1000_0000 | 0x0002_0000;
        rec.blob[..8].copy_from_slice(&flags.to_ne_bytes());
        rec.blob[32..40].copy_from_slice(&17u64.to_ne_bytes());
        rec.ns_before = NsIds { inum: [5; 10] };
        let sc = decode_syscall(&rec);
        assert_eq!(sc.ns_before, Some(NsIds { inum: [5; 10] }));
        assert_eq!(
            sc.args[0].1,
            ArgValue::Struct(vec![
                (
                    "flags",
                    ArgValue::Flags(vec!["CLONE_NEWNS".into(), "CLONE_NEWUSER".into()])
                ),
                ("exit_signal", ArgValue::Name("SIGCHLD".into())),
            ])
        );
    }

    #[test]
    fn legacy_clone_splits_the_exit_signal() {
        let mut rec = mount_record(99);
        rec.nr = syscalls::by_name("clone").unwrap().nr;
        rec.args = [0x2000_0000 | 17, 0, 0, 0, 0, 0];
        let sc = decode_syscall(&rec);
        assert_eq!(
            sc.args[0].1,
            ArgValue::Flags(vec!["CLONE_NEWPID".into(), "SIGCHLD".into()])
        );
    }

    #[test]
    fn no_entry_has_no_args() {
        let mut rec = mount_record(-1);
        rec.flags = SYSCALL_NO_ENTRY;
        let sc = decode_syscall(&rec);
        assert!(sc.no_entry);
        assert!(sc.args.is_empty());
    }

    #[test]
    fn repeated_capability_checks_are_carried() {
        let mut rec = mount_record(-1);
        rec.cap_repeats = 13;
        rec.cap_last_cred = 0xffff_8880_0000_0000;
        assert_eq!(decode_syscall(&rec).cap_repeats, 13);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let mut out = Vec::new();
        let mut dec = Decoder::new();
        assert!(matches!(
            dec.decode(&[1, 0, 0, 0], &mut out),
            Err(DecodeError::Short { .. })
        ));
        let rec = mount_record(0);
        let mut bytes = as_bytes(&rec).to_vec();
        bytes[0] = 77;
        assert_eq!(
            dec.decode(&bytes, &mut out),
            Err(DecodeError::UnknownKind(77))
        );
    }

    #[test]
    fn argv_is_split_and_truncation_flagged() {
        let mut rec = ExecRecord {
            header: header(RecordKind::Exec),
            ppid: 1,
            old_tid: 42,
            filename_len: 0,
            argv_len: 0,
            argv_total: 0,
            adopted: 0,
            _pad: 0,
            ns: NsIds::default(),
            filename: [0; PATH_LEN],
            argv: [0; ARGV_LEN],
        };
        let block = b"unshare\0-Ur\0mount\0";
        rec.argv[..block.len()].copy_from_slice(block);
        rec.argv_len = block.len() as i32;
        rec.argv_total = block.len() as u64;
        assert_eq!(
            split_argv(&rec),
            (vec!["unshare".into(), "-Ur".into(), "mount".into()], false)
        );
        rec.argv_total = 5000;
        let (args, truncated) = split_argv(&rec);
        assert!(truncated);
        assert_eq!(args.len(), 4);
    }

    #[test]
    fn command_names_are_shared_and_never_mixed_up() {
        let mut cache = CommCache::default();
        let raw = |name: &[u8]| {
            let mut c = [0u8; COMM_LEN];
            c[..name.len()].copy_from_slice(name);
            c
        };
        let first = cache.get(&raw(b"mount"));
        assert_eq!(&*first, "mount");
        assert!(Comm::ptr_eq(&first, &cache.get(&raw(b"mount"))));
        // More names than slots: each still decodes to its own text, those
        // that share a slot included.
        let names: Vec<String> = (0..4 * COMM_SLOTS).map(|i| format!("cmd-{i}")).collect();
        for _ in 0..2 {
            for n in &names {
                assert_eq!(&*cache.get(&raw(n.as_bytes())), n.as_str());
            }
        }
        // Invalid UTF-8 is escaped as when decoded without the cache.
        assert_eq!(&*cache.get(&raw(b"a\xffb")), "a\\xffb");
        assert_eq!(&*cache.get(&raw(b"a\xffb")), "a\\xffb");
    }
}
