//! Records shared by the nstrace eBPF programs and the nstrace loader.
//!
//! Everything here is `#[repr(C)]` and fixed-size: the kernel side fills these
//! structures in ring-buffer reservations or map values and userspace reads the
//! same bytes back. The kernel side knows nothing about syscalls beyond what the
//! [`ArgSpec`] table that userspace fills tells it, and nothing about flags or
//! names at all: decoding happens in userspace.
#![no_std]

/// Length of a task's `comm`, as in the kernel.
pub const COMM_LEN: usize = 16;
/// Bytes kept of each string argument (path, fs type, mount data, ...).
pub const STR_LEN: usize = 256;
/// How many string arguments one syscall record can carry.
pub const STR_SLOTS: usize = 4;
/// Bytes kept of a struct argument (clone3's `clone_args`, `mount_attr`).
pub const BLOB_LEN: usize = 128;
/// Bytes kept of an exec's filename.
pub const PATH_LEN: usize = 256;
/// Bytes kept of an exec's argument block (NUL-separated argv).
pub const ARGV_LEN: usize = 1024;
/// Highest syscall number (exclusive) the [`ArgSpec`] table covers.
pub const MAX_SYSCALL_NR: u32 = 512;

/// Marks an offset that the running kernel's BTF does not have.
pub const NO_OFFSET: u32 = u32::MAX;

/// Index of each namespace in [`NsIds::inum`].
pub mod ns {
    /// User namespace (`/proc/PID/ns/user`).
    pub const USER: usize = 0;
    /// Mount namespace.
    pub const MNT: usize = 1;
    /// The task's own (active) PID namespace.
    pub const PID: usize = 2;
    /// Network namespace.
    pub const NET: usize = 3;
    /// UTS namespace.
    pub const UTS: usize = 4;
    /// IPC namespace.
    pub const IPC: usize = 5;
    /// Cgroup namespace.
    pub const CGROUP: usize = 6;
    /// Time namespace.
    pub const TIME: usize = 7;
    /// PID namespace the task's future children are born into.
    pub const PID_FOR_CHILDREN: usize = 8;
    /// Time namespace the task's future children are born into.
    pub const TIME_FOR_CHILDREN: usize = 9;
    /// Number of namespace slots.
    pub const COUNT: usize = 10;
}

/// Inode numbers of a task's namespaces, indexed by the constants in [`ns`].
/// Zero means "could not be read" (for example a task past `exit_task_namespaces`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsIds {
    /// Namespace inode numbers.
    pub inum: [u32; ns::COUNT],
}

/// What a ring-buffer record is; the first field of every record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A traced syscall, entry and exit together: [`SyscallRecord`].
    Syscall = 1,
    /// A new process: [`ForkRecord`].
    Fork = 2,
    /// A successful exec: [`ExecRecord`].
    Exec = 3,
    /// A process (thread group) ended: [`ExitRecord`].
    Exit = 4,
    /// A capability check inside a traced call: [`CapRecord`].
    Cap = 5,
    /// A kernel log line printed inside a traced call: [`KlogRecord`].
    Klog = 6,
    /// The mounts of a mount namespace a traced unshare(2) just made, as
    /// the kernel listed them then: [`WalkRecord`], ahead of the call's own
    /// record. Not an event of the trace: what nstrace builds the new
    /// namespace's table from.
    Walk = 7,
}

impl RecordKind {
    /// The kind for a raw value read from a record, if it is one.
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Syscall),
            2 => Some(Self::Fork),
            3 => Some(Self::Exec),
            4 => Some(Self::Exit),
            5 => Some(Self::Cap),
            6 => Some(Self::Klog),
            7 => Some(Self::Walk),
            _ => None,
        }
    }
}

/// The part every record starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// A [`RecordKind`] value.
    pub kind: u32,
    /// Records this CPU could not emit since its previous emitted record.
    pub lost_before: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened; for a
    /// syscall, when it was entered.
    pub ts_ns: u64,
    /// Thread-group id (what userspace calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The task's `comm` at the time.
    pub comm: [u8; COMM_LEN],
}

/// A user namespace as a capability check or a task sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserNsInfo {
    /// Inode number (0 if unreadable).
    pub inum: u32,
    /// Nesting level (0 = the initial user namespace).
    pub level: u32,
    /// Global uid of its creator.
    pub owner: u32,
    /// Inode number of its parent (0 for the initial one).
    pub parent: u32,
}

/// What explanations need to know about the caller, read at entry (or at
/// exit when the entry was not seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskState {
    /// The caller's user namespace.
    pub user_ns: UserNsInfo,
    /// Effective uid (global).
    pub euid: u32,
    /// Threads in the caller's thread group.
    pub nr_threads: u32,
    /// `task->seccomp.mode` (0 off, 1 strict, 2 filter).
    pub seccomp_mode: u32,
    /// Level of the caller's active pid namespace (0 = initial).
    pub pidns_level: u32,
    /// User namespace owning the caller's mount namespace.
    pub mntns_owner: u32,
    /// User namespace owning the caller's active pid namespace.
    pub pidns_owner: u32,
    /// User namespace owning the caller's network namespace.
    pub netns_owner: u32,
    /// Effective gid (global).
    pub egid: u32,
    /// The uid_map of the caller's user namespace (inline extents).
    pub uid_map: IdMap,
    /// Its gid_map.
    pub gid_map: IdMap,
    /// Where the caller's root directory is (chroot status, UN4).
    pub root: RootState,
}

