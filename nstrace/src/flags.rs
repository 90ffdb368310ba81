//! Flag sets of the traced syscalls, as data: each set lists the bits and
//! their names from the kernel's UAPI headers, and one decoder turns any value
//! into names, with unknown bits kept as hex.

use std::borrow::Cow;

/// One named bit (or a multi-bit value, see [`FlagSet::fields`]).
pub type Flag = (u64, &'static str);

/// A set of flags and, optionally, enumerated multi-bit fields inside the value.
#[derive(Debug)]
pub struct FlagSet {
    /// Independent bits.
    pub bits: &'static [Flag],
    /// Multi-bit fields: `(mask, values)`; the value under `mask` is named by
    /// `values` (a value of 0 that has a name is shown too).
    pub fields: &'static [(u64, &'static [Flag])],
}

impl FlagSet {
    /// Names of the bits set in `value`, in table order; bits no entry names
    /// come last as one hex string.
    pub fn decode(&self, value: u64) -> Vec<Cow<'static, str>> {
        let mut names = Vec::new();
        let mut rest = value;
        for &(mask, values) in self.fields {
            let v = value & mask;
            if let Some((_, name)) = values.iter().find(|(x, _)| *x == v) {
                if v != 0 || !name.is_empty() {
                    names.push(Cow::Borrowed(*name));
                }
                rest &= !mask;
            }
        }
        for &(bit, name) in self.bits {
            if bit != 0 && rest & bit == bit {
                names.push(Cow::Borrowed(name));
                rest &= !bit;
            }
        }
        if rest != 0 {
            names.push(Cow::Owned(format!("{rest:#x}")));
        }
        names
    }
}

/// `CLONE_*` flags (unshare, clone, clone3, setns' nstype), without the exit signal byte.
pub const CLONE: FlagSet = FlagSet {
    bits: &[
        (0x0000_0100, "CLONE_VM"),
        (0x0000_0200, "CLONE_FS"),
        (0x0000_0400, "CLONE_FILES"),
        (0x0000_0800, "CLONE_SIGHAND"),
        (0x0000_1000, "CLONE_PIDFD"),
        (0x0000_2000, "CLONE_PTRACE"),
        (0x0000_4000, "CLONE_VFORK"),
        (0x0000_8000, "CLONE_PARENT"),
        (0x0001_0000, "CLONE_THREAD"),
        (0x0002_0000, "CLONE_NEWNS"),
        (0x0004_0000, "CLONE_SYSVSEM"),
        (0x0008_0000, "CLONE_SETTLS"),
        (0x0010_0000, "CLONE_PARENT_SETTID"),
        (0x0020_0000, "CLONE_CHILD_CLEARTID"),
        (0x0040_0000, "CLONE_DETACHED"),
        (0x0080_0000, "CLONE_UNTRACED"),
        (0x0100_0000, "CLONE_CHILD_SETTID"),
        (0x0200_0000, "CLONE_NEWCGROUP"),
        (0x0400_0000, "CLONE_NEWUTS"),
        (0x0800_0000, "CLONE_NEWIPC"),
        (0x1000_0000, "CLONE_NEWUSER"),
        (0x2000_0000, "CLONE_NEWPID"),
        (0x4000_0000, "CLONE_NEWNET"),
        (0x8000_0000, "CLONE_IO"),
        (0x1_0000_0000, "CLONE_CLEAR_SIGHAND"),
        (0x2_0000_0000, "CLONE_INTO_CGROUP"),
        (0x0000_0080, "CLONE_NEWTIME"),
    ],
    fields: &[],
};

/// The low byte of clone(2)'s flags: the signal sent to the parent on exit.
pub const CLONE_EXIT_SIGNAL_MASK: u64 = 0xff;

