//! Decoded events: what the rest of nstrace works with. Built from kernel
//! records by [`crate::decode`], consumed by the model and the outputs.

use std::borrow::Cow;
use std::sync::Arc;

use nstrace_common::{ns, NsIds, TaskState, UserNsInfo};

/// Names of the namespace slots, in [`NsIds`] order, as used in output.
pub const NS_NAMES: [&str; ns::COUNT] = [
    "user",
    "mnt",
    "pid",
    "net",
    "uts",
    "ipc",
    "cgroup",
    "time",
    "pid_for_children",
    "time_for_children",
];

/// A command name, shared by the events of a process (see the decoder's
/// cache of them).
pub type Comm = Arc<str>;

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in this trace, from 1.
    pub seq: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name.
    pub comm: Comm,
    /// What happened.
    pub kind: EventKind,
}

/// What an event is.
// Most events are syscalls: boxing the large variant would allocate on the
// common path without saving anything (events pass through one at a time).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A traced syscall returned.
    Syscall(Syscall),
    /// A new process `pid` was forked by `ppid`.
    Fork {
        /// Parent's thread-group id.
        ppid: u32,
        /// The child's namespaces at birth.
        ns: NsIds,
    },
    /// `pid` executed a program.
    Exec {
        /// Parent's thread-group id.
        ppid: u32,
        /// The executed file.
        filename: String,
        /// Arguments.
        argv: Vec<String>,
        /// Whether `argv` was cut short.
        argv_truncated: bool,
        /// Namespaces.
        ns: NsIds,
        /// The process became traced with this exec: a container runtime
        /// started (by a daemon) while a traced container-engine client ran.
        adopted: bool,
    },
    /// Process `pid` ended.
    Exit {
        /// Parent's thread-group id.
        ppid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The kernel could not deliver `count` records here.
    Lost {
        /// Records dropped.
        count: u64,
    },
    /// A capability check the kernel made inside a traced call of `tid`.
    Cap(CapCheck),
    /// A kernel log line printed inside a traced call of `tid`.
    Klog {
        /// The line, without its trailing newline.
        text: String,
    },
    /// What nstrace learned of a container outside the kernel's records (its
    /// init pid, from the runtime's state file).
    Container(crate::containers::Container),
    /// The mount table of a mount namespace just created by a call, read
    /// from `/proc/PID/mountinfo` by nstrace (not a kernel record).
    Mounts {
        /// The mount namespace.
        mnt_ns: u32,
        /// The user namespace that owns it.
        user_ns: u32,
        /// The copy crossed into a less privileged user namespace: every
        /// mount but the root is locked (MNT_LOCKED), with its flags.
        locked: bool,
        /// The event that created the namespace.
        created_by: u64,
        /// Where the table came from.
        read_from: crate::mounts::ReadFrom,
        /// The mounts. Shared with the model (and, for a copy read through
        /// nstrace's own namespace, with its table): a table is built once.
        mounts: std::sync::Arc<[crate::mounts::Mount]>,
    },
}

/// A capability check (`cap_capable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapCheck {
    /// Capability number.
    pub cap: i32,
    /// Whether it was granted.
    pub allowed: bool,
    /// The user namespace the capability was needed in.
    pub target: UserNsInfo,
    /// The user namespace of the checked credentials.
    pub cred_ns: UserNsInfo,
    /// Effective uid of the checked credentials.
    pub euid: u32,
}

/// How a process ended, from its wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// Signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Decodes a wait(2) status word.
    pub fn from_wait_status(status: u32) -> Self {
        let sig = (status & 0x7f) as i32;
        if sig == 0 {
            Self::Exited(((status >> 8) & 0xff) as i32)
        } else {
            Self::Signaled {
                signal: sig,
                core_dumped: status & 0x80 != 0,
            }
        }
    }

    /// The status a shell would report: the exit code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled { signal, .. } => 128 + signal,
        }
    }
}

/// A traced syscall and its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Syscall {
    /// Syscall name (`mount`), or `syscall_N` for an unknown number (the
    /// table's own `&'static str` for a known one: no copy per event).
    pub name: Cow<'static, str>,
    /// Syscall number.
    pub nr: u32,
    /// Decoded arguments, in order. Empty if the entry was not seen.
    pub args: Vec<(&'static str, ArgValue)>,
    /// Return value as the kernel gave it (-errno on failure).
    pub ret: i64,
    /// Namespaces after the call.
    pub ns: NsIds,
    /// Namespaces before the call, for calls that create or enter namespaces.
    pub ns_before: Option<NsIds>,
    /// Time spent in the call.
    pub duration_ns: u64,
    /// The exit was seen without its entry (seccomp refusal, or entry not stored).
    pub no_entry: bool,
    /// Capability checks that repeated the one before them in this call,
    /// counted by the kernel side instead of reported one by one.
    pub cap_repeats: u32,
    /// Whether `ret` is a new fd, a child pid or a status.
    pub ret_kind: crate::syscalls::RetKind,
    /// The caller's state at entry (at exit if the entry was not seen).
    pub state: TaskState,
    /// For setns: the namespace the fd refers to, when it is a namespace
    /// file (`/proc/PID/ns/*`); `None` for a pidfd or an unknown fd.
    pub fd_ns: Option<NsRef>,
    /// For a failed mount-family call: the mounts its path arguments
    /// resolve to, read through the kernel right after the call.
    pub targets: Vec<TargetMount>,
}