/// The caller's root directory (`task->fs->root`) against its mount
/// namespace's root, read in the kernel so that userspace can tell whether
/// the kernel's `current_chrooted()` holds. Each field: 0 no, 1 yes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootState {
    /// 1 when the fields below were read.
    pub read: u8,
    /// The root directory is the root of its mount (not a directory inside one).
    pub at_mount_root: u8,
    /// The root's mount is the namespace's root mount or stacked on it (each
    /// mount on the way mounted on its parent's root); 2: the walk gave up.
    pub on_ns_root: u8,
    /// Something is mounted on the root directory's dentry (DCACHE_MOUNTED,
    /// in this or any namespace), so the top of the stack is not known.
    pub overmounted: u8,
}

impl RootState {
    /// Whether the kernel's `current_chrooted()` would say true: `None`
    /// when the read state cannot tell.
    pub fn chrooted(&self) -> Option<bool> {
        if self.read == 0 {
            return None;
        }
        if self.at_mount_root == 0 || self.on_ns_root == 0 {
            return Some(true);
        }
        if self.on_ns_root != 1 || self.overmounted != 0 {
            return None;
        }
        Some(false)
    }
}

/// The inline part of a user namespace's uid_map or gid_map: up to 5
/// extents, each mapping `count` ids from `lower[i]` (global) up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// Extents in use; more than 5 live outside (not copied); `u32::MAX`
    /// if the map could not be read.
    pub nr_extents: u32,
    /// First global id of each extent.
    pub lower: [u32; 5],
    /// Length of each extent.
    pub count: [u32; 5],
}

impl IdMap {
    /// Whether global `id` is mapped: `Some(bool)` when the inline extents
    /// say, `None` when they cannot (unread, or more than 5 extents).
    pub fn maps(&self, id: u32) -> Option<bool> {
        if self.nr_extents > 5 {
            return None;
        }
        Some(
            (0..self.nr_extents as usize)
                .any(|i| id >= self.lower[i] && id - self.lower[i] < self.count[i]),
        )
    }
}

/// A capability check (`cap_capable`) made while a tracked task was inside a
/// traced call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CapRecord {
    /// Header of the checked task.
    pub header: Header,
    /// Capability number (21 = CAP_SYS_ADMIN).
    pub cap: i32,
    /// 0 if granted, else a negative errno.
    pub ret: i32,
    /// The user namespace the capability was needed in.
    pub target: UserNsInfo,
    /// The user namespace of the checked credentials.
    pub cred_ns: UserNsInfo,
    /// Effective uid of the checked credentials.
    pub euid: u32,
    /// Padding, always zero.
    pub _pad: u32,
}

/// The kernel's own view of a mount nstrace holds an fd to, read by the
/// probe program (see [`Config::probe_nr`]) into the slot of the fd in the
/// `MOUNT_PROBE` array, which nstrace maps into its memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountProbe {
    /// `struct mount.mnt_id` (the id in mountinfo).
    pub mnt_id: u32,
    /// `vfsmount.mnt_flags` (MNT_LOCKED and the MNT_LOCK_* bits among them).
    pub flags: u32,
    /// The mount namespace it belongs to (inode number; 0 for none).
    pub mnt_ns: u32,
    /// Its parent's mount id (its own id for a namespace's root).
    pub parent_id: u32,
    /// 1: the mount is shared (propagates to peers).
    pub shared: u8,
    /// 1: its parent is shared.
    pub parent_shared: u8,
    /// 1: the fd's dentry is the mount's root (the path is a mount point).
    pub at_mount_root: u8,
    /// 1: written by the probe program (nstrace zeroes the slot before
    /// each request).
    pub answered: u8,
    /// Padding to a multiple of 8 bytes: the kernel lays out the elements
    /// of a mapped array at that stride.
    pub _pad: u32,
}

/// Slots of the `MOUNT_PROBE` array: one per fd number below it (nstrace's
/// own descriptors stay far below).
pub const MOUNT_PROBE_SLOTS: u32 = 1024;

/// `BPF_F_MMAPABLE`: an array map userspace can map into its memory.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

const _: () = assert!(core::mem::size_of::<MountProbe>().is_multiple_of(8));

/// One mount of a [`MountWalk`]: its id, `vfsmount.mnt_flags`, and what
/// identifies it across a copy of its namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkedMount {
    /// `struct mount.mnt_id` (the id in mountinfo).
    pub mnt_id: u32,
    /// `vfsmount.mnt_flags` (MNT_LOCKED and the MNT_LOCK_* bits among them).
    pub flags: u32,
    /// The id of its parent mount (its own for a namespace's root).
    pub parent_id: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// `vfsmount.mnt_root`: the address of the dentry mounted. A copy of a
    /// mount (copy_tree) mounts the same dentry at the same mountpoint
    /// dentry: with [`Self::mountpoint`] and the parent, what pairs a mount
    /// of a new namespace with the one it was copied from. Compared, never
    /// shown.
    pub root: u64,
    /// `struct mount.mnt_mountpoint`: the address of the dentry it is
    /// mounted on (its own root for a namespace's root mount).
    pub mountpoint: u64,
}

/// Most mounts one [`MountWalk`] lists: as many as let a [`WalkRecord`]
/// fit in a per-CPU map value (32 KiB, the kernel's per-CPU unit).
pub const WALK_MOUNTS: u32 = 1022;

/// Set in the fd of a probe request (see [`Config::probe_nr`]): walk the
/// whole mount namespace of the nsfs fd below it into `MOUNT_WALK`, rather
/// than read one mount into `MOUNT_PROBE`. The fd number with this bit is
/// far above any real descriptor, so the kernel fails the call with EBADF.
pub const WALK_REQUEST: u64 = 1 << 30;