/// `MS_*` flags of mount(2). The legacy magic `MS_MGC_VAL` in the upper 16
/// bits is dropped before decoding (see [`strip_mount_magic`]).
pub const MOUNT: FlagSet = FlagSet {
    bits: &[
        (1, "MS_RDONLY"),
        (2, "MS_NOSUID"),
        (4, "MS_NODEV"),
        (8, "MS_NOEXEC"),
        (16, "MS_SYNCHRONOUS"),
        (32, "MS_REMOUNT"),
        (64, "MS_MANDLOCK"),
        (128, "MS_DIRSYNC"),
        (256, "MS_NOSYMFOLLOW"),
        (1024, "MS_NOATIME"),
        (2048, "MS_NODIRATIME"),
        (4096, "MS_BIND"),
        (8192, "MS_MOVE"),
        (16384, "MS_REC"),
        (32768, "MS_SILENT"),
        (1 << 16, "MS_POSIXACL"),
        (1 << 17, "MS_UNBINDABLE"),
        (1 << 18, "MS_PRIVATE"),
        (1 << 19, "MS_SLAVE"),
        (1 << 20, "MS_SHARED"),
        (1 << 21, "MS_RELATIME"),
        (1 << 22, "MS_KERNMOUNT"),
        (1 << 23, "MS_I_VERSION"),
        (1 << 24, "MS_STRICTATIME"),
        (1 << 25, "MS_LAZYTIME"),
    ],
    fields: &[],
};

/// Removes mount(2)'s legacy `MS_MGC_VAL` (0xC0ED in the upper 16 bits), which
/// the kernel ignores.
pub fn strip_mount_magic(flags: u64) -> u64 {
    const MS_MGC_MSK: u64 = 0xffff_0000;
    const MS_MGC_VAL: u64 = 0xc0ed_0000;
    if flags & MS_MGC_MSK == MS_MGC_VAL {
        flags & !MS_MGC_MSK
    } else {
        flags
    }
}

/// umount2(2) flags.
pub const UMOUNT: FlagSet = FlagSet {
    bits: &[
        (1, "MNT_FORCE"),
        (2, "MNT_DETACH"),
        (4, "MNT_EXPIRE"),
        (8, "UMOUNT_NOFOLLOW"),
    ],
    fields: &[],
};

/// move_mount(2) flags.
pub const MOVE_MOUNT: FlagSet = FlagSet {
    bits: &[
        (0x01, "MOVE_MOUNT_F_SYMLINKS"),
        (0x02, "MOVE_MOUNT_F_AUTOMOUNTS"),
        (0x04, "MOVE_MOUNT_F_EMPTY_PATH"),
        (0x10, "MOVE_MOUNT_T_SYMLINKS"),
        (0x20, "MOVE_MOUNT_T_AUTOMOUNTS"),
        (0x40, "MOVE_MOUNT_T_EMPTY_PATH"),
        (0x100, "MOVE_MOUNT_SET_GROUP"),
        (0x200, "MOVE_MOUNT_BENEATH"),
    ],
    fields: &[],
};

/// open_tree(2) / open_tree_attr(2) flags (`OPEN_TREE_*` plus the `AT_*` ones it accepts).
pub const OPEN_TREE: FlagSet = FlagSet {
    bits: &[
        (1, "OPEN_TREE_CLONE"),
        (0o2000000, "OPEN_TREE_CLOEXEC"),
        (0x100, "AT_SYMLINK_NOFOLLOW"),
        (0x800, "AT_NO_AUTOMOUNT"),
        (0x1000, "AT_EMPTY_PATH"),
        (0x8000, "AT_RECURSIVE"),
    ],
    fields: &[],
};

/// `AT_*` flags of mount_setattr(2).
pub const AT: FlagSet = FlagSet {
    bits: &[
        (0x100, "AT_SYMLINK_NOFOLLOW"),
        (0x800, "AT_NO_AUTOMOUNT"),
        (0x1000, "AT_EMPTY_PATH"),
        (0x8000, "AT_RECURSIVE"),
    ],
    fields: &[],
};

/// fsopen(2) flags.
pub const FSOPEN: FlagSet = FlagSet {
    bits: &[(1, "FSOPEN_CLOEXEC")],
    fields: &[],
};

/// fsmount(2) flags.
pub const FSMOUNT: FlagSet = FlagSet {
    bits: &[(1, "FSMOUNT_CLOEXEC")],
    fields: &[],
};

/// fspick(2) flags.
pub const FSPICK: FlagSet = FlagSet {
    bits: &[
        (1, "FSPICK_CLOEXEC"),
        (2, "FSPICK_SYMLINK_NOFOLLOW"),
        (4, "FSPICK_NO_AUTOMOUNT"),
        (8, "FSPICK_EMPTY_PATH"),
    ],
    fields: &[],
};

