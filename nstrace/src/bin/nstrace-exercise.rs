//! `nstrace-exercise`: calls the namespace and mount syscalls that common
//! tools do not (the new mount API, clone3) directly, and prints what each
//! returned, so that nstrace's tests can compare its trace with what the
//! program itself saw.
//!
//! Output, one line per call: `CALL RET ERRNO`, where ERRNO is the numeric
//! errno (0 on success); plus `ns NAME INODE` lines and, from the clone3
//! child, `child-ns user INODE`.
//!
//! Usage:
//! - `nstrace-exercise new-mount-api DIR` (needs root; works in a mount
//!   namespace of its own, so nothing outside changes);
//! - `nstrace-exercise mount SOURCE TARGET FSTYPE`: one mount(2);
//! - `nstrace-exercise storm N`: N failing umount2(2) calls as fast as
//!   possible (to overrun a small ring buffer); prints `storm N FAILED`;
//! - `nstrace-exercise threads-unshare`: unshare(CLONE_NEWUSER) with a second
//!   thread running (EINVAL);
//! - `nstrace-exercise seccomp-mount DIR`: installs a seccomp filter that
//!   refuses mount(2) with EPERM, then mounts a tmpfs on DIR;
//! - `nstrace-exercise landlock-mount DIR`: enters a Landlock sandbox, then
//!   mounts a tmpfs on DIR (Landlock refuses every mount);
//! - `nstrace-exercise setns-own-userns`: setns into its own user namespace
//!   (EINVAL); also prints `ns user INODE`.
//! - `nstrace-exercise umount PATH`: one umount2(2) without flags;
//! - `nstrace-exercise chroot-unshare DIR`: chroot(DIR), then
//!   unshare(CLONE_NEWUSER) (EPERM when DIR is not the namespace's root).
//! - `nstrace-exercise fork-accounting`: one fork(2) (its child exits at
//!   once); prints `accountable BEFORE AFTER`, its mappings that the kernel
//!   charges to memory accounting (`ac` in smaps) before and after the
//!   fork. The fork checks CAP_SYS_ADMIN once for each of them.
//!
//! The mount modes must run in a private mount namespace of their own (the
//! tests use `unshare -m`): if the refusal did not happen, the mount would
//! land there.

use std::ffi::CString;
use std::io::Write;

const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
const MOUNT_ATTR_RDONLY: u64 = 1;
const MOUNT_ATTR_NODEV: u32 = 4;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
const OPEN_TREE_CLONE: u32 = 1;
const FSPICK_CLOEXEC: u32 = 1;

/// `struct mount_attr` (include/uapi/linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| {
        eprintln!("nstrace-exercise: argument with a NUL byte");
        std::process::exit(2)
    })
}

/// Prints `CALL RET ERRNO` for a raw syscall result and returns it.
fn report(call: &str, ret: i64) -> i64 {
    let errno = if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    println!("{call} {ret} {errno}");
    ret
}

fn ns_inode(name: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{name}"))
        .map(|p| {
            let s = p.to_string_lossy().into_owned();
            s.rsplit('[')
                .next()
                .unwrap_or("")
                .trim_end_matches(']')
                .to_string()
        })
        .unwrap_or_else(|_| "0".into())
}

