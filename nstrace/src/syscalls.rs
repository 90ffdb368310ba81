//! The traced syscalls, as one table: name, tracepoint, number, and how each
//! argument is captured and decoded. The kernel's capture spec
//! ([`nstrace_common::ArgSpec`]) is derived from this table, so the BPF side
//! never needs to know a syscall by name.

use nstrace_common::{ArgSpec, STR_SLOTS};

use crate::flags::{self, FlagSet};

/// How one argument is shown.
#[derive(Debug, Clone, Copy)]
pub enum ArgKind {
    /// A NUL-terminated string in user memory (path, fs type, mount data).
    Str,
    /// A file descriptor (`int`).
    Fd,
    /// A namespace fd or pidfd (setns): the kernel side identifies its file.
    NsFd,
    /// A directory fd for `*at` calls: `AT_FDCWD` is named.
    DirFd,
    /// Flags decoded with a [`FlagSet`].
    Flags(&'static FlagSet),
    /// mount(2) flags (legacy magic stripped first).
    MountFlags,
    /// clone(2) flags: namespace and other flags plus the exit-signal byte.
    CloneFlags,
    /// A namespace type for setns (0 = any).
    NsType,
    /// fsconfig's command.
    FsconfigCmd,
    /// fsconfig's value, whose meaning depends on the command.
    FsconfigValue,
    /// A plain integer.
    Int,
    /// A user-space address, shown in hex.
    Ptr,
    /// A pointer to a struct the kernel side copies (see [`BlobKind`]).
    Blob,
    /// The size of that struct.
    Size,
}

/// A struct argument copied in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// `struct clone_args` of clone3(2).
    CloneArgs,
    /// `struct mount_attr` of mount_setattr(2) and open_tree_attr(2).
    MountAttr,
}

/// How a return value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetKind {
    /// 0 or -errno.
    Status,
    /// A new file descriptor.
    Fd,
    /// The child's pid (in the caller's pid namespace).
    ChildPid,
}

/// What a call does to the caller's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsEffect {
    /// Nothing.
    None,
    /// Creates namespaces (for the caller or, for clone, the child).
    Creates,
    /// Enters existing namespaces.
    Enters,
}

/// One traced syscall.
#[derive(Debug)]
pub struct SyscallDef {
    /// Name as users know it (`umount2`).
    pub name: &'static str,
    /// Syscall number on this architecture.
    pub nr: u32,
    /// Arguments in order: name and kind.
    pub args: &'static [(&'static str, ArgKind)],
    /// Struct argument, if any.
    pub blob: Option<BlobKind>,
    /// Return value.
    pub ret: RetKind,
    /// Effect on namespaces.
    pub ns_effect: NsEffect,
}

impl SyscallDef {
    /// Whether the call creates or enters namespaces (records carry `ns_before`).
    pub fn changes_ns(&self) -> bool {
        self.ns_effect != NsEffect::None
    }

    /// The capture spec the kernel side uses for this call.
    pub fn arg_spec(&self) -> ArgSpec {
        let mut spec = ArgSpec::default();
        let mut slot = 0;
        for (i, (_, kind)) in self.args.iter().enumerate() {
            match kind {
                ArgKind::Str | ArgKind::FsconfigValue if slot < STR_SLOTS => {
                    spec.str_args[slot] = (i + 1) as u8;
                    slot += 1;
                }
                ArgKind::Blob => spec.blob_arg = (i + 1) as u8,
                ArgKind::Size => spec.blob_size_arg = (i + 1) as u8,
                ArgKind::NsFd => spec.fd_arg = (i + 1) as u8,
                _ => {}
            }
        }
        spec.child_returns_zero = u8::from(self.ret == RetKind::ChildPid);
        spec.nargs = self.args.len().min(6) as u8;
        spec.ns_unchanged = u8::from(!self.changes_ns());
        spec
    }

    /// The string slot that argument `index` was captured in, if it is a string.
    pub fn str_slot(&self, index: usize) -> Option<usize> {
        let is_str = |k: &ArgKind| matches!(k, ArgKind::Str | ArgKind::FsconfigValue);
        if !is_str(&self.args.get(index)?.1) {
            return None;
        }
        let slot = self.args[..index].iter().filter(|(_, k)| is_str(k)).count();
        (slot < STR_SLOTS).then_some(slot)
    }
}

