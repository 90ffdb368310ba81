//! Kernel structure offsets from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), handed to the BPF programs at load time so
//! that they read the right fields on any kernel without CO-RE.

use std::hash::Hasher;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
use nstrace_common::{ns, Offsets, Span, NO_OFFSET, SMALL_SPAN_MAX, SPAN_MAX};
use thiserror::Error;

/// Where the kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where a syscall argument lives in `struct pt_regs`.
enum Reg {
    /// A named field.
    Named(&'static str),
    /// An element of an array field (arm64's `regs[]`).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    Indexed(&'static str, u32),
}

/// The registers of syscall arguments 1..6.
#[cfg(target_arch = "x86_64")]
const SYSCALL_ARG_REGS: [Reg; 6] = [
    Reg::Named("di"),
    Reg::Named("si"),
    Reg::Named("dx"),
    Reg::Named("r10"),
    Reg::Named("r8"),
    Reg::Named("r9"),
];
/// The field holding the syscall number (kept even when seccomp skips the call).
#[cfg(target_arch = "x86_64")]
const SYSCALL_NR_REG: &str = "orig_ax";

/// The registers of syscall arguments 1..6.
#[cfg(target_arch = "aarch64")]
const SYSCALL_ARG_REGS: [Reg; 6] = [
    Reg::Indexed("regs", 0),
    Reg::Indexed("regs", 1),
    Reg::Indexed("regs", 2),
    Reg::Indexed("regs", 3),
    Reg::Indexed("regs", 4),
    Reg::Indexed("regs", 5),
];
/// The field holding the syscall number.
#[cfg(target_arch = "aarch64")]
const SYSCALL_NR_REG: &str = "syscallno";

/// The `pt_regs` offsets of the syscall arguments and number, from the
/// architecture's user ABI, for when BTF cannot say.
#[cfg(target_arch = "x86_64")]
pub fn abi_syscall_regs() -> ([u32; 6], u32) {
    // arch/x86/include/uapi/asm/ptrace.h: di 112, si 104, dx 96, r10 56,
    // r8 72, r9 64, orig_ax 120.
    ([112, 104, 96, 56, 72, 64], 120)
}

/// The `pt_regs` offsets of the syscall arguments and number, from the
/// architecture's user ABI, for when BTF cannot say.
#[cfg(target_arch = "aarch64")]
pub fn abi_syscall_regs() -> ([u32; 6], u32) {
    // struct pt_regs starts with user_pt_regs (regs[31], sp, pc, pstate),
    // then orig_x0 (272) and syscallno (280).
    ([0, 8, 16, 24, 32, 40], 280)
}

/// Failure to use the kernel's BTF.
#[derive(Debug, Error)]
pub enum BtfError {
    /// The file is missing or unreadable.
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Open {
        /// The path tried.
        path: String,
        /// Why.
        source: btf_rs::Error,
    },
}

/// Where resolved offsets are cached (`NSTRACE_CACHE_DIR` overrides it).
pub const CACHE_DIR: &str = "/var/cache/nstrace";

/// First line of a cache file; a new layout gets a new version.
const CACHE_MAGIC: &[u8; 16] = b"nstrace-offs-v2\n";

/// The offsets the programs need, from the BTF at `path`, through a cache.
///
/// Parsing all of vmlinux BTF costs most of nstrace's start-up (about 0.2 s),
/// and its result only depends on the BTF. So the result is stored under
/// [`CACHE_DIR`] keyed by the identity of that file in this boot (and of
/// this build of nstrace and the size of [`Offsets`]; see `cache_key`). A cache file is used only if it is a
/// regular file owned by root (or by us) that nobody else can write, with the
/// right magic, key and length; anything else is ignored and rewritten. A
/// cache that cannot be written is no error: the offsets are then resolved
/// each time.
pub fn offsets_cached(path: &Path) -> Result<(Offsets, Vec<String>), BtfError> {
    let dir = std::env::var_os("NSTRACE_CACHE_DIR")
        .map_or_else(|| PathBuf::from(CACHE_DIR), PathBuf::from);
    offsets_cached_in(path, &dir)
}

/// [`offsets_cached`] with the cache in `dir`.
fn offsets_cached_in(path: &Path, dir: &Path) -> Result<(Offsets, Vec<String>), BtfError> {
    let open_err = |source: btf_rs::Error| BtfError::Open {
        path: path.display().to_string(),
        source,
    };
    let key = cache_key(path);
    let file = key.map(|k| (k, dir.join(format!("offsets-{k:016x}"))));
    if let Some(hit) = file.as_ref().and_then(|(k, f)| read_cache(f, *k)) {
        return Ok(hit);
    }
    // Mapped where the kernel allows it (its BTF file is mappable since
    // 6.16): only the types looked up are parsed. Else parsed whole, read
    // through a buffer rather than copied in memory first: on a cache miss
    // this is nstrace's peak memory.
    let btf = Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
        .or_else(|_| Btf::from_file(path))
        .map_err(open_err)?;
    let resolved = KernelBtf { btf }.offsets();
    if let Some((k, f)) = &file {
        write_cache(dir, f, *k, &resolved);
    }
    Ok(resolved)
}

/// A hash identifying the BTF at `path`, this nstrace binary and the layout
/// of [`Offsets`], from metadata only (reading and hashing 5 MB of BTF and
/// the binary cost more than the rest of the lookup): this boot's id (the
/// running kernel's BTF cannot change until the next boot) and the device,
/// inode, size and modification time of both files. `None` if any is
/// unreadable: no cache then.
fn cache_key(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    // SipHash with fixed keys: stable across runs of the same build, which
    // is all the key needs.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    h.write(
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()?
            .as_bytes(),
    );
    for file in [path, Path::new("/proc/self/exe")] {
        let m = std::fs::metadata(file).ok()?;
        for v in [m.dev(), m.ino(), m.size()] {
            h.write_u64(v);
        }
        h.write_i64(m.mtime());
        h.write_i64(m.mtime_nsec());
    }
    h.write_usize(std::mem::size_of::<Offsets>());
    Some(h.finish())
}

