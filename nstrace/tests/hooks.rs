//! How syscalls are hooked, checked with the kernel's own counters: with
//! the per-syscall trace events or fentry, a syscall nstrace does not trace
//! runs no BPF program at all; with the raw tracepoints (the fallback),
//! every syscall of the system runs one. And every way sees the same calls.

mod common;

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The benchmark helper: `noise N` makes N getppid(2) and N stat(2) calls.
const BENCH: &str = env!("CARGO_BIN_EXE_nstrace-bench");

/// The tests here count programs by name: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Turns on the kernel's per-program run counts for as long as the fd lives.
fn stats_on() -> OwnedFd {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS")
}

/// Ids of the loaded programs named `name`.
fn programs_named(name: &str) -> HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .map(|p| p.id())
        .collect()
}

/// The program names of `counts`, sorted.
fn sorted_names(counts: &[(String, u64)]) -> Vec<&str> {
    let mut names: Vec<&str> = counts.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    names
}

/// Runs `nstrace -- sh -c 'nstrace-bench noise N; touch F; sleep 3'` with
/// `hook` forced, and once F exists returns the start line and the run
/// count of each of its syscall programs (those named `sys_enter`,
/// `sys_exit`, `syscall_enter`, `syscall_exit`, and the fentry bodies and
/// stubs, that were not loaded before).
fn run_counts_under(hook: &str, calls: u64) -> (Value, Vec<(String, u64)>) {
    let mut names = vec!["sys_enter", "sys_exit", "syscall_enter", "syscall_exit"];
    names.extend([
        nstrace_common::names::PROG_SYS_FENTRY_BODY,
        nstrace_common::names::PROG_SYS_FEXIT_BODY,
    ]);
    names.extend(nstrace_common::names::SYS_FENTRY_STUBS);
    names.extend(nstrace_common::names::SYS_FEXIT_STUBS);
    let before: HashSet<u32> = names.iter().flat_map(|n| programs_named(n)).collect();
    let scratch = Scratch::new("hooks");
    let done = scratch.path("done");
    let out = scratch.path("t.ndjson");
    let mut child = Command::new(NSTRACE)
        .env("NSTRACE_SYSCALL_HOOK", hook)
        .args(["--format", "ndjson", "-o"])
        .arg(&out)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "{BENCH} noise {calls} >/dev/null; touch {}; sleep 3",
            done.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done.exists() {
        assert!(Instant::now() < deadline, "the noise never ended");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("nstrace ({hook}) ended before the noise did: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let counts: Vec<(String, u64)> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| !before.contains(&p.id()))
        .filter_map(|p| {
            let name = p.name_as_str()?.to_string();
            names
                .contains(&name.as_str())
                .then(|| (name, p.run_count()))
        })
        .collect();
    eprintln!("{hook}: run counts after {calls} getppid + {calls} stat: {counts:?}");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&out).unwrap();
    let start: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    (start, counts)
}

#[test]
fn untraced_syscalls_run_no_program_with_syscall_events() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let _stats = stats_on();
    let calls = 100_000;
    let (start, counts) = run_counts_under("syscall_events", calls);
    assert_eq!(start["hooks"]["syscalls_via"], "syscall_events", "{start}");
    let names = sorted_names(&counts);
    assert_eq!(names, ["syscall_enter", "syscall_exit"], "{counts:?}");
    // 200,000 getppid and stat calls; what ran is the traced calls of the
    // whole system meanwhile (a few forks; other tests' mounts).
    for (name, n) in &counts {
        assert!(*n < calls / 10, "{name} ran {n} times: {counts:?}");
    }

    // The fallback: every syscall runs the programs.
    let (start, counts) = run_counts_under("raw_syscalls", calls);
    assert_eq!(start["hooks"]["syscalls_via"], "raw_syscalls", "{start}");
    let names = sorted_names(&counts);
    assert_eq!(names, ["sys_enter", "sys_exit"], "{counts:?}");
    for (name, n) in &counts {
        assert!(*n >= 2 * calls, "{name} ran only {n} times: {counts:?}");
    }
}

/// With fentry (where the kernel allows trampolines), only the traced
/// calls run a program: the stubs of the calls the noise makes (its forks'
/// clone), nothing for its getppid and stat. Where the kernel refuses trampolines, asking for fentry is one
/// clear error and the command does not run.
#[test]
fn untraced_syscalls_run_no_program_with_fentry_or_it_is_refused() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    if !syscall_hooks().contains(&"fentry") {
        let r = refusal(&["--syscall-hook", "fentry"]);
        assert_eq!(r.code, Some(125), "{}", r.stderr);
        assert!(!r.ran, "the command ran without its trace");
        assert!(
            r.stderr.contains(
                "cannot observe syscalls: fentry/fexit on each traced syscall's function"
            ),
            "{}",
            r.stderr
        );
        return;
    }
    let _stats = stats_on();
    let calls = 100_000;
    let (start, counts) = run_counts_under("fentry", calls);
    assert_eq!(start["hooks"]["syscalls_via"], "fentry", "{start}");
    let ran = |name: &str| counts.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
    // The noise forks 10 times (glibc's fork is clone): clone's stubs ran
    // for those. (The kernel counts the runs of the program a trampoline
    // calls, not of the body it tail-calls; that the bodies record the
    // calls, the other tests show.)
    let clone = nstrace::syscalls::SYSCALLS
        .iter()
        .position(|d| d.name == "clone")
        .expect("clone is traced");
    let (enter, exit) = (
        ran(nstrace_common::names::SYS_FENTRY_STUBS[clone]),
        ran(nstrace_common::names::SYS_FEXIT_STUBS[clone]),
    );
    assert!(enter.is_some_and(|n| n >= 10), "{counts:?}");
    assert!(exit.is_some_and(|n| n >= 10), "{counts:?}");
    // No syscall program of the other hooks was loaded.
    assert!(
        counts
            .iter()
            .all(|(n, _)| n.starts_with("sys_fentry") || n.starts_with("sys_fexit")),
        "{counts:?}"
    );
    for (name, n) in &counts {
        assert!(*n < calls / 10, "{name} ran {n} times: {counts:?}");
    }
}