/// `MOUNT_ATTR_*` (fsmount's attr_flags, mount_attr.attr_set / attr_clr).
pub const MOUNT_ATTR: FlagSet = FlagSet {
    bits: &[
        (0x1, "MOUNT_ATTR_RDONLY"),
        (0x2, "MOUNT_ATTR_NOSUID"),
        (0x4, "MOUNT_ATTR_NODEV"),
        (0x8, "MOUNT_ATTR_NOEXEC"),
        (0x80, "MOUNT_ATTR_NODIRATIME"),
        (0x10_0000, "MOUNT_ATTR_IDMAP"),
        (0x20_0000, "MOUNT_ATTR_NOSYMFOLLOW"),
    ],
    fields: &[(
        0x70,
        &[
            (0x10, "MOUNT_ATTR_NOATIME"),
            (0x20, "MOUNT_ATTR_STRICTATIME"),
            // MOUNT_ATTR_RELATIME is 0: only named when the field is cleared
            // explicitly (attr_clr of MOUNT_ATTR__ATIME), so not here.
        ],
    )],
};

/// mount_attr.propagation values (`MS_*` propagation types).
pub const PROPAGATION: FlagSet = FlagSet {
    bits: &[
        (1 << 17, "MS_UNBINDABLE"),
        (1 << 18, "MS_PRIVATE"),
        (1 << 19, "MS_SLAVE"),
        (1 << 20, "MS_SHARED"),
    ],
    fields: &[],
};

/// fsconfig(2) commands.
pub const FSCONFIG_CMDS: &[Flag] = &[
    (0, "FSCONFIG_SET_FLAG"),
    (1, "FSCONFIG_SET_STRING"),
    (2, "FSCONFIG_SET_BINARY"),
    (3, "FSCONFIG_SET_PATH"),
    (4, "FSCONFIG_SET_PATH_EMPTY"),
    (5, "FSCONFIG_SET_FD"),
    (6, "FSCONFIG_CMD_CREATE"),
    (7, "FSCONFIG_CMD_RECONFIGURE"),
    (8, "FSCONFIG_CMD_CREATE_EXCL"),
];

/// fsconfig commands whose `value` argument is a string.
pub const FSCONFIG_STRING_VALUE: &[u64] = &[1, 3, 4];
/// fsconfig command whose `value` is a binary blob of `aux` bytes.
pub const FSCONFIG_SET_BINARY: u64 = 2;

/// Looks `value` up in an enumeration.
pub fn enum_name(table: &[Flag], value: u64) -> Option<&'static str> {
    table.iter().find(|(v, _)| *v == value).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_flags_decode_in_table_order() {
        assert_eq!(
            CLONE.decode(0x1000_0000 | 0x0002_0000 | 0x2000_0000),
            ["CLONE_NEWNS", "CLONE_NEWUSER", "CLONE_NEWPID"]
        );
        assert!(CLONE.decode(0).is_empty());
    }

    #[test]
    fn unknown_bits_are_kept_as_hex() {
        assert_eq!(UMOUNT.decode(2 | 0x40), ["MNT_DETACH", "0x40"]);
    }

    #[test]
    fn mount_magic_is_stripped() {
        let flags = strip_mount_magic(0xc0ed_0000 | 4096 | 16384);
        assert_eq!(MOUNT.decode(flags), ["MS_BIND", "MS_REC"]);
        // Without the magic the upper bits are real flags.
        assert_eq!(strip_mount_magic(1 << 20), 1 << 20);
    }

    #[test]
    fn mount_attr_atime_field() {
        assert_eq!(
            MOUNT_ATTR.decode(0x1 | 0x10 | 0x2),
            [
                "MOUNT_ATTR_NOATIME",
                "MOUNT_ATTR_RDONLY",
                "MOUNT_ATTR_NOSUID"
            ]
        );
        assert_eq!(MOUNT_ATTR.decode(0x20), ["MOUNT_ATTR_STRICTATIME"]);
    }

    #[test]
    fn fsconfig_commands() {
        assert_eq!(enum_name(FSCONFIG_CMDS, 6), Some("FSCONFIG_CMD_CREATE"));
        assert_eq!(enum_name(FSCONFIG_CMDS, 99), None);
    }
}
