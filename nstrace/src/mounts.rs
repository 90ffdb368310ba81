//! Mount tables: `/proc/PID/mountinfo` parsed, and what a copy of a mount
//! namespace into a less privileged user namespace locks.
//!
//! When a mount namespace is copied into one owned by a different user
//! namespace, the kernel locks every mount but the copy's root (MNT_LOCKED)
//! and locks the read-only, nodev, nosuid, noexec and atime flags each mount
//! has (catalogue UN13). mountinfo does not show the locks, so they follow
//! from the copy itself.

use std::fmt::Write as _;

/// Where the table of a new mount namespace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Read from a process in the new namespace (`/proc/PID/mountinfo`),
    /// with the kernel's flags where nstrace could walk the namespace.
    New,
    /// Listed by the kernel as the unshare(2) that made the namespace
    /// returned (ids and flags: the copy as made), each mount paired with
    /// the one of the source namespace it was copied from, whose path,
    /// filesystem and options it has. No process had to be caught alive.
    Creation,
    /// Every process of the new namespace was gone: read from the namespace
    /// it was copied from, as it is now, without the copy's flags.
    Source,
}

impl ReadFrom {
    /// The NDJSON `read_from` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Creation => "creation",
            Self::Source => "source",
        }
    }

    /// The value for an NDJSON `read_from` name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::New, Self::Creation, Self::Source]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount id.
    pub id: u32,
    /// Parent mount id.
    pub parent: u32,
    /// Path inside the filesystem that is mounted (`/` for a whole fs; a
    /// file or directory for a bind mount).
    pub root: String,
    /// Where it is mounted.
    pub mountpoint: String,
    /// Per-mount options (`ro`, `nosuid`, `nodev`, `noexec`, `relatime`, ...).
    pub options: Vec<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// The kernel's own flags for this mount, when nstrace could read them.
    pub kernel: Option<KernelMount>,
}

/// A mount as the kernel itself sees it (read from BPF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelMount {
    /// `vfsmount.mnt_flags`.
    pub flags: u32,
}

impl KernelMount {
    /// MNT_LOCKED: the mount is locked to its parent.
    pub fn locked(&self) -> bool {
        self.flags & nstrace_common::mnt_flags::LOCKED != 0
    }

    /// Names of the MNT_LOCK_* bits set, as in [`Mount::locked_flags`].
    pub fn locks(&self) -> Vec<&'static str> {
        use nstrace_common::mnt_flags as f;
        [
            (f::LOCK_READONLY, "readonly"),
            (f::LOCK_NODEV, "nodev"),
            (f::LOCK_NOSUID, "nosuid"),
            (f::LOCK_NOEXEC, "noexec"),
            (f::LOCK_ATIME, "atime"),
        ]
        .iter()
        .filter(|(bit, _)| self.flags & bit != 0)
        .map(|(_, n)| *n)
        .collect()
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(oct) = s.get(i + 1..i + 4) {
                if let Ok(v) = u8::from_str_radix(oct, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    crate::event::escape_bytes(&out)
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    // Sized up front: growing a vector of mounts by doubling costs the
    // allocator more than the parsing (one table per new mount namespace).
    let mut mounts = Vec::with_capacity(text.bytes().filter(|b| *b == b'\n').count() + 1);
    mounts.extend(text.lines().filter_map(parse_line));
    mounts
}

/// One mountinfo line: `id parent major:minor root mountpoint options
/// [optional fields...] - fstype source super-options`.
fn parse_line(line: &str) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let mut f = pre.split(' ');
    let id = f.next()?.parse().ok()?;
    let parent = f.next()?.parse().ok()?;
    let root = f.nth(1)?;
    let mountpoint = f.next()?;
    let options = f.next()?;
    let mut g = post.split(' ');
    let fstype = g.next()?;
    let source = g.next()?;
    Some(Mount {
        id,
        parent,
        root: unescape(root),
        mountpoint: unescape(mountpoint),
        options: options.split(',').map(String::from).collect(),
        fstype: fstype.to_string(),
        source: unescape(source),
        kernel: None,
    })
}

impl Mount {
    /// The locked flags: the kernel's own when known, else what a copy into
    /// a less privileged user namespace locks (see [`Mount::copy_locks`]).
    pub fn locked_flags(&self) -> Vec<&'static str> {
        match &self.kernel {
            Some(k) => k.locks(),
            None => self.copy_locks(),
        }
    }