fn new_mount_api(dir: &str) -> i32 {
    let dir_c = cstr(dir);
    let empty = cstr("");
    // SAFETY (this whole function): raw syscalls with valid, NUL-terminated
    // strings and properly sized structs that outlive the calls.
    unsafe {
        if report("unshare", libc::unshare(libc::CLONE_NEWNS) as i64) < 0 {
            return 1;
        }
        let root = cstr("/");
        let none = cstr("none");
        report(
            "mount",
            libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) as i64,
        );
        println!("ns mnt {}", ns_inode("mnt"));

        let bogus = cstr("nstrace-no-such-fs");
        report(
            "fsopen",
            libc::syscall(libc::SYS_fsopen, bogus.as_ptr(), FSOPEN_CLOEXEC),
        );
        let tmpfs = cstr("tmpfs");
        let fsfd = report(
            "fsopen",
            libc::syscall(libc::SYS_fsopen, tmpfs.as_ptr(), FSOPEN_CLOEXEC),
        );
        let (key, value) = (cstr("size"), cstr("1M"));
        report(
            "fsconfig",
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd,
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            ),
        );
        report(
            "fsconfig",
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd,
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<u8>(),
                std::ptr::null::<u8>(),
                0,
            ),
        );
        let mfd = report(
            "fsmount",
            libc::syscall(libc::SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV),
        );
        report(
            "move_mount",
            libc::syscall(
                libc::SYS_move_mount,
                mfd,
                empty.as_ptr(),
                libc::AT_FDCWD,
                dir_c.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ),
        );
        let tfd = report(
            "open_tree",
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                dir_c.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
            ),
        );
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        report(
            "mount_setattr",
            libc::syscall(
                libc::SYS_mount_setattr,
                tfd,
                empty.as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            ),
        );
        report(
            "fspick",
            libc::syscall(
                libc::SYS_fspick,
                libc::AT_FDCWD,
                dir_c.as_ptr(),
                FSPICK_CLOEXEC,
            ),
        );
        report(
            "umount2",
            libc::umount2(dir_c.as_ptr(), libc::MNT_DETACH) as i64,
        );

        let args = CloneArgs {
            flags: libc::CLONE_NEWUSER as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        let _ = std::io::stdout().flush();
        let pid = libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        );
        if pid == 0 {
            // The child, in its new user namespace.
            println!("child-ns user {}", ns_inode("user"));
            let _ = std::io::stdout().flush();
            libc::_exit(0);
        }
        report("clone3", pid);
        if pid > 0 {
            let mut status = 0;
            libc::waitpid(pid as i32, &mut status, 0);
        }
    }
    0
}

fn one_mount(source: &str, target: &str, fstype: &str) -> i32 {
    let (s, t, f) = (cstr(source), cstr(target), cstr(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    i32::from(report("mount", ret as i64) < 0)
}

fn storm(n: u64) -> i32 {
    let path = cstr("/nonexistent/nstrace-storm");
    let mut failed = 0u64;
    for _ in 0..n {
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), 0) } < 0 {
            failed += 1;
        }
    }
    println!("storm {n} {failed}");
    0
}

fn mount_tmpfs(dir: &str) -> i32 {
    let (src, tgt, ty) = (cstr("none"), cstr(dir), cstr("tmpfs"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    i32::from(report("mount", ret as i64) < 0)
}

fn threads_unshare() -> i32 {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    // SAFETY: plain syscall.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    report("unshare", ret as i64);
    let _ = tx.send(());
    let _ = worker.join();
    0
}

fn one_umount(path: &str) -> i32 {
    let Ok(p) = CString::new(path) else {
        return 2;
    };
    // SAFETY: valid NUL-terminated path; plain syscall.
    let ret = unsafe { libc::umount2(p.as_ptr(), 0) };
    i32::from(report("umount2", ret as i64) < 0)
}

fn chroot_unshare(dir: &str) -> i32 {
    let Ok(d) = CString::new(dir) else {
        return 2;
    };
    // SAFETY: valid NUL-terminated paths; plain syscalls.
    let ret = unsafe { libc::chroot(d.as_ptr()) };
    if report("chroot", ret as i64) < 0 {
        return 1;
    }
    // SAFETY: as above.
    let ret = unsafe { libc::chdir(c"/".as_ptr()) };
    report("chdir", ret as i64);
    // SAFETY: plain syscall.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    report("unshare", ret as i64);
    0
}

fn no_new_privs() -> bool {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 }
}

fn seccomp_mount(dir: &str) -> i32 {
    // seccomp_data: nr at offset 0, arch at 4.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        ins(LD_W_ABS, 0, 0, 0),
        ins(JEQ_K, 0, 1, libc::SYS_mount as u32),
        ins(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        ins(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at a valid filter that outlives the call.
    let ok = no_new_privs()
        && unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            )
        } == 0;
    if !ok {
        eprintln!("nstrace-exercise: cannot install the seccomp filter");
        return 3;
    }
    mount_tmpfs(dir)
}

fn landlock_mount(dir: &str) -> i32 {
    /// struct landlock_ruleset_attr, ABI v1: handled_access_fs.
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
    }
    const LANDLOCK_ACCESS_FS_EXECUTE: u64 = 1;
    let attr = RulesetAttr {
        handled_access_fs: LANDLOCK_ACCESS_FS_EXECUTE,
    };
    // SAFETY: valid attr of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0,
        )
    };
    // SAFETY: plain syscall on our ruleset fd.
    if fd < 0
        || !no_new_privs()
        || unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) } != 0
    {
        eprintln!(
            "nstrace-exercise: cannot enter a Landlock sandbox: {}",
            std::io::Error::last_os_error()
        );
        return 3;
    }
    mount_tmpfs(dir)
}

