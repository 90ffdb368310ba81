//! `nstrace-bench`: the workloads of `cargo xtask bench`. Each counts its own
//! calls and prints them on one line, so that a trace can be checked against
//! what really happened.
//!
//! Usage:
//! - `nstrace-bench ns N`: N times fork; the child unshares
//!   (CLONE_NEWUSER|CLONE_NEWNS), makes its mounts private, mounts a tmpfs,
//!   unmounts it and exits. Prints `ns N FAILED ELAPSED_NS` (children that failed a step)
//!   and the loop's own wall time in nanoseconds.
//!   The traced calls per round: clone, unshare, mount (private), mount
//!   (tmpfs), umount2, plus fork and exit records.
//! - `nstrace-bench noise N`: unrelated work: N rounds of getppid(2) and
//!   stat(2) on `/`, with a fork (child exits at once) every 10,000 rounds.
//!   Prints `noise CALLS FORKS ELAPSED_NS`.
//! - `nstrace-bench umount N`: N failing umount2(2) calls (ENOENT), the
//!   traced events of the memory benchmark. Prints `umount N FAILED ELAPSED_NS`.

use std::ffi::CString;
use std::time::Instant;

fn usage() -> ! {
    eprintln!("usage: nstrace-bench ns N | noise N | umount N");
    std::process::exit(2)
}

/// One round of the namespace workload, in the forked child; returns its exit status.
fn ns_child(dir: &CString) -> i32 {
    let none = c"none";
    let tmpfs = c"tmpfs";
    let root = c"/";
    // SAFETY: raw syscalls with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return 1;
        }
        if libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return 2;
        }
        if libc::mount(
            none.as_ptr(),
            dir.as_ptr(),
            tmpfs.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return 3;
        }
        if libc::umount2(dir.as_ptr(), 0) != 0 {
            return 4;
        }
    }
    0
}

/// Forks and waits; the child runs `f` and `_exit`s with its result.
fn fork_wait(f: impl FnOnce() -> i32) -> bool {
    // SAFETY: the child only makes raw syscalls and `_exit`s (no allocation,
    // no locks taken after the fork).
    unsafe {
        match libc::fork() {
            0 => libc::_exit(f()),
            pid if pid > 0 => {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
            }
            _ => false,
        }
    }
}

fn ns(n: u64) {
    // /tmp exists on every machine of this kind; the mount is private to the
    // child's own mount namespace.
    let dir = c"/tmp".to_owned();
    let mut failed = 0u64;
    let start = Instant::now();
    for _ in 0..n {
        if !fork_wait(|| ns_child(&dir)) {
            failed += 1;
        }
    }
    println!("ns {n} {failed} {}", start.elapsed().as_nanos());
}

fn noise(n: u64) {
    let root = c"/";
    let mut calls = 0u64;
    let mut forks = 0u64;
    // SAFETY: an all-zero `struct stat` is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let start = Instant::now();
    for i in 0..n {
        // SAFETY: plain syscalls with valid pointers.
        unsafe {
            std::hint::black_box(libc::getppid());
            std::hint::black_box(libc::stat(root.as_ptr(), &mut st));
        }
        calls += 2;
        if i % 10_000 == 0 {
            fork_wait(|| 0);
            forks += 1;
        }
    }
    println!("noise {calls} {forks} {}", start.elapsed().as_nanos());
}

fn umount(n: u64) {
    let path = c"/nonexistent/nstrace-bench";
    let mut failed = 0u64;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), 0) } < 0 {
            failed += 1;
        }
    }
    println!("umount {n} {failed} {}", start.elapsed().as_nanos());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        usage()
    };
    match mode.as_str() {
        "ns" => ns(n),
        "noise" => noise(n),
        "umount" => umount(n),
        _ => usage(),
    }
}