/// Each way of hooking syscalls this kernel allows records every call the
/// program made, with the result it got (the program prints `CALL RET
/// ERRNO` for each), and they all record the same arguments.
#[test]
fn every_syscall_hook_records_what_the_program_saw() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let mut args_seen = Vec::new();
    for hook in syscall_hooks() {
        let dir = Scratch::new("newapi");
        let d = dir.0.to_string_lossy().into_owned();
        let t = trace_env(
            &[("NSTRACE_SYSCALL_HOOK", hook)],
            &[],
            &[EXERCISE, "new-mount-api", &d],
        );
        assert_eq!(t.code, Some(0), "{}", t.dump());
        assert_eq!(t.lines[0]["hooks"]["syscalls_via"], hook, "{}", t.dump());
        let printed: Vec<(String, i64)> = t
            .stdout
            .lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [call, ret, _] => Some((call.to_string(), ret.parse().ok()?)),
                _ => None,
            })
            .collect();
        assert!(printed.len() >= 10, "{}", t.stdout);
        let traced = t.syscalls_of_program("nstrace-exercise");
        let recorded: Vec<(String, i64)> = traced
            .iter()
            .map(|l| {
                (
                    l["syscall"].as_str().unwrap().to_string(),
                    l["ret"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(recorded, printed, "{hook}: {}", t.dump());
        // Strings and flags (pointers differ between runs, the scratch
        // directory too).
        let args: Vec<Value> = traced
            .iter()
            .map(|l| {
                let mut a = l["args"].clone();
                if let Some(m) = a.as_object_mut() {
                    m.retain(|_, v| !v.is_string() || !v.as_str().unwrap().contains(&d));
                    m.retain(|_, v| !v.is_number());
                }
                a
            })
            .collect();
        args_seen.push(args);
    }
    for args in &args_seen[1..] {
        assert_eq!(&args_seen[0], args);
    }
}

/// Where no init system mounted tracefs, nstrace mounts it and traces
/// through the syscall events rather than fall back to the raw tracepoints.
/// Checked in a private mount namespace in which tracefs and debugfs are
/// unmounted, so that the host's mounts are left as they are; a second run
/// finds it there and mounts nothing.
#[test]
fn tracefs_is_mounted_where_it_is_missing() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let scratch = Scratch::new("tracefs");
    let out = scratch.path("t.ndjson");
    // What is mounted on /sys/kernel/tracing (the last mount listed is
    // the one on top), in plain sh: the test VMs have no stat(1).
    let show = scratch.path("show.sh");
    std::fs::write(
        &show,
        "t=nothing; n=0; while read -r _ m f _; do [ \"$m\" = /sys/kernel/tracing ] && \
         t=$f && n=$((n + 1)); done </proc/self/mounts; echo \"$1 $t $n\"\n",
    )
    .unwrap();
    let show = show.display();
    let run = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "while umount -l /sys/kernel/tracing 2>/dev/null; do :; done; \
             while umount -l /sys/kernel/debug 2>/dev/null; do :; done; \
             sh {show} before; {NSTRACE} --format ndjson -o {} -- sh {show} after && \
             {NSTRACE} -o /dev/null -- sh {show} again",
            out.display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}{stderr}");
    // Mounted by the first run only: one layer, one note.
    assert_eq!(
        stdout, "before nothing 0\nafter tracefs 1\nagain tracefs 1\n",
        "{stderr}"
    );
    let note = "tracefs was not mounted: mounted it on /sys/kernel/tracing";
    assert_eq!(stderr.matches(note).count(), 1, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let start: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(start["hooks"]["syscalls_via"], "syscall_events", "{start}");
}

/// Under `--all`, the records the programs wake nobody for (forks and
/// exits anywhere on the system) do not keep the reader polling: only
/// urgent ones (a failure, a new namespace, an exec) or a filling ring
/// buffer do. Counted by the kernel: the voluntary context switches of
/// nstrace and what it waited for (the noise, a few per fork), while the
/// noise makes 4,000,000 syscalls and 200 forks. Polling every 250 us
/// through it made about 4 a millisecond; the 100 ms tick makes 0.01.
#[test]
fn quiet_records_do_not_keep_the_reader_polling() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let scratch = Scratch::new("polls");
    let out = scratch.path("t.ndjson");
    let started = Instant::now();
    // Reaped by wait4 below, for its resource usage (which Child::wait
    // does not give).
    #[allow(clippy::zombie_processes)]
    let child = Command::new(NSTRACE)
        .args(["--all", "--format", "ndjson", "-o"])
        .arg(&out)
        .args(["--", BENCH, "noise", "2000000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "{}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let per_ms = usage.ru_nvcsw as f64 / ms;
    eprintln!(
        "{} voluntary switches in {ms:.0} ms: {per_ms:.2} per ms",
        usage.ru_nvcsw
    );
    assert!(per_ms < 1.5, "{} switches in {ms:.0} ms", usage.ru_nvcsw);
    let text = std::fs::read_to_string(&out).unwrap();
    let forks = text
        .lines()
        .filter(|l| l.contains(r#""type":"fork""#))
        .count();
    assert!(forks >= 200, "the noise's forks were not traced: {forks}");
}