    /// Flags a copy into a less privileged user namespace locks on this
    /// mount: `ro`, `nodev`, `nosuid`, `noexec` where set, and the atime mode.
    pub fn copy_locks(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (opt, lock) in [
            ("ro", "readonly"),
            ("nodev", "nodev"),
            ("nosuid", "nosuid"),
            ("noexec", "noexec"),
        ] {
            if self.options.iter().any(|o| o == opt) {
                out.push(lock);
            }
        }
        out.push("atime");
        out
    }

    /// "bind of devtmpfs /null" or "tmpfs" or "proc /sys, read-only".
    pub fn describe(&self) -> String {
        let mut s = self.fstype.clone();
        if self.root != "/" {
            let _ = write!(s, " {} (a bind mount)", self.root);
        }
        if self.options.iter().any(|o| o == "ro") {
            s.push_str(", read-only");
        }
        s
    }

    /// Whether this mount sits below `dir` (a mount point), not at it.
    pub fn is_below(&self, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        self.mountpoint.len() > dir.len() + 1
            && self.mountpoint.starts_with(dir)
            && self.mountpoint.as_bytes()[dir.len()] == b'/'
    }
}

/// The root directory of `pid` (`/proc/PID/root`), for [`open_under`]:
/// opened once for the many mount points of a table.
pub fn root_of(pid: u32) -> Option<std::fs::File> {
    std::fs::File::open(format!("/proc/{pid}/root")).ok()
}

/// Opens `mountpoint` under `root` (a process's, from [`root_of`]: its mount
/// namespace and root), as an O_PATH descriptor resolved with
/// RESOLVE_IN_ROOT (so that symlinks in a container cannot lead the walk
/// outside its root). The last component is not followed.
pub fn open_under(root: &std::fs::File, mountpoint: &str) -> Option<std::os::fd::OwnedFd> {
    path_under(root, mountpoint, false)
}

/// An O_PATH descriptor of absolute `path` inside the root of `pid`
/// (RESOLVE_IN_ROOT), following a final symlink if `follow`.
fn path_in_root(pid: u32, path: &str, follow: bool) -> Option<std::os::fd::OwnedFd> {
    path_under(&root_of(pid)?, path, follow)
}

/// An O_PATH descriptor of absolute `path` under `root`, resolved with
/// RESOLVE_IN_ROOT.
fn path_under(root: &std::fs::File, path: &str, follow: bool) -> Option<std::os::fd::OwnedFd> {
    openat2_path(root, &format!(".{path}"), follow, RESOLVE_IN_ROOT)
}

/// `RESOLVE_BENEATH`: no component may leave the starting directory.
const RESOLVE_BENEATH: u64 = 0x08;
/// `RESOLVE_IN_ROOT`: the starting directory is the root for the walk.
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `openat2(dir, rel, O_PATH, resolve)`.
fn openat2_path(
    dir: &std::fs::File,
    rel: &str,
    follow: bool,
    resolve: u64,
) -> Option<std::os::fd::OwnedFd> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    openat2(dir, rel, libc::O_PATH | nofollow, resolve)
}

/// `openat2(dir, rel, flags | O_CLOEXEC, resolve)`.
fn openat2(
    dir: &std::fs::File,
    rel: &str,
    flags: i32,
    resolve: u64,
) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// struct open_how.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let rel = std::ffi::CString::new(rel).ok()?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: valid dirfd, NUL-terminated path and open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    // SAFETY: a new descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens `path` as process `pid` would resolve it in a path-based call
/// (its root and working directory, following a final symlink), as an
/// O_PATH descriptor. The walk never leaves that process's root.
///
/// `/proc/N/root/...` is followed through process N's root, as the
/// kernel's magic link does, only when the caller's `/proc/N` is the very
/// directory nstrace sees as `/proc/N` (same proc instance, same task);
/// `/proc/self/root/...` is the caller's own root. A relative path with `..` is not resolved (it
/// could climb out of the working directory).
pub fn open_as(pid: u32, path: &str) -> Option<std::os::fd::OwnedFd> {
    if let Some(rest) = path.strip_prefix("/proc/") {
        let (who, rest) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(inside) = rest
            .strip_prefix("root")
            .filter(|r| r.is_empty() || r.starts_with('/'))
        {
            let inside = if inside.is_empty() { "/" } else { inside };
            if who == "self" || who == "thread-self" {
                return open_as(pid, inside);
            }
            let target: u32 = who.parse().ok()?;
            if !same_file(
                open_as(pid, &format!("/proc/{who}"))?,
                &format!("/proc/{target}"),
            ) {
                return None;
            }
            return path_in_root(target, inside, true);
        }
    }
    if path.starts_with('/') {
        path_in_root(pid, path, true)
    } else {
        if path.split('/').any(|c| c == "..") {
            return None;
        }
        let cwd = std::fs::File::open(format!("/proc/{pid}/cwd")).ok()?;
        let rel = if path.is_empty() { "." } else { path };
        openat2_path(&cwd, rel, true, RESOLVE_BENEATH)
    }
}