/// Every mount of a mount namespace, by id, as the kernel holds them: the
/// probe program walks the tree from the namespace's root mount
/// (`mnt_mounts`/`mnt_child`, depth first, as the kernel's own `next_mnt`)
/// into the single element of the `MOUNT_WALK` array, which nstrace maps
/// into its memory. One request, and no descriptor on any of the mounts.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MountWalk {
    /// 1: written by the probe program (nstrace zeroes it before each request).
    pub answered: u32,
    /// The namespace walked (inode number).
    pub mnt_ns: u32,
    /// Mounts listed in `mounts`.
    pub count: u32,
    /// 1: the walk reached its root again (every mount is listed); 0: it
    /// stopped early (more than [`WALK_MOUNTS`] mounts, or a pointer that
    /// could not be read while the tree changed).
    pub complete: u32,
    /// The mounts, in the kernel's depth-first order.
    pub mounts: [WalkedMount; WALK_MOUNTS as usize],
}

const _: () = assert!(core::mem::size_of::<MountWalk>().is_multiple_of(8));

/// [`RecordKind::Walk`]: a [`MountWalk`] of a new mount namespace, made by
/// the program on the exit of the unshare(2) that created it (the header's
/// pid and tid are the caller's). Only the first `walk.count` mounts are
/// sent: the record is cut there.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WalkRecord {
    /// Common header (`lost_before` is always 0: a walk is not an event).
    pub header: Header,
    /// The walk (`answered` is 1).
    pub walk: MountWalk,
}

const _: () = assert!(core::mem::size_of::<WalkRecord>() <= 32 * 1024);

impl WalkRecord {
    /// Bytes of a record that lists `count` mounts.
    pub const fn size_for(count: u32) -> usize {
        core::mem::offset_of!(WalkRecord, walk)
            + core::mem::offset_of!(MountWalk, mounts)
            + count as usize * core::mem::size_of::<WalkedMount>()
    }
}

/// `mnt_flags` bit marking a shared mount on kernels before 6.15, where
/// `struct mount` has no `mnt_t_flags`.
pub const MNT_SHARED: u32 = 0x1000;
/// `mnt_t_flags` bit of a shared mount (6.15 and later).
pub const T_SHARED: u32 = 1;
/// `dentry.d_flags` bit: something is mounted here (BIT(16) up to 6.14;
/// userspace reads the value from BTF where it is an enum).
pub const DCACHE_MOUNTED_DEFAULT: u32 = 0x1_0000;

/// `mnt_flags` bits (stable since Linux 3.x; BTF enum values on 6.18).
pub mod mnt_flags {
    /// The per-mount options mountinfo shows (its sixth field), by the
    /// word it shows for each (the kernel's MNT_NOSUID ... MNT_NOSYMFOLLOW,
    /// unchanged since they were introduced).
    pub const OPTIONS: [(&str, u32); 8] = [
        ("nosuid", 0x01),
        ("nodev", 0x02),
        ("noexec", 0x04),
        ("noatime", 0x08),
        ("nodiratime", 0x10),
        ("relatime", 0x20),
        ("ro", 0x40),
        ("nosymfollow", 0x80),
    ];
    /// Atime mode locked.
    pub const LOCK_ATIME: u32 = 0x04_0000;
    /// noexec locked.
    pub const LOCK_NOEXEC: u32 = 0x08_0000;
    /// nosuid locked.
    pub const LOCK_NOSUID: u32 = 0x10_0000;
    /// nodev locked.
    pub const LOCK_NODEV: u32 = 0x20_0000;
    /// Read-only locked.
    pub const LOCK_READONLY: u32 = 0x40_0000;
    /// The mount itself is locked to its parent.
    pub const LOCKED: u32 = 0x80_0000;
}

/// Bytes kept of a kernel log line.
pub const KLOG_LEN: usize = 256;

/// A kernel log line (`printk`) printed by a tracked task inside a traced call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KlogRecord {
    /// Header of the printing task.
    pub header: Header,
    /// Bytes of `text` read including the NUL, or a negative errno.
    pub len: i32,
    /// Padding, always zero.
    pub _pad: u32,
    /// The line.
    pub text: [u8; KLOG_LEN],
}

/// [`SyscallRecord::flags`]: the exit was seen without a recorded entry (a
/// seccomp filter that refused the call before it ran, or an entry that
/// could not be stored). Arguments and `ns_before` are then not known.
pub const SYSCALL_NO_ENTRY: u32 = 1;
/// [`SyscallRecord::flags`], kernel side: the call cannot change the
/// caller's namespaces ([`ArgSpec::ns_unchanged`]), so its exit copies
/// `ns_before` into `ns_after` instead of reading them again.
pub const SYSCALL_NS_UNCHANGED: u32 = 2;
/// [`SyscallRecord::flags`]: the call (an unshare) copied nstrace's own
/// mount namespace ([`Config::own_mnt_ns`]) and `new_ns_walk` sent the
/// copy's complete list ahead of it. nstrace builds that table from its
/// own, without the process: the new namespace is then no reason to wake
/// it.
pub const SYSCALL_NS_WALKED: u32 = 4;

