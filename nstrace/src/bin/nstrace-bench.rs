//! `nstrace-bench`: the workloads of `cargo xtask bench`. Each counts its own
//! calls and prints them on one line, so that a trace can be checked against
//! what really happened.
//!
//! Usage:
//! - `nstrace-bench ns N`: N times fork; the child unshares
//!   (CLONE_NEWUSER|CLONE_NEWNS), makes its mounts private, mounts a tmpfs,
//!   unmounts it and exits. Prints `ns N FAILED ELAPSED_NS` (children that
//!   failed a step, and the loop's own wall time in nanoseconds), then the
//!   mean time of each step of a round, in nanoseconds, in the order of
//!   [`STEPS`] (over the rounds whose child did every step).
//!   The traced calls per round: clone, unshare, mount (private), mount
//!   (tmpfs), umount2, plus fork and exit records.
//! - `nstrace-bench noise N`: unrelated work: N rounds of getppid(2) and
//!   stat(2) on `/`, with a fork (child exits at once) every 10,000 rounds.
//!   Prints `noise CALLS FORKS ELAPSED_NS`.
//! - `nstrace-bench umount N`: N failing umount2(2) calls (ENOENT), the
//!   traced events of the memory benchmark. Prints `umount N FAILED ELAPSED_NS`.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The steps of a round of `ns` that it times apart: which of them a tracer
/// makes slower says where its cost lands (the programs on each traced
/// call, a busy second CPU for the kernel's RCU grace periods, ...).
/// `fork` is from before fork(2) in the parent to the child's first
/// instruction; `exit+reap` from the child's last step to waitpid(2)'s
/// return in the parent.
const STEPS: [&str; 6] = [
    "fork",
    "unshare",
    "mount private",
    "mount tmpfs",
    "umount2",
    "exit+reap",
];

fn usage() -> ! {
    eprintln!("usage: nstrace-bench ns N | noise N | umount N");
    std::process::exit(2)
}

/// `CLOCK_MONOTONIC` in nanoseconds (through the vDSO: no syscall, so
/// no traced event).
fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// One round of the namespace workload, in the forked child; returns its
/// exit status. `stamps[i]` gets the time at which step `i` (of [`STEPS`])
/// ended, for steps 0 to 4.
fn ns_child(dir: &CString, stamps: &[AtomicU64; 5]) -> i32 {
    let none = c"none";
    let tmpfs = c"tmpfs";
    let root = c"/";
    let stamp = |i: usize| stamps[i].store(now_ns(), Ordering::Relaxed);
    stamp(0);
    // SAFETY: raw syscalls with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return 1;
        }
        stamp(1);
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
        stamp(2);
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
        stamp(3);
        if libc::umount2(dir.as_ptr(), 0) != 0 {
            return 4;
        }
        stamp(4);
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
    // The child's step stamps, in a page the fork leaves shared.
    // SAFETY: a fresh anonymous mapping, checked below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        eprintln!("nstrace-bench: mmap: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: the page is zeroed, aligned, ours until exit, and 40 bytes of
    // it are five AtomicU64 (any bit pattern is valid).
    let stamps: &[AtomicU64; 5] = unsafe { &*page.cast() };
    let mut failed = 0u64;
    let mut sums = [0u64; STEPS.len()];
    let start = Instant::now();
    for _ in 0..n {
        let forked = now_ns();
        let ok = fork_wait(|| ns_child(&dir, stamps));
        let reaped = now_ns();
        if !ok {
            failed += 1;
            continue;
        }
        // waitpid ordered the child's stores before these loads.
        let mut prev = forked;
        for (i, sum) in sums.iter_mut().enumerate() {
            let t = stamps.get(i).map_or(reaped, |s| s.load(Ordering::Relaxed));
            *sum += t.saturating_sub(prev);
            prev = t;
        }
    }
    let elapsed = start.elapsed().as_nanos();
    let done = (n - failed).max(1);
    let steps: Vec<String> = sums.iter().map(|s| (s / done).to_string()).collect();
    println!("ns {n} {failed} {elapsed} {}", steps.join(" "));
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