fn setns_own_userns() -> i32 {
    println!("ns user {}", ns_inode("user"));
    let file = match std::fs::File::open("/proc/self/ns/user") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nstrace-exercise: /proc/self/ns/user: {e}");
            return 3;
        }
    };
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a descriptor we own.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWUSER) };
    report("setns", ret as i64);
    0
}

/// The mappings of this process with `ac` (VM_ACCOUNT) among their smaps
/// VmFlags, read into `buf` (allocated by the caller, so that reading
/// creates no mapping of its own).
fn accountable_mappings(buf: &mut Vec<u8>) -> Option<usize> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open("/proc/self/smaps")
        .ok()?
        .read_to_end(buf)
        .ok()?;
    let text = std::str::from_utf8(buf).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("VmFlags:"))
            .filter(|flags| flags.split_whitespace().any(|f| f == "ac"))
            .count(),
    )
}

fn fork_accounting() -> i32 {
    // Room for smaps, taken before the first count and kept until the last.
    let mut buf = Vec::with_capacity(1 << 20);
    let Some(before) = accountable_mappings(&mut buf) else {
        return 1;
    };
    // SAFETY: the child only `_exit`s; the parent waits for it.
    let ok = unsafe {
        match libc::fork() {
            0 => libc::_exit(0),
            pid if pid > 0 => libc::waitpid(pid, std::ptr::null_mut(), 0) == pid,
            _ => false,
        }
    };
    let Some(after) = accountable_mappings(&mut buf) else {
        return 1;
    };
    println!("accountable {before} {after}");
    i32::from(!ok)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("new-mount-api") if args.len() == 3 => new_mount_api(&args[2]),
        Some("mount") if args.len() == 5 => one_mount(&args[2], &args[3], &args[4]),
        Some("threads-unshare") => threads_unshare(),
        Some("setns-own-userns") => setns_own_userns(),
        Some("chroot-unshare") if args.len() == 3 => chroot_unshare(&args[2]),
        Some("umount") if args.len() == 3 => one_umount(&args[2]),
        Some("seccomp-mount") if args.len() == 3 => seccomp_mount(&args[2]),
        Some("landlock-mount") if args.len() == 3 => landlock_mount(&args[2]),
        Some("fork-accounting") => fork_accounting(),
        Some("storm") if args.len() == 3 => match args[2].parse() {
            Ok(n) => storm(n),
            Err(_) => 2,
        },
        _ => {
            eprintln!(
                "usage: nstrace-exercise new-mount-api DIR | mount SOURCE TARGET FSTYPE | storm N \
                 | threads-unshare | seccomp-mount DIR | landlock-mount DIR | setns-own-userns \
                 | chroot-unshare DIR | umount PATH | fork-accounting"
            );
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