/// One traced syscall. The entry program fills everything up to `strs` and
/// parks the record in a per-thread map; the exit program adds the result and
/// the namespaces after the call and emits it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallRecord {
    /// Common header; `ts_ns` is the entry time.
    pub header: Header,
    /// `bpf_ktime_get_ns()` at exit.
    pub exit_ts_ns: u64,
    /// Syscall number (architecture-specific).
    pub nr: u32,
    /// `SYSCALL_*` flags.
    pub flags: u32,
    /// Return value.
    pub ret: i64,
    /// Raw arguments.
    pub args: [u64; 6],
    /// Namespaces at entry.
    pub ns_before: NsIds,
    /// Namespaces at exit.
    pub ns_after: NsIds,
    /// The caller's state at entry.
    pub state: TaskState,
    /// For each string slot: bytes read including the NUL (> 0), a negative
    /// errno if the read failed (a NULL pointer gives -EFAULT), 0 if unused.
    pub str_len: [i32; STR_SLOTS],
    /// Bytes of `blob` that were copied, or a negative errno.
    pub blob_len: i32,
    /// Magic of the filesystem of the fd argument named by the spec (0 if none).
    pub fd_magic: u32,
    /// Inode number of that fd's file (for an nsfs file: the namespace id).
    pub fd_ino: u64,
    /// For an nsfs file: the namespace's type (a CLONE_NEW* value; 0 if unknown).
    pub fd_ns_type: u32,
    /// For a pid or user namespace file: the namespace's level.
    pub fd_ns_level: u32,
    /// Capability checks during the call that repeated the one before them
    /// (same credentials, user namespace, capability and result): counted
    /// here instead of reported (fork checks the same capability for each
    /// writable mapping it copies).
    pub cap_repeats: u32,
    /// The capability of the last check reported for this call (kernel side).
    pub cap_last: i32,
    /// That check's result.
    pub cap_last_ret: i32,
    /// Padding.
    pub _pad_cap: u32,
    /// That check's credentials (`struct cred *`; 0 before the first check).
    pub cap_last_cred: u64,
    /// That check's target user namespace (`struct user_namespace *`).
    pub cap_last_target: u64,
    /// A struct argument copied from user memory.
    pub blob: [u8; BLOB_LEN],
    /// String arguments, as the [`ArgSpec`] for `nr` says.
    pub strs: [[u8; STR_LEN]; STR_SLOTS],
}

impl SyscallRecord {
    /// A record with every field 0, to build records from in userspace
    /// (tests, benchmarks) without naming each field.
    pub fn zeroed() -> Self {
        // SAFETY: every field is an integer or an array or struct of
        // integers, for which all-zero bytes are a valid value.
        unsafe { core::mem::zeroed() }
    }
}

/// A new process (not a new thread).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    /// Header of the parent (the task that called fork/clone).
    pub header: Header,
    /// Thread-group id of the child.
    pub child_pid: u32,
    /// Thread id of the child.
    pub child_tid: u32,
    /// The child's namespaces at birth.
    pub child_ns: NsIds,
}

/// A successful exec.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    /// Header; `comm` is the new one.
    pub header: Header,
    /// Parent's thread-group id.
    pub ppid: u32,
    /// Thread id that called exec (differs from `pid` if a non-leader thread exec'd).
    pub old_tid: u32,
    /// Bytes of `filename` read including the NUL, or a negative errno.
    pub filename_len: i32,
    /// Bytes of `argv` read (`arg_end - arg_start`, capped at [`ARGV_LEN`]), or a negative errno.
    pub argv_len: i32,
    /// Total size of the argument block, before capping.
    pub argv_total: u64,
    /// 1: the process was not tracked before this exec, and became tracked
    /// by it (a container runtime started while a tracked client ran).
    pub adopted: u32,
    /// Padding.
    pub _pad: u32,
    /// Namespaces of the process.
    pub ns: NsIds,
    /// The file that was executed.
    pub filename: [u8; PATH_LEN],
    /// The NUL-separated argument strings.
    pub argv: [u8; ARGV_LEN],
}

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    /// Header of the exiting (last) thread.
    pub header: Header,
    /// Parent's thread-group id.
    pub ppid: u32,
    /// `task->exit_code`: a wait(2) status (exit code << 8, or the signal number).
    pub exit_code: u32,
}

/// How the entry program captures one syscall's arguments. Userspace fills an
/// array of these indexed by syscall number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgSpec {
    /// For each string slot, the argument index + 1 to read as a user string (0 = unused).
    pub str_args: [u8; STR_SLOTS],
    /// Argument index + 1 holding a pointer to a struct to copy (0 = none).
    pub blob_arg: u8,
    /// Argument index + 1 holding that struct's size (0 = copy [`BLOB_LEN`] bytes).
    pub blob_size_arg: u8,
    /// 1 if a successful return of 0 with no recorded entry is the child side
    /// of a fork (clone, clone3) and must not be reported.
    pub child_returns_zero: u8,
    /// Argument index + 1 holding an fd whose file to identify (0 = none).
    pub fd_arg: u8,
    /// How many arguments the call takes; the others are recorded as 0 (a
    /// syscall trace event leaves them uninitialised).
    pub nargs: u8,
    /// 1 if the call cannot change the caller's namespaces (mount-family
    /// calls): its exit record copies them from its entry instead of
    /// reading them again.
    pub ns_unchanged: u8,
}

/// `super_block.s_magic` of nsfs (the files in /proc/PID/ns).
pub const NSFS_MAGIC: u32 = 0x6e73_6673;

/// Most bytes a [`Span`] covers (the programs' copy buffers).
pub const SPAN_MAX: u32 = 64;

/// Most bytes of the spans of two or three fields (`userns_span`,
/// `cred_ids_span`, `fs_root_span`): their buffers are smaller, because
/// they share the syscall programs' 512 bytes of stack with everything
/// else those programs hold.
pub const SMALL_SPAN_MAX: u32 = 16;

/// Bytes of a kernel struct that the programs copy with one read, for
/// several neighbouring fields: each read is a helper call, and the calls
/// are most of a program's cost. `start` is [`NO_OFFSET`] when there is
/// nothing to read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte, from the struct's start.
    pub start: u32,
    /// Length in bytes, at most [`SPAN_MAX`] (or [`SMALL_SPAN_MAX`]).
    pub len: u32,
}

impl Span {
    /// Nothing to read.
    pub const NONE: Self = Self {
        start: NO_OFFSET,
        len: 0,
    };