fn offsets_bytes(o: &Offsets) -> &[u8] {
    // SAFETY: Offsets is #[repr(C)] and made of u32s only (no padding).
    unsafe {
        std::slice::from_raw_parts(
            (o as *const Offsets).cast::<u8>(),
            std::mem::size_of::<Offsets>(),
        )
    }
}

fn read_cache(file: &Path, key: u64) -> Option<(Offsets, Vec<String>)> {
    let meta = std::fs::symlink_metadata(file).ok()?;
    // SAFETY: plain syscall without arguments.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file()
        || (meta.uid() != 0 && meta.uid() != me)
        || meta.mode() & 0o022 != 0
    {
        return None;
    }
    let data = std::fs::read(file).ok()?;
    let rest = data.strip_prefix(CACHE_MAGIC.as_slice())?;
    let (k, rest) = rest.split_first_chunk::<8>()?;
    if u64::from_le_bytes(*k) != key {
        return None;
    }
    let size = std::mem::size_of::<Offsets>();
    if rest.len() < size {
        return None;
    }
    let (raw, missing) = rest.split_at(size);
    // SAFETY: the length is checked, and any bit pattern is a valid Offsets
    // (u32s only); read_unaligned copes with the Vec's alignment.
    let offsets = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<Offsets>()) };
    let missing = std::str::from_utf8(missing).ok()?;
    Some((offsets, missing.lines().map(String::from).collect()))
}