/// Syscall numbers of this architecture.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const UNSHARE: u32 = 272;
    pub const SETNS: u32 = 308;
    pub const CLONE: u32 = 56;
    pub const MOUNT: u32 = 165;
    pub const UMOUNT2: u32 = 166;
    pub const PIVOT_ROOT: u32 = 155;
}

/// Syscall numbers of this architecture.
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const UNSHARE: u32 = 97;
    pub const SETNS: u32 = 268;
    pub const CLONE: u32 = 220;
    pub const MOUNT: u32 = 40;
    pub const UMOUNT2: u32 = 39;
    pub const PIVOT_ROOT: u32 = 41;
}

// The newer calls have the same number on every architecture.
const OPEN_TREE: u32 = 428;
const MOVE_MOUNT: u32 = 429;
const FSOPEN: u32 = 430;
const FSCONFIG: u32 = 431;
const FSMOUNT: u32 = 432;
const FSPICK: u32 = 433;
const CLONE3: u32 = 435;
const MOUNT_SETATTR: u32 = 442;
const OPEN_TREE_ATTR: u32 = 467;

use ArgKind::*;

/// Every traced syscall.
pub static SYSCALLS: &[SyscallDef] = &[
    SyscallDef {
        name: "unshare",
        nr: nr::UNSHARE,
        args: &[("flags", Flags(&flags::CLONE))],
        blob: None,
        ret: RetKind::Status,
        ns_effect: NsEffect::Creates,
    },
    SyscallDef {
        name: "setns",
        nr: nr::SETNS,
        args: &[("fd", NsFd), ("nstype", NsType)],
        blob: None,
        ret: RetKind::Status,
        ns_effect: NsEffect::Enters,
    },
    SyscallDef {
        name: "clone",
        nr: nr::CLONE,
        // x86_64 and arm64 order: flags, stack, parent_tid, child_tid, tls.
        args: &[
            ("flags", CloneFlags),
            ("stack", Ptr),
            ("parent_tid", Ptr),
            ("child_tid", Ptr),
            ("tls", Ptr),
        ],
        blob: None,
        ret: RetKind::ChildPid,
        ns_effect: NsEffect::Creates,
    },
    SyscallDef {
        name: "clone3",
        nr: CLONE3,
        args: &[("args", Blob), ("size", Size)],
        blob: Some(BlobKind::CloneArgs),
        ret: RetKind::ChildPid,
        ns_effect: NsEffect::Creates,
    },
    SyscallDef {
        name: "mount",
        nr: nr::MOUNT,
        args: &[
            ("source", Str),
            ("target", Str),
            ("fstype", Str),
            ("flags", MountFlags),
            ("data", Str),
        ],
        blob: None,
        ret: RetKind::Status,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "umount2",
        nr: nr::UMOUNT2,
        args: &[("target", Str), ("flags", Flags(&flags::UMOUNT))],
        blob: None,
        ret: RetKind::Status,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "pivot_root",
        nr: nr::PIVOT_ROOT,
        args: &[("new_root", Str), ("put_old", Str)],
        blob: None,
        ret: RetKind::Status,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "move_mount",
        nr: MOVE_MOUNT,
        args: &[
            ("from_dfd", DirFd),
            ("from_path", Str),
            ("to_dfd", DirFd),
            ("to_path", Str),
            ("flags", Flags(&flags::MOVE_MOUNT)),
        ],
        blob: None,
        ret: RetKind::Status,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "open_tree",
        nr: OPEN_TREE,
        args: &[
            ("dfd", DirFd),
            ("path", Str),
            ("flags", Flags(&flags::OPEN_TREE)),
        ],
        blob: None,
        ret: RetKind::Fd,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "open_tree_attr",
        nr: OPEN_TREE_ATTR,
        args: &[
            ("dfd", DirFd),
            ("path", Str),
            ("flags", Flags(&flags::OPEN_TREE)),
            ("attr", Blob),
            ("size", Size),
        ],
        blob: Some(BlobKind::MountAttr),
        ret: RetKind::Fd,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "fsopen",
        nr: FSOPEN,
        args: &[("fs_name", Str), ("flags", Flags(&flags::FSOPEN))],
        blob: None,
        ret: RetKind::Fd,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "fsconfig",
        nr: FSCONFIG,
        args: &[
            ("fd", Fd),
            ("cmd", FsconfigCmd),
            ("key", Str),
            ("value", FsconfigValue),
            ("aux", Int),
        ],
        blob: None,
        ret: RetKind::Status,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "fsmount",
        nr: FSMOUNT,
        args: &[
            ("fs_fd", Fd),
            ("flags", Flags(&flags::FSMOUNT)),
            ("attr_flags", Flags(&flags::MOUNT_ATTR)),
        ],
        blob: None,
        ret: RetKind::Fd,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "fspick",
        nr: FSPICK,
        args: &[
            ("dfd", DirFd),
            ("path", Str),
            ("flags", Flags(&flags::FSPICK)),
        ],
        blob: None,
        ret: RetKind::Fd,
        ns_effect: NsEffect::None,
    },
    SyscallDef {
        name: "mount_setattr",
        nr: MOUNT_SETATTR,
        args: &[
            ("dfd", DirFd),
            ("path", Str),
            ("flags", Flags(&flags::AT)),
            ("attr", Blob),
            ("size", Size),
        ],
        blob: Some(BlobKind::MountAttr),
        ret: RetKind::Status,
        ns_effect: NsEffect::None,
    },
];