    /// The smallest span holding each `(offset, size)` field whose offset
    /// is known, never a byte past them (a struct may end there); `NONE`
    /// if none is known, `None` if they are more than `max` bytes apart
    /// or a field is not 4-byte aligned (the programs extract 4- and
    /// 8-byte words).
    pub fn covering(fields: &[(u32, u32)], max: u32) -> Option<Self> {
        let mut span = Self::NONE;
        let mut end = 0u32;
        for &(off, size) in fields {
            if off == NO_OFFSET {
                continue;
            }
            if off % 4 != 0 || size % 4 != 0 {
                return None;
            }
            span.start = span.start.min(off);
            end = end.max(off.checked_add(size)?);
        }
        if span.start == NO_OFFSET {
            return Some(Self::NONE);
        }
        span.len = end - span.start;
        (span.len <= max).then_some(span)
    }
}

/// Byte offsets of the kernel structure fields the programs read, resolved by
/// userspace from the running kernel's BTF. [`NO_OFFSET`] where a field does
/// not exist in this kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.nsproxy`.
    pub task_nsproxy: u32,
    /// `task_struct.real_cred`.
    pub task_real_cred: u32,
    /// `task_struct.thread_pid`.
    pub task_thread_pid: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// `task_struct.signal`.
    pub task_signal: u32,
    /// `signal_struct.live` (an `atomic_t`).
    pub signal_live: u32,
    /// `cred.user_ns`.
    pub cred_user_ns: u32,
    /// `struct pid.level`.
    pub pid_level: u32,
    /// `struct pid.numbers`.
    pub pid_numbers: u32,
    /// `sizeof(struct upid)`.
    pub upid_size: u32,
    /// `struct upid.ns`.
    pub upid_ns: u32,
    /// `mm_struct.arg_start`.
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`.
    pub mm_arg_end: u32,
    /// `signal_struct.nr_threads`.
    pub signal_nr_threads: u32,
    /// `task_struct.seccomp.mode`.
    pub task_seccomp_mode: u32,
    /// `cred.euid`.
    pub cred_euid: u32,
    /// `user_namespace.level`.
    pub userns_level: u32,
    /// `user_namespace.owner`.
    pub userns_owner: u32,
    /// `user_namespace.parent`.
    pub userns_parent: u32,
    /// `mnt_namespace.user_ns`.
    pub mntns_user_ns: u32,
    /// `pid_namespace.user_ns`.
    pub pidns_user_ns: u32,
    /// `pid_namespace.level`.
    pub pidns_level: u32,
    /// `net.user_ns`.
    pub netns_user_ns: u32,
    /// `cred.egid`.
    pub cred_egid: u32,
    /// `user_namespace.uid_map`.
    pub userns_uid_map: u32,
    /// `user_namespace.gid_map`.
    pub userns_gid_map: u32,
    /// `uid_gid_map.nr_extents`.
    pub idmap_nr_extents: u32,
    /// `uid_gid_map.extent` (the inline array of up to 5).
    pub idmap_extent: u32,
    /// `sizeof(struct uid_gid_extent)`.
    pub idmap_extent_size: u32,
    /// `uid_gid_extent.lower_first`.
    pub extent_lower_first: u32,
    /// `uid_gid_extent.count`.
    pub extent_count: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdtable_max_fds: u32,
    /// `fdtable.fd`.
    pub fdtable_fd: u32,
    /// `file.f_path.mnt`.
    pub file_path_mnt: u32,
    /// `vfsmount.mnt_flags`.
    pub vfsmount_flags: u32,
    /// Offset of `struct vfsmount mnt` inside `struct mount`.
    pub mount_mnt: u32,
    /// `struct mount.mnt_id`.
    pub mount_id: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_magic`.
    pub sb_magic: u32,
    /// `inode.i_private` (an nsfs inode's `ns_common`).
    pub inode_private: u32,
    /// `ns_common.ns_type` (6.18; NO_OFFSET on kernels without it).
    pub ns_common_type: u32,
    /// Offset of `ns` (the `ns_common`) in `pid_namespace`.
    pub pidns_ns: u32,
    /// Offset of `ns` in `user_namespace`.
    pub userns_ns: u32,
    /// `task_struct.fs`.
    pub task_fs: u32,
    /// `fs_struct.root.mnt`.
    pub fs_root_mnt: u32,
    /// `fs_struct.root.dentry`.
    pub fs_root_dentry: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `struct mount.mnt_parent`.
    pub mount_parent: u32,
    /// `struct mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `struct mount.mnt_ns`.
    pub mount_ns: u32,
    /// `struct mount.mnt_t_flags` (6.15+; NO_OFFSET before, where
    /// [`MNT_SHARED`] in `mnt_flags` says it).
    pub mount_t_flags: u32,
    /// `mnt_namespace.root`.
    pub mntns_root: u32,
    /// Offset of `ns` (the `ns_common`) in `mnt_namespace`.
    pub mntns_ns: u32,
    /// `struct mount.mnt_mounts` (the list head of its children).
    pub mount_mounts: u32,
    /// `struct mount.mnt_child` (its link in the parent's `mnt_mounts`).
    pub mount_child: u32,
    /// `dentry.d_flags`.
    pub dentry_flags: u32,
    /// `file.f_path.dentry`.
    pub file_path_dentry: u32,
    /// `ns_common.ops` (the namespace type's operations).
    pub ns_common_ops: u32,
    /// `proc_ns_operations.type` (a CLONE_NEW* value; used where
    /// `ns_common.ns_type` does not exist).
    pub proc_ns_ops_type: u32,
    /// Not an offset: this kernel's `DCACHE_MOUNTED` bit of `d_flags`.
    pub dcache_mounted: u32,
    /// `pt_regs` field holding each syscall argument (x86_64: di, si, dx,
    /// r10, r8, r9; arm64: regs[0..6]).
    pub regs_arg: [u32; 6],
    /// `pt_regs` field holding the syscall number (x86_64: orig_ax; arm64: syscallno).
    pub regs_nr: u32,
    /// `linux_binprm.filename`.
    pub binprm_filename: u32,
    /// For each namespace slot except user and pid: the `nsproxy` field
    /// pointing at it (indexed like [`NsIds::inum`]).
    pub nsproxy_field: [u32; ns::COUNT],
    /// For each namespace slot: offset of `ns.inum` inside that namespace's struct.
    pub ns_inum: [u32; ns::COUNT],
    /// The `nsproxy` fields in [`Offsets::nsproxy_field`].
    pub nsproxy_span: Span,
    /// `user_namespace.parent`, `.level` and `.owner`.
    pub userns_span: Span,
    /// `cred.euid` and `.egid`.
    pub cred_ids_span: Span,
    /// `fs_struct.root` (`mnt` and `dentry`).
    pub fs_root_span: Span,
    /// A `uid_gid_map`'s inline extents.
    pub idmap_span: Span,
}

