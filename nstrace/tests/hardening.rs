//! Faults, hostile input and secrets: nstrace killed, its output failing, a
//! command that forks thousands of children, secrets in mount options,
//! terminal escapes in traced strings, and `-u USER`.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The ids of every BPF program, map and link loaded in the kernel now (the
/// kernel's own listing, as bpftool reads it).
fn bpf_objects() -> HashSet<(char, u32)> {
    let progs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| ('p', p.id()));
    let maps = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .map(|m| ('m', m.id()));
    let links = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| ('l', l.id()));
    progs.chain(maps).chain(links).collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

#[test]
fn sigkill_leaves_nothing_in_the_kernel_and_the_command_runs_on() {
    if !root_or_skip() {
        return;
    }
    let before = bpf_objects();
    let scratch = Scratch::new("kill");
    let out = scratch.path("t.ndjson");
    let pidfile = scratch.path("cmd.pid");
    let mut nstrace = Command::new(NSTRACE)
        .args(["--format", "ndjson", "-o"])
        .arg(&out)
        .args(["--", "sh", "-c"])
        .arg(format!("echo $$ > {}; exec sleep 30", pidfile.display()))
        .spawn()
        .unwrap();
    // Attached once the command has started (its pid file exists).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cmd_pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let during = bpf_objects();
    let ours: HashSet<_> = during.difference(&before).copied().collect();
    assert!(
        ours.iter().any(|(k, _)| *k == 'p') && ours.iter().any(|(k, _)| *k == 'l'),
        "nstrace's programs and links are listed while it runs: {ours:?}"
    );
    nstrace.kill().unwrap();
    nstrace.wait().unwrap();
    // The kernel frees them once the last fd is gone; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = bpf_objects().intersection(&ours).copied().collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left in the kernel: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Documented: the command is not nstrace's to end; it keeps running.
    assert!(alive(cmd_pid), "the command died with nstrace");
    // SAFETY: plain kill of the test's own grandchild.
    unsafe { libc::kill(cmd_pid as i32, libc::SIGKILL) };
}

#[test]
fn thousands_of_children_every_event_is_printed() {
    if !root_or_skip() {
        return;
    }
    let t = trace(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 2000 ]; do (exit 0) & i=$((i+1)); done; wait",
    ]);
    assert_eq!(t.code, Some(0), "{}", t.dump());
    let summary = t.summary();
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(t.of_type("fork").len(), 2001, "{summary}");
    assert_eq!(t.of_type("exit").len(), 2001, "{summary}");
    assert_eq!(summary["processes"], 2001);
    let events = t
        .lines
        .iter()
        .filter(|l| !matches!(l["type"].as_str(), Some("start" | "summary" | "lost")))
        .count();
    assert_eq!(summary["events"], events as u64);
}

#[test]
fn sighup_is_passed_on_and_the_trace_ends_cleanly() {
    if !root_or_skip() {
        return;
    }
    let scratch = Scratch::new("hup");
    let out = scratch.path("t.ndjson");
    let mut nstrace = Command::new(NSTRACE)
        .args(["--format", "ndjson", "-o"])
        .arg(&out)
        .args(["--", "sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&out).is_ok_and(|s| s.contains("\"exec\"")) {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nstrace.id() as i32, libc::SIGHUP) };
    let status = nstrace.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGHUP));
    let summary: Value = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["type"] == "summary")
        .expect("a summary line");
    assert_eq!(summary["exit_code"], 128 + libc::SIGHUP);
}