/// A path argument of a failed call, resolved to the mount it names as the
/// caller sees it, with the kernel's own view of that mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetMount {
    /// Which argument (`target`, `new_root`, `put_old`; `root` for the
    /// caller's root directory, which pivot_root also checks).
    pub arg: String,
    /// The path as the call gave it.
    pub path: String,
    /// Mount id (as in mountinfo).
    pub mnt_id: u32,
    /// Its parent's mount id.
    pub parent_id: u32,
    /// The mount namespace the mount belongs to (0: none, a detached mount).
    pub mnt_ns: u32,
    /// The path is the root of that mount (a mount point).
    pub mount_root: bool,
    /// The mount is shared.
    pub shared: bool,
    /// Its parent is shared.
    pub parent_shared: bool,
    /// `vfsmount.mnt_flags`.
    pub flags: u32,
    /// The process whose root and working directory the path was resolved
    /// from (the caller, or its parent when the caller was gone).
    pub via_pid: u32,
}

/// A namespace an fd refers to, as the kernel side identified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsRef {
    /// Inode number (the namespace id).
    pub inum: u32,
    /// Its type (`"pid"`), when the kernel says (6.18's `ns_common.ns_type`).
    pub kind: Option<&'static str>,
    /// Its level, for pid and user namespaces.
    pub level: Option<u32>,
}

/// The namespace type name of a CLONE_NEW* value.
pub fn ns_kind(clone_flag: u32) -> Option<&'static str> {
    Some(match clone_flag {
        0x0002_0000 => "mnt",
        0x0400_0000 => "uts",
        0x0800_0000 => "ipc",
        0x1000_0000 => "user",
        0x2000_0000 => "pid",
        0x4000_0000 => "net",
        0x0200_0000 => "cgroup",
        0x0000_0080 => "time",
        _ => return None,
    })
}

impl Syscall {
    /// The errno of a failed call (`ret` in -4095..=-1).
    pub fn errno(&self) -> Option<i32> {
        (-4095..0).contains(&self.ret).then_some(-self.ret as i32)
    }

    /// The result as the program saw it through libc: -1 on failure (with
    /// [`Syscall::errno`]), the kernel's value otherwise.
    pub fn user_ret(&self) -> i64 {
        if self.errno().is_some() {
            -1
        } else {
            self.ret
        }
    }
}

/// A decoded argument value.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// A string read from the process (lossless: invalid UTF-8 is escaped as `\xNN`).
    Str {
        /// The text.
        text: String,
        /// Cut at the capture limit.
        truncated: bool,
    },
    /// A NULL pointer.
    Null,
    /// A pointer that could not be read.
    Unreadable {
        /// The address.
        addr: u64,
        /// errno name of the failed read.
        error: String,
    },
    /// A signed integer.
    Int(i64),
    /// A symbolic constant (`AT_FDCWD`, `FSCONFIG_CMD_CREATE`, `SIGCHLD`),
    /// the table's own text where it comes from one.
    Name(Cow<'static, str>),
    /// Flag names (the table's own texts); unknown bits as one hex string.
    Flags(Vec<Cow<'static, str>>),
    /// An address.
    Ptr(u64),
    /// A struct read from the process.
    Struct(Vec<(&'static str, ArgValue)>),
    /// Bytes not shown (binary data).
    Bytes(u64),
}

/// Turns bytes from a traced process into text without losing anything:
/// valid UTF-8 stays as is, every other byte becomes `\xNN`, and a backslash
/// becomes `\\` so the escaping can be undone.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_escaped(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // SAFETY-free: `good` is valid UTF-8 by construction.
                push_escaped(&mut out, std::str::from_utf8(good).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len()).max(1);
                for b in &bad[..n] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

fn push_escaped(out: &mut String, s: &str) {
    // A fold rather than `contains`: for the short strings this sees
    // (commands, paths) a vectorized pass is cheaper than memchr's setup.
    if !s.bytes().fold(false, |found, b| found | (b == b'\\')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Exited(0));
        assert_eq!(
            ExitStatus::from_wait_status(32 << 8),
            ExitStatus::Exited(32)
        );
        assert_eq!(
            ExitStatus::from_wait_status(9),
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(ExitStatus::from_wait_status(0x80 | 11).shell_code(), 139);
        assert_eq!(ExitStatus::from_wait_status(1 << 8).shell_code(), 1);
    }

    #[test]
    fn escaping_is_lossless_and_plain_text_is_untouched() {
        assert_eq!(escape_bytes(b"/proc"), "/proc");
        assert_eq!(escape_bytes(b"a\xffb"), "a\\xffb");
        assert_eq!(escape_bytes(b"a\\b"), "a\\\\b");
        assert_eq!(escape_bytes("é".as_bytes()), "é");
        assert_eq!(escape_bytes(b"\xc3"), "\\xc3");
    }

    #[test]
    fn errno_only_for_error_range() {
        let mut sc = Syscall {
            name: "mount".into(),
            nr: 165,
            args: vec![],
            ret: -1,
            ns: NsIds::default(),
            ns_before: None,
            duration_ns: 0,
            no_entry: false,
            cap_repeats: 0,
            ret_kind: crate::syscalls::RetKind::Status,
            state: TaskState::default(),
            fd_ns: None,
            targets: Vec::new(),
        };
        assert_eq!(sc.errno(), Some(1));
        assert_eq!(sc.user_ret(), -1);
        sc.ret = -13;
        assert_eq!((sc.errno(), sc.user_ret()), (Some(13), -1));
        sc.ret = 3;
        assert_eq!(sc.user_ret(), 3);
        assert_eq!(sc.errno(), None);
        sc.ret = -5000;
        assert_eq!(sc.errno(), None);
    }
}