impl Offsets {
    /// Offsets with nothing resolved.
    pub const UNRESOLVED: Self = Self {
        task_tgid: NO_OFFSET,
        task_pid: NO_OFFSET,
        task_real_parent: NO_OFFSET,
        task_nsproxy: NO_OFFSET,
        task_real_cred: NO_OFFSET,
        task_thread_pid: NO_OFFSET,
        task_mm: NO_OFFSET,
        task_exit_code: NO_OFFSET,
        task_signal: NO_OFFSET,
        signal_live: NO_OFFSET,
        cred_user_ns: NO_OFFSET,
        pid_level: NO_OFFSET,
        pid_numbers: NO_OFFSET,
        upid_size: NO_OFFSET,
        upid_ns: NO_OFFSET,
        mm_arg_start: NO_OFFSET,
        mm_arg_end: NO_OFFSET,
        signal_nr_threads: NO_OFFSET,
        task_seccomp_mode: NO_OFFSET,
        cred_euid: NO_OFFSET,
        userns_level: NO_OFFSET,
        userns_owner: NO_OFFSET,
        userns_parent: NO_OFFSET,
        mntns_user_ns: NO_OFFSET,
        pidns_user_ns: NO_OFFSET,
        pidns_level: NO_OFFSET,
        netns_user_ns: NO_OFFSET,
        cred_egid: NO_OFFSET,
        userns_uid_map: NO_OFFSET,
        userns_gid_map: NO_OFFSET,
        idmap_nr_extents: NO_OFFSET,
        idmap_extent: NO_OFFSET,
        idmap_extent_size: NO_OFFSET,
        extent_lower_first: NO_OFFSET,
        extent_count: NO_OFFSET,
        task_files: NO_OFFSET,
        files_fdt: NO_OFFSET,
        fdtable_max_fds: NO_OFFSET,
        fdtable_fd: NO_OFFSET,
        file_path_mnt: NO_OFFSET,
        vfsmount_flags: NO_OFFSET,
        mount_mnt: NO_OFFSET,
        mount_id: NO_OFFSET,
        file_inode: NO_OFFSET,
        inode_ino: NO_OFFSET,
        inode_sb: NO_OFFSET,
        sb_magic: NO_OFFSET,
        inode_private: NO_OFFSET,
        ns_common_type: NO_OFFSET,
        pidns_ns: NO_OFFSET,
        userns_ns: NO_OFFSET,
        task_fs: NO_OFFSET,
        fs_root_mnt: NO_OFFSET,
        fs_root_dentry: NO_OFFSET,
        vfsmount_root: NO_OFFSET,
        mount_parent: NO_OFFSET,
        mount_mountpoint: NO_OFFSET,
        mount_ns: NO_OFFSET,
        mount_t_flags: NO_OFFSET,
        mntns_root: NO_OFFSET,
        mntns_ns: NO_OFFSET,
        mount_mounts: NO_OFFSET,
        mount_child: NO_OFFSET,
        dentry_flags: NO_OFFSET,
        file_path_dentry: NO_OFFSET,
        ns_common_ops: NO_OFFSET,
        proc_ns_ops_type: NO_OFFSET,
        dcache_mounted: DCACHE_MOUNTED_DEFAULT,
        regs_arg: [NO_OFFSET; 6],
        regs_nr: NO_OFFSET,
        binprm_filename: NO_OFFSET,
        nsproxy_field: [NO_OFFSET; ns::COUNT],
        ns_inum: [NO_OFFSET; ns::COUNT],
        nsproxy_span: Span::NONE,
        userns_span: Span::NONE,
        cred_ids_span: Span::NONE,
        fs_root_span: Span::NONE,
        idmap_span: Span::NONE,
    };
}

/// Settings of the programs (the single entry of the CONFIG map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// 1: trace every process; 0: only tracked ones.
    pub trace_all: u32,
    /// Thread-group id whose new child processes become tracked (nstrace
    /// itself when it launches the command; 0 for none).
    pub launcher_pid: u32,
    /// nstrace's own thread-group id.
    pub self_pid: u32,
    /// A syscall that, made by nstrace itself with an fd as first argument,
    /// asks the programs to read that fd's mount into its slot of
    /// MOUNT_PROBE, or with [`WALK_REQUEST`] set in the fd, to list every
    /// mount of that nsfs fd's mount namespace into MOUNT_WALK (0: none).
    /// A rare call that fails harmlessly on an O_PATH fd or a bad fd (syncfs).
    pub probe_nr: u32,
    /// 1: a container runtime ([`role::RUNTIME`]) that starts anywhere
    /// while a tracked container-engine client ([`role::CLIENT`]) runs
    /// becomes tracked, with its descendants.
    pub follow_runtimes: u32,
    /// 1 while nstrace's reader polls the ring buffer (it reads again within
    /// a fraction of a millisecond: an urgent record need not wake it), 0
    /// while it sleeps until woken. Changed at run time.
    pub reader_polling: u32,
    /// nstrace's own mount namespace (inode number; 0 if unknown): an
    /// unshare that copies it and is listed by `new_ns_walk` needs no
    /// wakeup, nstrace builds its table from its own (see
    /// [`SYSCALL_NS_WALKED`]).
    pub own_mnt_ns: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// Bit `nr` set: syscall `nr` is traced (checked before anything else,
    /// so that other syscalls cost one load and a test).
    pub syscalls: [u64; (MAX_SYSCALL_NR / 64) as usize],
    /// Kernel structure offsets.
    pub offsets: Offsets,
}