/// errno of the failures whose path arguments are resolved to mounts.
const EINVAL: i32 = 22;

/// The path arguments of a failed call that name mounts the kernel checked,
/// as (argument, path): for EINVAL from umount2, mount (the source too for
/// bind and move), pivot_root (with `root`, the caller's root directory),
/// move_mount, open_tree and mount_setattr (paths relative to AT_FDCWD
/// only: another dirfd is the caller's, out of reach).
pub fn target_paths(sc: &crate::event::Syscall) -> Vec<(&'static str, String)> {
    use crate::event::ArgValue;
    if sc.errno() != Some(EINVAL) {
        return Vec::new();
    }
    let arg = |name: &str| {
        sc.args.iter().find_map(|(n, v)| match v {
            ArgValue::Str {
                text,
                truncated: false,
            } if *n == name => Some(text.clone()),
            _ => None,
        })
    };
    let at_cwd = |dirfd: &str| {
        sc.args
            .iter()
            .any(|(n, v)| *n == dirfd && matches!(v, ArgValue::Name(x) if x == "AT_FDCWD"))
    };
    let flags = |name: &str| -> Vec<&str> {
        sc.args
            .iter()
            .find_map(|(n, v)| match v {
                ArgValue::Flags(f) if *n == name => Some(f.iter().map(AsRef::as_ref).collect()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let wanted: Vec<(&'static str, Option<String>)> = match &*sc.name {
        "umount2" => vec![("target", arg("target"))],
        "mount" => {
            let f = flags("flags");
            let mut v = vec![("target", arg("target"))];
            if f.contains(&"MS_BIND") || f.contains(&"MS_MOVE") {
                v.push(("source", arg("source")));
            }
            v
        }
        "pivot_root" => vec![
            ("new_root", arg("new_root")),
            ("put_old", arg("put_old")),
            ("root", Some("/".into())),
        ],
        "open_tree" | "open_tree_attr" | "mount_setattr" if at_cwd("dfd") => {
            vec![("path", arg("path"))]
        }
        "move_mount" => {
            let mut v = Vec::new();
            if at_cwd("from_dfd") {
                v.push(("from_path", arg("from_path")));
            }
            if at_cwd("to_dfd") {
                v.push(("to_path", arg("to_path")));
            }
            v
        }
        _ => Vec::new(),
    };
    wanted
        .into_iter()
        .filter_map(|(a, p)| Some((a, p.filter(|p| !p.is_empty())?)))
        .collect()
}

/// Opens file `path` for reading inside the mount namespace and root of
/// `pid` (RESOLVE_IN_ROOT).
pub fn open_as_file(pid: u32, path: &str) -> Option<std::fs::File> {
    let root = std::fs::File::open(format!("/proc/{pid}/root")).ok()?;
    openat2(&root, &format!(".{path}"), libc::O_RDONLY, RESOLVE_IN_ROOT).map(std::fs::File::from)
}

/// Whether `fd` is the file nstrace sees at `path` (same device and inode).
fn same_file(fd: std::os::fd::OwnedFd, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (std::fs::File::from(fd).metadata(), std::fs::metadata(path)) else {
        return false;
    };
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Reads `/proc/PID/mountinfo`; `None` if the process is gone.
pub fn read_mountinfo(pid: u32) -> Option<Vec<Mount>> {
    crate::procfs::with_text(&format!("/proc/{pid}/mountinfo"), parse_mountinfo).ok()
}

/// The mount namespace `pid` is in now.
pub fn mnt_ns_of(pid: u32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// The mount table of a process's namespace, opened for reading while the
/// process lives. The open `mountinfo` holds the namespace, so its mounts
/// stay attached after the process exits (a short-lived command often
/// does, while nstrace reads); `ns`, the namespace's nsfs file opened right
/// after, is what the kernel's view of every mount is read through
/// ([`crate::probes::MountProber::walk`]).
#[derive(Debug)]
pub struct LiveTable {
    mountinfo: std::fs::File,
    /// The namespace (`/proc/PID/ns/mnt`). It holds the namespace and none
    /// of its mounts.
    pub ns: std::fs::File,
    /// The process.
    pid: u32,
}

impl LiveTable {
    /// Opens the table of `pid`'s mount namespace if that is `mnt_ns`;
    /// `None` if it is gone or another. The namespace file is opened and
    /// checked first (its inode number is the namespace's), then the table
    /// opened at once: a process that exits right after is still read.
    /// (fstat of the open file walks no path, as a `readlink` would.)
    pub fn open(pid: u32, mnt_ns: u32) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
        if ns.metadata().ok()?.ino() != u64::from(mnt_ns) {
            return None;
        }
        let mountinfo = std::fs::File::open(format!("/proc/{pid}/mountinfo")).ok()?;
        Some(Self { mountinfo, ns, pid })
    }

    /// The mounts, as the kernel lists them.
    pub fn mounts(&mut self) -> Option<Vec<Mount>> {
        crate::procfs::with_file_text(&mut self.mountinfo, parse_mountinfo).ok()
    }

    /// The process's root directory, for [`open_under`], if it still lives.
    /// Opened only when needed: it holds the root mount.
    pub fn root(&self) -> Option<std::fs::File> {
        root_of(self.pid)
    }
}

/// Gives each mount of `mounts` the kernel's flags of the walked mount with
/// its id (sorting `walked` by id); a mount the walk did not list stays
/// without.
pub fn add_kernel_flags(mounts: &mut [Mount], walked: &mut [nstrace_common::WalkedMount]) {
    walked.sort_unstable_by_key(|w| w.mnt_id);
    for m in mounts {
        if let Ok(i) = walked.binary_search_by_key(&m.id, |w| w.mnt_id) {
            m.kernel = Some(KernelMount {
                flags: walked[i].flags,
            });
        }
    }
}

/// A mount namespace that copies are made from, ready to pair them with:
/// its walk, indexed by what a copy of each mount has, and its table, read
/// together with the walk. See [`CopySource::table_of`].
#[derive(Debug)]
pub struct CopySource {
    /// Its root mount.
    root: nstrace_common::WalkedMount,
    /// Each other mount's id, by its root and mountpoint dentries and its
    /// parent's id.
    originals: std::collections::HashMap<(u64, u64, u32), u32>,
    /// Its table, by mount id.
    lines: std::collections::HashMap<u32, Mount>,
}

impl CopySource {
    /// The source of walk `walk` (depth first, root first) and table
    /// `table`; `None` for an empty walk, or one with two mounts alike
    /// (same dentries, same parent: one shadowing the other), whose copies
    /// could not be told apart.
    pub fn new(walk: &[nstrace_common::WalkedMount], table: &[Mount]) -> Option<Self> {
        use std::collections::hash_map::{Entry, HashMap};
        let root = *walk.first()?;
        let mut originals = HashMap::with_capacity(walk.len());
        for w in &walk[1..] {
            match originals.entry((w.root, w.mountpoint, w.parent_id)) {
                Entry::Vacant(v) => {
                    v.insert(w.mnt_id);
                }
                Entry::Occupied(_) => return None,
            }
        }
        let lines = table.iter().map(|m| (m.id, m.clone())).collect();
        Some(Self {
            root,
            originals,
            lines,
        })
    }

    /// The table of a copy of this namespace, from the kernel's walk of the
    /// copy as it was made (`copy`).
    ///
    /// copy_tree gives each mount it copies the same root dentry as the
    /// original, mounted on the same mountpoint dentry, under the copy of
    /// the original's parent: by those, every mount of the copy is paired
    /// with the mount it was copied from, whose path, filesystem, source
    /// and options it has. Its own id, parent and flags are the walk's.
    /// `None` (and the table is read some other way) unless every mount
    /// pairs, and every paired mount's per-mount options (ro, nosuid,
    /// nodev, noexec, the atime mode, nosymfollow) in the source's table
    /// agree with the copy's flags: a mount remounted or unmounted since
    /// the copy was made does not. Mounts of the walk that the source's
    /// table does not list (out of its reader's root, as the namespace's
    /// root mount often is) are left out, as the copy's own table leaves
    /// them out.
    pub fn table_of(&self, copy: &[nstrace_common::WalkedMount]) -> Option<Vec<Mount>> {
        let copy_root = copy.first()?;
        if copy_root.root != self.root.root {
            return None;
        }
        let mut original_of = std::collections::HashMap::with_capacity(copy.len());
        original_of.insert(copy_root.mnt_id, self.root.mnt_id);
        let mut table = Vec::with_capacity(copy.len());
        for (i, c) in copy.iter().enumerate() {
            let original = if i == 0 {
                self.root.mnt_id
            } else {
                let parent = *original_of.get(&c.parent_id)?;
                let original = *self.originals.get(&(c.root, c.mountpoint, parent))?;
                original_of.insert(c.mnt_id, original);
                original
            };
            let Some(line) = self.lines.get(&original) else {
                continue;
            };
            if option_flags(&line.options) != c.flags & OPTION_BITS {
                return None;
            }
            table.push(Mount {
                id: c.mnt_id,
                parent: c.parent_id,
                kernel: Some(KernelMount { flags: c.flags }),
                ..line.clone()
            });
        }
        Some(table)
    }
}

/// The `mnt_flags` bits mountinfo's per-mount options show.
const OPTION_BITS: u32 = {
    let mut bits = 0;
    let mut i = 0;
    while i < nstrace_common::mnt_flags::OPTIONS.len() {
        bits |= nstrace_common::mnt_flags::OPTIONS[i].1;
        i += 1;
    }
    bits
};

/// The `mnt_flags` bits of mountinfo per-mount options `options`.
fn option_flags(options: &[String]) -> u32 {
    nstrace_common::mnt_flags::OPTIONS
        .iter()
        .filter(|(word, _)| options.iter().any(|o| o == word))
        .fold(0, |bits, (_, bit)| bits | bit)
}

/// The mount table of nstrace's own mount namespace, read again only when
/// the kernel says it changed: `/proc/self/mountinfo` polls with
/// `POLLPRI | POLLERR` after any mount or unmount in the namespace since the
/// last poll (the kernel's per-open event counter). Most new namespaces are
/// copies of the one nstrace runs in, and a copy whose processes are gone is
/// read through it; this saves generating and parsing the same text each
/// time.
#[derive(Debug)]
pub struct OwnTable {
    file: std::fs::File,
    mounts: std::sync::Arc<[Mount]>,
    /// Times the table was read: what tells a walk of the namespace made
    /// along with one reading from a stale one.
    generation: u64,
    /// The namespace (`/proc/self/ns/mnt`), to walk it.
    pub ns: std::fs::File,
}

impl OwnTable {
    /// Opens and reads `/proc/self/mountinfo`.
    pub fn open() -> std::io::Result<Self> {
        let file = std::fs::File::open("/proc/self/mountinfo")?;
        let mut table = Self {
            file,
            mounts: std::sync::Arc::from([]),
            generation: 0,
            ns: std::fs::File::open("/proc/self/ns/mnt")?,
        };
        table.reread()?;
        Ok(table)
    }

    /// The table as it is now (shared: the same until the namespace
    /// changes).
    pub fn current(&mut self) -> std::io::Result<std::sync::Arc<[Mount]>> {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0 {
            self.reread()?;
        }
        Ok(std::sync::Arc::clone(&self.mounts))
    }

    fn reread(&mut self) -> std::io::Result<()> {
        use std::io::Seek;
        self.file.rewind()?;
        self.mounts = crate::procfs::with_file_text(&mut self.file, parse_mountinfo)?.into();
        self.generation += 1;
        Ok(())
    }

    /// How many times the table was read (see [`Self::current`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The mounts that hide parts of the `fstype` mounts (proc, sysfs) of a
/// table: mounts on top of paths below them. These are what make a new
/// mount of that type "too revealing" once they are locked.
pub fn masking_mounts<'a>(mounts: &'a [Mount], fstype: &str) -> Vec<&'a Mount> {
    let roots: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.fstype == fstype && m.root == "/")
        .collect();
    mounts
        .iter()
        .filter(|m| roots.iter().any(|r| m.is_below(&r.mountpoint)))
        .collect()
}

/// What to snapshot after an event: the mount table of a mount namespace
/// the event just created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// A process in the new namespace.
    pub pid: u32,
    /// The new mount namespace.
    pub mnt_ns: u32,
    /// Its owning user namespace.
    pub user_ns: u32,
    /// Whether the copy crossed into a different user namespace (locking).
    pub locked: bool,
    /// The event that created it.
    pub created_by: u64,
    /// The mount namespace it was copied from.
    pub source_mnt: u32,
}

/// Whether `ann` created a mount namespace whose table should be recorded.
pub fn snapshot_request(ann: &crate::model::Annotated) -> Option<SnapshotRequest> {
    use crate::event::EventKind;
    use nstrace_common::ns;
    let ev = &ann.event;
    let new_mnt = ann
        .ns_changes
        .iter()
        .find(|c| c.kind == "mnt" && c.first_seen)?;
    let user_changed = ann.ns_changes.iter().any(|c| c.kind == "user");
    let (user_ns, locked) = match &ev.kind {
        EventKind::Syscall(sc) if sc.name == "unshare" && sc.errno().is_none() => {
            let user_ns = sc.ns.inum[ns::USER];
            (user_ns, user_changed || sc.state.mntns_owner != user_ns)
        }
        // A child born into a new mount namespace (clone/clone3).
        EventKind::Fork { ns: child, .. } => (child.inum[ns::USER], user_changed),
        _ => return None,
    };
    Some(SnapshotRequest {
        pid: ev.pid,
        mnt_ns: new_mnt.to,
        user_ns,
        locked,
        created_by: ev.seq,
        source_mnt: new_mnt.from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nstrace_common::WalkedMount;

    const DOCKER_LIKE: &str = "\
600 500 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l
601 600 0:51 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
602 601 0:52 / /proc/acpi ro,relatime - tmpfs tmpfs ro
603 601 0:5 /null /proc/keys rw,nosuid - devtmpfs udev rw,size=10m
604 601 0:51 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
605 600 0:53 / /dev rw,nosuid - tmpfs tmpfs rw
606 600 0:54 / /my\\040dir rw - tmpfs tmpfs rw
";

    fn failed(
        name: &'static str,
        args: Vec<(&'static str, crate::event::ArgValue)>,
        errno: i64,
    ) -> crate::event::Syscall {
        crate::event::Syscall {
            name: name.into(),
            nr: 0,
            args,
            ret: -errno,
            ns: nstrace_common::NsIds::default(),
            ns_before: None,
            duration_ns: 0,
            no_entry: false,
            cap_repeats: 0,
            ret_kind: crate::syscalls::RetKind::Status,
            state: nstrace_common::TaskState::default(),
            fd_ns: None,
            targets: Vec::new(),
        }
    }

    #[test]
    fn target_paths_of_failed_calls() {
        use crate::event::ArgValue;
        let s = |t: &str| ArgValue::Str {
            text: t.into(),
            truncated: false,
        };
        let f = |v: &[&str]| ArgValue::Flags(v.iter().map(|x| x.to_string().into()).collect());
        let pivot = failed(
            "pivot_root",
            vec![("new_root", s(".")), ("put_old", s("."))],
            22,
        );
        assert_eq!(
            target_paths(&pivot),
            vec![
                ("new_root", ".".to_string()),
                ("put_old", ".".to_string()),
                ("root", "/".to_string())
            ]
        );
        let bind = vec![
            ("source", s("/a")),
            ("target", s("/b")),
            ("fstype", ArgValue::Null),
            ("flags", f(&["MS_BIND"])),
        ];
        assert_eq!(target_paths(&failed("mount", bind.clone(), 22)).len(), 2);
        // Only EINVAL; a new mount's source is not a path.
        assert!(target_paths(&failed("mount", bind, 1)).is_empty());
        let new = vec![
            ("source", s("proc")),
            ("target", s("/proc")),
            ("flags", f(&[])),
        ];
        assert_eq!(
            target_paths(&failed("mount", new, 22)),
            vec![("target", "/proc".to_string())]
        );
        // A dirfd other than AT_FDCWD is the caller's: not resolved.
        let setattr = |dfd: ArgValue| {
            failed(
                "mount_setattr",
                vec![("dfd", dfd), ("path", s("/m")), ("flags", f(&[]))],
                22,
            )
        };
        assert_eq!(
            target_paths(&setattr(ArgValue::Name("AT_FDCWD".into()))).len(),
            1
        );
        assert!(target_paths(&setattr(ArgValue::Int(5))).is_empty());
        // A truncated path is not the real one.
        let cut = failed(
            "umount2",
            vec![(
                "target",
                ArgValue::Str {
                    text: "/x".into(),
                    truncated: true,
                },
            )],
            22,
        );
        assert!(target_paths(&cut).is_empty());
    }

    #[test]
    fn parses_mountinfo_with_escapes() {
        let m = parse_mountinfo(DOCKER_LIKE);
        assert_eq!(m.len(), 7);
        assert_eq!(m[3].mountpoint, "/proc/keys");
        assert_eq!(m[3].root, "/null");
        assert_eq!(m[3].fstype, "devtmpfs");
        assert_eq!(m[6].mountpoint, "/my dir");
        assert!(parse_mountinfo("garbage\n1 2 3\n").is_empty());
    }

    #[test]
    fn optional_fields_are_skipped() {
        let m = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt/a rw,noatime master:1 shared:7 - ext3 /dev/root rw\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].id, m[0].parent), (36, 35));
        assert_eq!(
            (m[0].root.as_str(), m[0].mountpoint.as_str()),
            ("/mnt1", "/mnt/a")
        );
        assert_eq!(m[0].options, ["rw", "noatime"]);
        assert_eq!(
            (m[0].fstype.as_str(), m[0].source.as_str()),
            ("ext3", "/dev/root")
        );
    }

    #[test]
    fn masking_mounts_are_those_below_proc() {
        let m = parse_mountinfo(DOCKER_LIKE);
        let masks: Vec<&str> = masking_mounts(&m, "proc")
            .iter()
            .map(|m| m.mountpoint.as_str())
            .collect();
        assert_eq!(masks, ["/proc/acpi", "/proc/keys", "/proc/sys"]);
        assert!(masking_mounts(&m, "sysfs").is_empty());
    }

    /// DOCKER_LIKE as the kernel walks it (depth first from its root mount
    /// 500, which the table does not show), with made-up dentry addresses;
    /// and a copy of it with ids from `first` on, made with `extra` flags.
    fn walks_of_docker_like(first: u32, extra: u32) -> (Vec<WalkedMount>, Vec<WalkedMount>) {
        let table = parse_mountinfo(DOCKER_LIKE);
        let order = [
            (500, 500),
            (600, 500),
            (601, 600),
            (602, 601),
            (603, 601),
            (604, 601),
            (605, 600),
            (606, 600),
        ];
        let flags_of = |id| {
            table
                .iter()
                .find(|m| m.id == id)
                .map_or(0, |m| option_flags(&m.options))
        };
        let source: Vec<WalkedMount> = order
            .iter()
            .map(|&(id, parent)| WalkedMount {
                mnt_id: id,
                parent_id: parent,
                flags: flags_of(id),
                root: 0x1000 + u64::from(id),
                mountpoint: if id == 500 {
                    0x1000 + 500
                } else {
                    0x2000 + u64::from(id)
                },
                _pad: 0,
            })
            .collect();
        let new_id = |id: u32| first + order.iter().position(|(i, _)| *i == id).unwrap() as u32;
        let copy = source
            .iter()
            .map(|w| WalkedMount {
                mnt_id: new_id(w.mnt_id),
                parent_id: new_id(w.parent_id),
                flags: w.flags | extra,
                ..*w
            })
            .collect();
        (source, copy)
    }

    #[test]
    fn a_copy_is_paired_with_its_source_by_dentries_and_parents() {
        use nstrace_common::mnt_flags::LOCKED;
        let source = parse_mountinfo(DOCKER_LIKE);
        let (source_walk, copy) = walks_of_docker_like(800, LOCKED);
        let table = CopySource::new(&source_walk, &source)
            .and_then(|s| s.table_of(&copy))
            .expect("pairs");
        // The copy's ids, parents and flags; the source's paths and options;
        // the root mount 800 left out, as the table leaves 500 out.
        let got: Vec<(u32, u32, &str, Option<u32>)> = table
            .iter()
            .map(|m| {
                (
                    m.id,
                    m.parent,
                    m.mountpoint.as_str(),
                    m.kernel.map(|k| k.flags & LOCKED),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (801, 800, "/", Some(LOCKED)),
                (802, 801, "/proc", Some(LOCKED)),
                (803, 802, "/proc/acpi", Some(LOCKED)),
                (804, 802, "/proc/keys", Some(LOCKED)),
                (805, 802, "/proc/sys", Some(LOCKED)),
                (806, 801, "/dev", Some(LOCKED)),
                (807, 801, "/my dir", Some(LOCKED)),
            ]
        );
        for (m, s) in table.iter().zip(&source) {
            assert_eq!(
                (&m.root, &m.options, &m.fstype, &m.source),
                (&s.root, &s.options, &s.fstype, &s.source)
            );
        }
    }

    /// [`CopySource::table_of`] of `copy` against a source.
    fn copy_table(
        copy: &[WalkedMount],
        walk: &[WalkedMount],
        table: &[Mount],
    ) -> Option<Vec<Mount>> {
        CopySource::new(walk, table)?.table_of(copy)
    }

    #[test]
    fn a_copy_that_does_not_pair_exactly_has_no_table() {
        let source = parse_mountinfo(DOCKER_LIKE);
        let (source_walk, copy) = walks_of_docker_like(800, 0);
        assert!(copy_table(&copy, &source_walk, &source).is_some());
        // A mount the source no longer has (unmounted since the copy).
        let gone: Vec<WalkedMount> = source_walk
            .iter()
            .copied()
            .filter(|w| w.mnt_id != 603)
            .collect();
        assert_eq!(copy_table(&copy, &gone, &source), None);
        // A mount of the source remounted read-only since the copy.
        let mut remounted = source.clone();
        remounted[5].options = vec!["ro".into(), "nosuid".into()];
        assert_eq!(copy_table(&copy, &source_walk, &remounted), None);
        // Two source mounts alike (same dentries, same parent): no sure pair.
        let mut twins = source_walk.clone();
        twins[7].root = twins[6].root;
        twins[7].mountpoint = twins[6].mountpoint;
        assert_eq!(copy_table(&copy, &twins, &source), None);
        // A copy of another tree.
        let mut other = copy.clone();
        other[0].root += 1;
        assert_eq!(copy_table(&other, &source_walk, &source), None);
        assert_eq!(copy_table(&[], &source_walk, &source), None);
    }

    #[test]
    fn option_words_are_the_kernels_per_mount_flags() {
        assert_eq!(option_flags(&["rw".into(), "relatime".into()]), 0x20);
        assert_eq!(
            option_flags(&[
                "ro".into(),
                "nosuid".into(),
                "nodev".into(),
                "noexec".into()
            ]),
            0x47
        );
        assert_eq!(OPTION_BITS, 0xff);
    }

    #[test]
    fn walked_flags_go_to_the_mounts_with_their_ids() {
        use nstrace_common::WalkedMount;
        let mut mounts = parse_mountinfo(DOCKER_LIKE);
        // In the kernel's depth-first order, with one mount the table does
        // not have (made after it was read) and without 606 (gone since).
        let mut walked = [600, 605, 601, 604, 603, 602, 700, 599]
            .map(|id| WalkedMount {
                mnt_id: id,
                flags: id * 2,
                ..WalkedMount::default()
            })
            .to_vec();
        add_kernel_flags(&mut mounts, &mut walked);
        let got: Vec<(u32, Option<u32>)> = mounts
            .iter()
            .map(|m| (m.id, m.kernel.map(|k| k.flags)))
            .collect();
        assert_eq!(
            got,
            [
                (600, Some(1200)),
                (601, Some(1202)),
                (602, Some(1204)),
                (603, Some(1206)),
                (604, Some(1208)),
                (605, Some(1210)),
                (606, None),
            ]
        );
    }

    #[test]
    fn descriptions_and_locked_flags() {
        let m = parse_mountinfo(DOCKER_LIKE);
        assert_eq!(m[3].describe(), "devtmpfs /null (a bind mount)");
        assert_eq!(m[4].describe(), "proc /sys (a bind mount), read-only");
        assert_eq!(
            m[4].locked_flags(),
            ["readonly", "nodev", "nosuid", "noexec", "atime"]
        );
        assert_eq!(m[5].locked_flags(), ["nosuid", "atime"]);
        // The kernel's own flags win over what the copy implies.
        let mut k = m[5].clone();
        k.kernel = Some(KernelMount {
            flags: nstrace_common::mnt_flags::LOCKED | nstrace_common::mnt_flags::LOCK_ATIME,
        });
        assert!(k.kernel.unwrap().locked());
        assert_eq!(k.locked_flags(), ["atime"]);
        assert!(!m[1].is_below("/proc"));
        assert!(m[2].is_below("/proc"));
        assert!(!m[2].is_below("/pro"));
    }
}
