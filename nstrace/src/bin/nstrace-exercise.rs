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
//!   possible (to overrun a small ring buffer); prints `storm N FAILED`.

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("new-mount-api") if args.len() == 3 => new_mount_api(&args[2]),
        Some("mount") if args.len() == 5 => one_mount(&args[2], &args[3], &args[4]),
        Some("storm") if args.len() == 3 => match args[2].parse() {
            Ok(n) => storm(n),
            Err(_) => 2,
        },
        _ => {
            eprintln!(
                "usage: nstrace-exercise new-mount-api DIR | mount SOURCE TARGET FSTYPE | storm N"
            );
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