impl Config {
    /// Whether syscall `nr` is marked in [`Config::syscalls`].
    #[inline(always)]
    pub fn traces_syscall(&self, nr: u64) -> bool {
        nr < MAX_SYSCALL_NR as u64 && self.syscalls[(nr / 64) as usize] & (1 << (nr % 64)) != 0
    }
}

/// Values of the TRACKED map.
pub mod tracked {
    /// A tracked process.
    pub const PROCESS: u8 = 1;
    /// A tracked process running a container-engine client (counted in CLIENTS).
    pub const CLIENT: u8 = 2;
}

/// What a program (by its `comm` after exec) is, in the PROGRAMS map.
pub mod role {
    /// An OCI runtime or the monitor that runs one (runc, crun, conmon, ...).
    pub const RUNTIME: u8 = 1;
    /// A client that asks a daemon to start containers (docker, nerdctl, ...).
    pub const CLIENT: u8 = 2;
}

/// Names of the maps and programs, shared so that neither side misspells them.
pub mod names {
    /// Program roles by `comm` (a 16-byte, NUL-padded key).
    pub const PROGRAMS: &str = "PROGRAMS";
    /// Live tracked client processes (one `i64`).
    pub const CLIENTS: &str = "CLIENTS";
    /// Ring buffer of records.
    pub const EVENTS: &str = "EVENTS";
    /// Tracked thread-group ids.
    pub const TRACKED: &str = "TRACKED";
    /// Per-CPU count of records not yet reported as lost.
    pub const LOST: &str = "LOST";
    /// Mount probe results by fd.
    pub const MOUNT_PROBE: &str = "MOUNT_PROBE";
    /// The last walk of a mount namespace (one [`crate::MountWalk`]).
    pub const MOUNT_WALK: &str = "MOUNT_WALK";
    /// The [`crate::ArgSpec`] table.
    pub const ARG_SPECS: &str = "ARG_SPECS";
    /// The map holding the [`crate::Config`].
    pub const CONFIG: &str = "CONFIG";
    /// `sys_enter` raw tracepoint program.
    pub const PROG_SYS_ENTER: &str = "sys_enter";
    /// `sys_exit` raw tracepoint program.
    pub const PROG_SYS_EXIT: &str = "sys_exit";
    /// Program for the per-syscall `syscalls:sys_enter_*` trace events.
    pub const PROG_SYSCALL_ENTER: &str = "syscall_enter";
    /// Program for the per-syscall `syscalls:sys_exit_*` trace events.
    pub const PROG_SYSCALL_EXIT: &str = "syscall_exit";
    /// `sched_process_fork` raw tracepoint program.
    pub const PROG_FORK: &str = "sched_process_fork";
    /// `sched_process_exec` raw tracepoint program.
    pub const PROG_EXEC: &str = "sched_process_exec";
    /// `cap_capable` raw tracepoint program (optional: not every kernel has it).
    pub const PROG_CAP: &str = "cap_capable";
    /// fexit on `cap_capable` (where the tracepoint is missing).
    pub const PROG_CAP_FEXIT: &str = "cap_capable_fexit";
    /// kprobe on `cap_capable` (where trampolines are refused).
    pub const PROG_CAP_KPROBE: &str = "cap_capable_kprobe";
    /// kretprobe on `cap_capable`.
    pub const PROG_CAP_KRETPROBE: &str = "cap_capable_kretprobe";
    /// `console` (printk) raw tracepoint program.
    pub const PROG_KLOG: &str = "console";
    /// `sched_process_exit` raw tracepoint program.
    pub const PROG_EXIT: &str = "sched_process_exit";
    /// Walk of a mount namespace's tree, on `syscalls:sys_enter_syncfs`.
    pub const PROG_MOUNT_WALK: &str = "mount_walk";
    /// Program array holding [`PROG_MOUNT_WALK`], for its tail calls.
    pub const WALK_PROGS: &str = "WALK_PROGS";
    /// The walk for the raw syscall tracepoints, tail-called by `sys_enter`.
    pub const PROG_MOUNT_WALK_RAW: &str = "mount_walk_raw";
    /// Program array holding [`PROG_MOUNT_WALK_RAW`].
    pub const WALK_PROGS_RAW: &str = "WALK_PROGS_RAW";
    /// The walk on the trampolines: fentry of syncfs's syscall function.
    pub const PROG_MOUNT_WALK_FENTRY: &str = "mount_walk_fentry";
    /// Program array holding [`PROG_MOUNT_WALK_FENTRY`].
    pub const WALK_PROGS_FENTRY: &str = "WALK_PROGS_FENTRY";
    /// Walk of the mount namespace a traced unshare(2) made, on
    /// `syscalls:sys_exit_unshare`, attached before the syscall program.
    pub const PROG_NEW_NS_WALK: &str = "new_ns_walk";
    /// Program array holding [`PROG_NEW_NS_WALK`], for its tail calls.
    pub const NEW_NS_WALK_PROGS: &str = "NEW_NS_WALK_PROGS";
    /// How many fentry/fexit stub pairs the object has for syscall
    /// functions (`sys_fentry_N`, `sys_fexit_N` for N below this).
    pub const SYSCALL_TRAMPOLINES: usize = 16;
    /// The fentry stubs, by slot.
    pub const SYS_FENTRY_STUBS: [&str; SYSCALL_TRAMPOLINES] = [
        "sys_fentry_0",
        "sys_fentry_1",
        "sys_fentry_2",
        "sys_fentry_3",
        "sys_fentry_4",
        "sys_fentry_5",
        "sys_fentry_6",
        "sys_fentry_7",
        "sys_fentry_8",
        "sys_fentry_9",
        "sys_fentry_10",
        "sys_fentry_11",
        "sys_fentry_12",
        "sys_fentry_13",
        "sys_fentry_14",
        "sys_fentry_15",
    ];
    /// The fexit stubs, by slot.
    pub const SYS_FEXIT_STUBS: [&str; SYSCALL_TRAMPOLINES] = [
        "sys_fexit_0",
        "sys_fexit_1",
        "sys_fexit_2",
        "sys_fexit_3",
        "sys_fexit_4",
        "sys_fexit_5",
        "sys_fexit_6",
        "sys_fexit_7",
        "sys_fexit_8",
        "sys_fexit_9",
        "sys_fexit_10",
        "sys_fexit_11",
        "sys_fexit_12",
        "sys_fexit_13",
        "sys_fexit_14",
        "sys_fexit_15",
    ];
    /// The body the fentry stubs tail-call.
    pub const PROG_SYS_FENTRY_BODY: &str = "sys_fentry_body";
    /// The body the fexit stubs tail-call.
    pub const PROG_SYS_FEXIT_BODY: &str = "sys_fexit_body";
    /// Program array holding [`PROG_SYS_FENTRY_BODY`].
    pub const SYS_FENTRY_BODY: &str = "SYS_FENTRY_BODY";
    /// Program array holding [`PROG_SYS_FEXIT_BODY`].
    pub const SYS_FEXIT_BODY: &str = "SYS_FEXIT_BODY";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` data with no padding holes that matter and no pointers.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ArgSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MountProbe {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MountWalk {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_covers_the_known_fields_and_nothing_past_them() {
        // nsproxy on 6.x: count, then eight pointers; time_ns unknown here.
        let fields = [(8, 8), (16, 8), (NO_OFFSET, 8), (64, 8)];
        let nsproxy = Some(Span { start: 8, len: 64 });
        assert_eq!(Span::covering(&fields, SPAN_MAX), nsproxy);
        let ids = Some(Span { start: 20, len: 8 });
        assert_eq!(Span::covering(&[(24, 4), (20, 4)], SMALL_SPAN_MAX), ids);
        let none = Some(Span::NONE);
        assert_eq!(Span::covering(&[(NO_OFFSET, 8)], SPAN_MAX), none);
        assert_eq!(Span::covering(&[], SPAN_MAX), none);
        // Too far apart for one read, or not word-aligned: no span.
        assert_eq!(Span::covering(&fields, SMALL_SPAN_MAX), None);
        assert_eq!(Span::covering(&[(0, 8), (SPAN_MAX, 4)], SPAN_MAX), None);
        assert_eq!(Span::covering(&[(2, 4)], SPAN_MAX), None);
        assert_eq!(Span::covering(&[(NO_OFFSET - 3, 8)], SPAN_MAX), None);
    }

    #[test]
    fn syscall_bitmap() {
        let mut cfg = Config {
            trace_all: 0,
            launcher_pid: 0,
            self_pid: 0,
            probe_nr: 0,
            follow_runtimes: 0,
            reader_polling: 0,
            own_mnt_ns: 0,
            _pad: 0,
            syscalls: [0; (MAX_SYSCALL_NR / 64) as usize],
            offsets: Offsets::UNRESOLVED,
        };
        for nr in [0u32, 63, 64, 165, 511] {
            cfg.syscalls[(nr / 64) as usize] |= 1 << (nr % 64);
        }
        for nr in [0u64, 63, 64, 165, 511] {
            assert!(cfg.traces_syscall(nr), "{nr}");
        }
        for nr in [1u64, 62, 65, 166, 510, 512, u64::MAX] {
            assert!(!cfg.traces_syscall(nr), "{nr}");
        }
    }

    #[test]
    fn id_maps() {
        let init = IdMap {
            nr_extents: 1,
            lower: [0, 0, 0, 0, 0],
            count: [u32::MAX, 0, 0, 0, 0],
        };
        assert_eq!(init.maps(0), Some(true));
        assert_eq!(init.maps(1000), Some(true));
        let unwritten = IdMap::default();
        assert_eq!(unwritten.maps(0), Some(false));
        let one = IdMap {
            nr_extents: 1,
            lower: [1000, 0, 0, 0, 0],
            count: [1, 0, 0, 0, 0],
        };
        assert_eq!(
            (one.maps(1000), one.maps(1001), one.maps(999)),
            (Some(true), Some(false), Some(false))
        );
        let many = IdMap {
            nr_extents: 6,
            ..Default::default()
        };
        assert_eq!(many.maps(0), None);
        let unread = IdMap {
            nr_extents: u32::MAX,
            ..Default::default()
        };
        assert_eq!(unread.maps(0), None);
    }

    #[test]
    fn record_kinds_round_trip() {
        for kind in [
            RecordKind::Syscall,
            RecordKind::Fork,
            RecordKind::Exec,
            RecordKind::Exit,
            RecordKind::Cap,
            RecordKind::Klog,
        ] {
            assert_eq!(RecordKind::from_raw(kind as u32), Some(kind));
        }
        assert_eq!(RecordKind::from_raw(0), None);
    }
}