/// The definition for a syscall number, if it is a traced one.
pub fn by_nr(nr: u32) -> Option<&'static SyscallDef> {
    SYSCALLS.iter().find(|d| d.nr == nr)
}

/// The definition for a syscall name, if it is a traced one.
pub fn by_name(name: &str) -> Option<&'static SyscallDef> {
    SYSCALLS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_captures_its_four_strings() {
        let spec = by_name("mount").unwrap().arg_spec();
        assert_eq!(spec.str_args, [1, 2, 3, 5]);
        assert_eq!(spec.blob_arg, 0);
        assert_eq!(spec.child_returns_zero, 0);
    }

    #[test]
    fn clone3_copies_its_struct_and_hides_the_child_return() {
        let spec = by_name("clone3").unwrap().arg_spec();
        assert_eq!(spec.str_args, [0; 4]);
        assert_eq!((spec.blob_arg, spec.blob_size_arg), (1, 2));
        assert_eq!(spec.child_returns_zero, 1);
    }

    #[test]
    fn only_calls_that_cannot_change_namespaces_skip_the_exit_read() {
        for name in ["unshare", "setns", "clone", "clone3"] {
            assert_eq!(by_name(name).unwrap().arg_spec().ns_unchanged, 0, "{name}");
        }
        for name in ["mount", "umount2", "pivot_root", "move_mount", "fsmount"] {
            assert_eq!(by_name(name).unwrap().arg_spec().ns_unchanged, 1, "{name}");
        }
    }

    #[test]
    fn setns_identifies_its_fd() {
        let spec = by_name("setns").unwrap().arg_spec();
        assert_eq!(spec.fd_arg, 1);
        assert_eq!(by_name("mount").unwrap().arg_spec().fd_arg, 0);
    }

    #[test]
    fn string_slots_follow_argument_order() {
        let mm = by_name("move_mount").unwrap();
        assert_eq!(mm.str_slot(1), Some(0));
        assert_eq!(mm.str_slot(3), Some(1));
        assert_eq!(mm.str_slot(0), None);
        let fc = by_name("fsconfig").unwrap();
        assert_eq!(fc.str_slot(2), Some(0));
        assert_eq!(fc.str_slot(3), Some(1));
    }

    #[test]
    fn numbers_and_names_are_unique() {
        for (i, a) in SYSCALLS.iter().enumerate() {
            for b in &SYSCALLS[i + 1..] {
                assert_ne!(a.nr, b.nr, "{} and {}", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
            assert!(a.nr < nstrace_common::MAX_SYSCALL_NR);
            assert!(a.args.len() <= 6);
        }
    }

    #[test]
    fn lookup_by_number() {
        assert_eq!(
            by_nr(by_name("umount2").unwrap().nr).map(|d| d.name),
            Some("umount2")
        );
        assert!(by_nr(0).is_none());
    }
}