#[test]
fn a_full_disk_or_unwritable_output_is_a_clear_failure() {
    if !root_or_skip() {
        return;
    }
    let scratch = Scratch::new("disk");
    let tiny = scratch.path("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "nstrace-tiny"])
        .arg(&tiny)
        .status()
        .unwrap();
    assert!(mounted.success());
    let done = scratch.path("done");
    let out = Command::new("timeout")
        .args(["-k", "5", TIMEOUT, NSTRACE, "--format", "ndjson", "-o"])
        .arg(tiny.join("t.ndjson"))
        .args(["--", "sh", "-c"])
        .arg(format!(
            "i=0; while [ $i -lt 100 ]; do unshare -m true; i=$((i+1)); done; touch {}; exit 3",
            done.display()
        ))
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&tiny).status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("the command exited with 3"), "{stderr}");
    // The command was not cut short.
    assert!(done.exists());

    // A read-only place: refused before anything starts.
    let r = refusal(&["-o", "/proc/nstrace-no-such-file"]);
    assert_eq!(r.code, Some(125), "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("nstrace: cannot write to /proc/nstrace-no-such-file"),
        "{}",
        r.stderr
    );
    assert!(!r.ran);
}

#[test]
fn secret_mount_options_are_redacted_unless_asked() {
    if !root_or_skip() {
        return;
    }
    let dir = Scratch::new("secret");
    let cmd = format!(
        "mount -t tmpfs -o size=1m,password=hunter2 nstrace-secret {} || true",
        dir.0.display()
    );
    for format in ["ndjson", "text"] {
        let scratch = Scratch::new("secret-out");
        let out = scratch.path("t");
        let run = |extra: &[&str]| {
            Command::new(NSTRACE)
                .args(extra)
                .args(["--format", format, "--color", "never", "-o"])
                .arg(&out)
                .args(["--", "unshare", "-m", "sh", "-c", &cmd])
                .output()
                .unwrap();
            std::fs::read_to_string(&out).unwrap()
        };
        let redacted = run(&[]);
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("password=<redacted>"), "{redacted}");
        let shown = run(&["--no-redact"]);
        assert!(shown.contains("password=hunter2"), "{shown}");
    }
}

#[test]
fn terminal_escapes_from_traced_strings_never_reach_the_terminal() {
    if !root_or_skip() {
        return;
    }
    let scratch = Scratch::new("esc");
    let evil = scratch.0.join("a\u{1b}]0;owned\u{7}\u{1b}[2J\nb");
    let evil = evil.to_str().unwrap().to_string();
    let out = scratch.path("t");
    let cmd = r#"mkdir -p "$1" && mount -t tmpfs "$1" "$1"; umount "$1"; umount "$1""#;
    for format in ["text", "ndjson"] {
        let status = Command::new(NSTRACE)
            .args(["--format", format, "--color", "never", "-o"])
            .arg(&out)
            .args(["--", "unshare", "-m", "sh", "-c", cmd, "sh", &evil])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        // The command's own status (umount of nothing fails); not nstrace's.
        assert_ne!(status.code(), Some(125));
        let text = std::fs::read(&out).unwrap();
        assert!(
            !text.contains(&0x1b),
            "{format}: an escape byte got through"
        );
        assert!(!text.contains(&0x07), "{format}: a bell got through");
        if format == "ndjson" {
            let mounts = text
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice::<Value>(l).expect("one JSON object per line"))
                .filter(|v| v["syscall"] == "mount")
                .count();
            assert!(mounts >= 1);
        } else {
            let text = String::from_utf8_lossy(&text);
            // The newline inside the path is shown escaped, not as a line break.
            assert!(text.contains("\\n"), "{text}");
        }
    }
}

#[test]
fn dash_u_runs_the_command_as_that_user() {
    if !root_or_skip() {
        return;
    }
    let t = trace_with(
        &["-u", "nobody"],
        &["sh", "-c", "id -u; id -G; unshare -U true"],
    );
    assert_eq!(t.code, Some(0), "{}", t.dump());
    // Ground truth: the user database.
    let nobody = nstrace::scope::RunAs::lookup("nobody").unwrap();
    let mut out = t.stdout.lines();
    assert_eq!(out.next(), Some(nobody.uid.to_string().as_str()));
    let groups: HashSet<u32> = out
        .next()
        .unwrap()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert_eq!(groups, nobody.groups.iter().copied().collect());
    // nstrace kept its privileges: the command's calls are traced.
    let u = &t.syscalls("unshare")[0];
    assert_eq!(u["state"]["euid"], nobody.uid, "{u}");
}