fn write_cache(dir: &Path, file: &Path, key: u64, (offsets, missing): &(Offsets, Vec<String>)) {
    let mut data = CACHE_MAGIC.to_vec();
    data.extend_from_slice(&key.to_le_bytes());
    data.extend_from_slice(offsets_bytes(offsets));
    for m in missing {
        data.extend_from_slice(m.as_bytes());
        data.push(b'\n');
    }
    // Write a private temporary file, then rename it into place, so that a
    // reader never sees half a file.
    let tmp = dir.join(format!(".offsets-{key:016x}.{}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?
                .write_all(&data)
        })
        .and_then(|()| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The running kernel's type information.
pub struct KernelBtf {
    btf: Btf,
}

/// A member found in a struct: byte offset and type.
struct Found {
    offset: u32,
    ty: Type,
}

impl KernelBtf {
    /// Opens the BTF at `path` (normally [`VMLINUX_BTF`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let btf = Btf::from_file(path).map_err(|source| BtfError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// The struct (or union) named `name` that has members (skipping forward declarations).
    fn struct_named(&self, name: &str) -> Option<btf_rs::Struct> {
        self.btf
            .resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
    }

    /// Strips typedefs and qualifiers.
    fn strip(&self, mut ty: Type) -> Option<Type> {
        for _ in 0..16 {
            let next = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::Const(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::Volatile(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::Restrict(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::TypeTag(t) => self.btf.resolve_chained_type(t).ok()?,
                _ => return Some(ty),
            };
            ty = next;
        }
        None
    }

    /// Finds member `name` in `s`, looking inside anonymous struct/union members.
    fn member(&self, s: &btf_rs::Struct, name: &str) -> Option<Found> {
        for m in &s.members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let offset = m.bit_offset() / 8;
            if mname == name {
                let ty = self.strip(self.btf.resolve_chained_type(m).ok()?)?;
                return Some(Found { offset, ty });
            }
            if mname.is_empty() {
                if let Some(Type::Struct(inner) | Type::Union(inner)) = self
                    .btf
                    .resolve_chained_type(m)
                    .ok()
                    .and_then(|t| self.strip(t))
                {
                    if let Some(found) = self.member(&inner, name) {
                        return Some(Found {
                            offset: offset + found.offset,
                            ty: found.ty,
                        });
                    }
                }
            }
        }
        None
    }

    /// Byte offset of a dotted member path (`"ns.inum"`) in struct `strukt`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Option<u32> {
        let mut s = self.struct_named(strukt)?;
        let mut total = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let found = self.member(&s, part)?;
            total += found.offset;
            if parts.peek().is_some() {
                s = match found.ty {
                    Type::Struct(inner) | Type::Union(inner) => inner,
                    _ => return None,
                };
            }
        }
        Some(total)
    }

    /// Value of enumerator `name`, looked up in the enums named `enums`
    /// (an anonymous enum cannot be found this way).
    pub fn enum_value(&self, name: &str, enums: &[&str]) -> Option<u32> {
        enums.iter().find_map(|e| {
            self.btf
                .resolve_types_by_name(e)
                .ok()?
                .into_iter()
                .find_map(|t| match t {
                    Type::Enum(en) => en
                        .members
                        .iter()
                        .find_map(|m| (self.btf.resolve_name(m).ok()? == name).then(|| m.val())),
                    _ => None,
                })
        })
    }

    /// Size in bytes of struct `name`.
    pub fn size_of(&self, name: &str) -> Option<u32> {
        self.struct_named(name).map(|s| s.size() as u32)
    }

    /// Resolves every offset the programs use. Fields this kernel lacks stay
    /// [`NO_OFFSET`] and are listed in the second value.
    pub fn offsets(&self) -> (Offsets, Vec<String>) {
        let mut missing = Vec::new();
        let mut get = |strukt: &str, path: &str| {
            self.offset_of(strukt, path).unwrap_or_else(|| {
                missing.push(format!("{strukt}.{path}"));
                NO_OFFSET
            })
        };
        let mut o = Offsets::UNRESOLVED;
        o.task_tgid = get("task_struct", "tgid");
        o.task_pid = get("task_struct", "pid");
        o.task_real_parent = get("task_struct", "real_parent");
        o.task_nsproxy = get("task_struct", "nsproxy");
        o.task_real_cred = get("task_struct", "real_cred");
        o.task_thread_pid = get("task_struct", "thread_pid");
        o.task_mm = get("task_struct", "mm");
        o.task_exit_code = get("task_struct", "exit_code");
        o.task_signal = get("task_struct", "signal");
        o.signal_live = get("signal_struct", "live");
        o.cred_user_ns = get("cred", "user_ns");
        o.pid_level = get("pid", "level");
        o.pid_numbers = get("pid", "numbers");
        o.upid_ns = get("upid", "ns");
        o.mm_arg_start = get("mm_struct", "arg_start");
        o.mm_arg_end = get("mm_struct", "arg_end");
        o.binprm_filename = get("linux_binprm", "filename");
        o.signal_nr_threads = get("signal_struct", "nr_threads");
        o.task_seccomp_mode = get("task_struct", "seccomp.mode");
        o.cred_euid = get("cred", "euid");
        o.userns_level = get("user_namespace", "level");
        o.userns_owner = get("user_namespace", "owner");
        o.userns_parent = get("user_namespace", "parent");
        o.mntns_user_ns = get("mnt_namespace", "user_ns");
        o.pidns_user_ns = get("pid_namespace", "user_ns");
        o.pidns_level = get("pid_namespace", "level");
        o.netns_user_ns = get("net", "user_ns");
        o.cred_egid = get("cred", "egid");
        o.userns_uid_map = get("user_namespace", "uid_map");
        o.userns_gid_map = get("user_namespace", "gid_map");
        o.idmap_nr_extents = get("uid_gid_map", "nr_extents");
        o.idmap_extent = get("uid_gid_map", "extent");
        o.extent_lower_first = get("uid_gid_extent", "lower_first");
        o.extent_count = get("uid_gid_extent", "count");
        o.task_files = get("task_struct", "files");
        o.files_fdt = get("files_struct", "fdt");
        o.fdtable_max_fds = get("fdtable", "max_fds");
        o.fdtable_fd = get("fdtable", "fd");
        o.file_path_mnt = get("file", "f_path.mnt");
        o.vfsmount_flags = get("vfsmount", "mnt_flags");
        o.mount_mnt = get("mount", "mnt");
        o.mount_id = get("mount", "mnt_id");
        o.file_inode = get("file", "f_inode");
        o.inode_ino = get("inode", "i_ino");
        o.inode_sb = get("inode", "i_sb");
        o.sb_magic = get("super_block", "s_magic");
        o.inode_private = get("inode", "i_private");
        o.pidns_ns = get("pid_namespace", "ns");
        o.userns_ns = get("user_namespace", "ns");
        o.task_fs = get("task_struct", "fs");
        o.fs_root_mnt = get("fs_struct", "root.mnt");
        o.fs_root_dentry = get("fs_struct", "root.dentry");
        o.vfsmount_root = get("vfsmount", "mnt_root");
        o.mount_parent = get("mount", "mnt_parent");
        o.mount_mountpoint = get("mount", "mnt_mountpoint");
        o.mount_ns = get("mount", "mnt_ns");
        o.mntns_root = get("mnt_namespace", "root");
        o.mntns_ns = get("mnt_namespace", "ns");
        o.mount_mounts = get("mount", "mnt_mounts");
        o.mount_child = get("mount", "mnt_child");
        o.dentry_flags = get("dentry", "d_flags");
        o.file_path_dentry = get("file", "f_path.dentry");
        // Propagation moved from mnt_flags (MNT_SHARED) to mnt_t_flags in 6.15.
        o.mount_t_flags = self.offset_of("mount", "mnt_t_flags").unwrap_or(NO_OFFSET);
        // d_flags became an enum (visible in BTF) in 6.15; before, a #define.
        if let Some(v) = self.enum_value("DCACHE_MOUNTED", &["dentry_flags"]) {
            o.dcache_mounted = v;
        }
        // ns_common.ns_type is new (6.18); older kernels name the type in
        // ns->ops->type, which the programs read when ns_type is missing.
        o.ns_common_type = self.offset_of("ns_common", "ns_type").unwrap_or(NO_OFFSET);
        if o.ns_common_type == NO_OFFSET {
            o.ns_common_ops = get("ns_common", "ops");
            o.proc_ns_ops_type = get("proc_ns_operations", "type");
        }
        let mut regs_ok = true;
        for (i, reg) in SYSCALL_ARG_REGS.iter().enumerate() {
            let off = match reg {
                Reg::Named(name) => self.offset_of("pt_regs", name),
                Reg::Indexed(array, index) => self
                    .offset_of("pt_regs", array)
                    .map(|base| base + 8 * index),
            };
            regs_ok &= off.is_some();
            o.regs_arg[i] = off.unwrap_or(NO_OFFSET);
        }
        let nr = self.offset_of("pt_regs", SYSCALL_NR_REG);
        regs_ok &= nr.is_some();
        o.regs_nr = nr.unwrap_or(NO_OFFSET);
        if !regs_ok {
            // pt_regs is user ABI (the ptrace register layout): its offsets
            // do not depend on the kernel build.
            (o.regs_arg, o.regs_nr) = abi_syscall_regs();
        }
        // (slot, nsproxy field, namespace struct)
        let table: [(usize, Option<&str>, &str); ns::COUNT] = [
            (ns::USER, None, "user_namespace"),
            (ns::MNT, Some("mnt_ns"), "mnt_namespace"),
            (ns::PID, None, "pid_namespace"),
            (ns::NET, Some("net_ns"), "net"),
            (ns::UTS, Some("uts_ns"), "uts_namespace"),
            (ns::IPC, Some("ipc_ns"), "ipc_namespace"),
            (ns::CGROUP, Some("cgroup_ns"), "cgroup_namespace"),
            (ns::TIME, Some("time_ns"), "time_namespace"),
            (
                ns::PID_FOR_CHILDREN,
                Some("pid_ns_for_children"),
                "pid_namespace",
            ),
            (
                ns::TIME_FOR_CHILDREN,
                Some("time_ns_for_children"),
                "time_namespace",
            ),
        ];
        for (slot, field, strukt) in table {
            if let Some(field) = field {
                o.nsproxy_field[slot] = get("nsproxy", field);
            }
            o.ns_inum[slot] = get(strukt, "ns.inum");
        }
        o.idmap_extent_size = self.size_of("uid_gid_extent").unwrap_or_else(|| {
            missing.push("sizeof(struct uid_gid_extent)".into());
            NO_OFFSET
        });
        o.upid_size = self.size_of("upid").unwrap_or_else(|| {
            missing.push("sizeof(struct upid)".into());
            NO_OFFSET
        });
        spans(&mut o, &mut missing);
        (o, missing)
    }
}

/// Sets the [`Span`]s through which the programs copy neighbouring fields
/// in one read. Where a kernel's fields lie too far apart for one, those
/// fields are listed missing (the programs then read them as zero) rather
/// than read in a way no kernel was tested with.
fn spans(o: &mut Offsets, missing: &mut Vec<String>) {
    let extents = if o.idmap_extent_size == NO_OFFSET || o.idmap_extent == NO_OFFSET {
        (NO_OFFSET, 0)
    } else {
        (o.idmap_extent, 5 * o.idmap_extent_size)
    };
    let nsproxy: Vec<(u32, u32)> = o.nsproxy_field.iter().map(|&f| (f, 8)).collect();
    let mut span = |name: &str, max: u32, fields: &[(u32, u32)], offsets: &mut [&mut u32]| {
        Span::covering(fields, max).unwrap_or_else(|| {
            missing.push(format!("{name} (fields more than {max} bytes apart)"));
            for off in offsets {
                **off = NO_OFFSET;
            }
            Span::NONE
        })
    };
    let mut nsproxy_fields: Vec<&mut u32> = o.nsproxy_field.iter_mut().collect();
    o.nsproxy_span = span("nsproxy", SPAN_MAX, &nsproxy, &mut nsproxy_fields);
    o.userns_span = span(
        "user_namespace.parent/level/owner",
        SMALL_SPAN_MAX,
        &[
            (o.userns_parent, 8),
            (o.userns_level, 4),
            (o.userns_owner, 4),
        ],
        &mut [
            &mut o.userns_parent,
            &mut o.userns_level,
            &mut o.userns_owner,
        ],
    );
    o.cred_ids_span = span(
        "cred.euid/egid",
        SMALL_SPAN_MAX,
        &[(o.cred_euid, 4), (o.cred_egid, 4)],
        &mut [&mut o.cred_euid, &mut o.cred_egid],
    );
    o.fs_root_span = span(
        "fs_struct.root",
        SMALL_SPAN_MAX,
        &[(o.fs_root_mnt, 8), (o.fs_root_dentry, 8)],
        &mut [&mut o.fs_root_mnt, &mut o.fs_root_dentry],
    );
    // Not with nr_extents: on 6.1 it comes before the extents, with the
    // extents' union 8-byte aligned, and the two span 68 bytes (6.18 puts
    // it after them).
    o.idmap_span = span(
        "uid_gid_map.extent",
        SPAN_MAX,
        &[extents],
        &mut [&mut o.idmap_extent],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the running kernel's BTF; every Linux CI machine of this project has it.
    fn kernel() -> KernelBtf {
        KernelBtf::open(VMLINUX_BTF).expect("kernel BTF")
    }

    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let (o, missing) = kernel().offsets();
        assert!(missing.is_empty(), "missing: {missing:?}");
        assert_ne!(o.task_nsproxy, NO_OFFSET);
        assert!(o.upid_size >= 16);
        // ns_common is embedded, so inum sits at a small offset in each struct.
        assert!(o.ns_inum.iter().all(|&x| x != NO_OFFSET));
        // Every group of neighbouring fields is copied in one read.
        for span in [
            o.nsproxy_span,
            o.userns_span,
            o.cred_ids_span,
            o.fs_root_span,
            o.idmap_span,
        ] {
            assert!(span.start != NO_OFFSET && span.len > 0, "{o:?}");
        }
        // The five inline extents.
        let s = o.idmap_span;
        assert_eq!((s.start, s.len), (o.idmap_extent, 5 * o.idmap_extent_size));
    }

    #[test]
    fn a_mapped_btf_resolves_as_a_parsed_one() {
        let parsed = kernel().offsets();
        match Btf::from_file_with_backend(VMLINUX_BTF, btf_rs::Backend::Mmap) {
            Ok(btf) => assert_eq!(KernelBtf { btf }.offsets(), parsed),
            // The kernel's BTF file is mappable since 6.16.
            Err(e) => {
                let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
                let mut v = release.trim().split(['.', '-']).map(|p| p.parse::<u32>());
                let version = (v.next().unwrap().unwrap(), v.next().unwrap().unwrap());
                assert!(
                    version < (6, 16),
                    "cannot map the BTF of kernel {release}: {e}"
                );
            }
        }
    }

    #[test]
    fn finds_members_inside_anonymous_structs() {
        // mm_struct keeps arg_start in an anonymous struct on current kernels;
        // either way it must come after the start of the struct.
        let k = kernel();
        let start = k.offset_of("mm_struct", "arg_start").unwrap();
        let end = k.offset_of("mm_struct", "arg_end").unwrap();
        assert_eq!(end, start + 8);
        assert_eq!(k.offset_of("task_struct", "no_such_field"), None);
        assert_eq!(k.offset_of("no_such_struct", "x"), None);
    }

    #[test]
    fn pt_regs_from_btf_match_the_user_abi() {
        let (o, _) = kernel().offsets();
        assert_eq!((o.regs_arg, o.regs_nr), abi_syscall_regs());
    }

    #[test]
    fn cached_offsets_match_a_fresh_parse_and_bad_caches_are_ignored() {
        let dir = std::env::temp_dir().join(format!("nstrace-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fresh = kernel().offsets();
        // A miss resolves and writes; a hit reads the same back.
        let first = offsets_cached_in(Path::new(VMLINUX_BTF), &dir).unwrap();
        assert_eq!(first, fresh);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(
            offsets_cached_in(Path::new(VMLINUX_BTF), &dir).unwrap(),
            fresh
        );
        // A corrupted file (wrong key inside) is not trusted.
        let mut data = std::fs::read(&files[0]).unwrap();
        data[CACHE_MAGIC.len()] ^= 0xff;
        std::fs::write(&files[0], &data).unwrap();
        let key = cache_key(Path::new(VMLINUX_BTF)).unwrap();
        assert!(read_cache(&files[0], key).is_none());
        // A file others may write is not trusted either.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_cache(&files[0], key).is_none());
        // ...and both are replaced by a good one.
        assert_eq!(
            offsets_cached_in(Path::new(VMLINUX_BTF), &dir).unwrap(),
            fresh
        );
        assert!(read_cache(&files[0], key).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = KernelBtf::open("/nonexistent/vmlinux").err().unwrap();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"));
    }
}
