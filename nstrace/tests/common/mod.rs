//! Harness for the tests that run the real nstrace binary with real BPF
//! programs. They need root; under CI (`CI=true`) not being root is a
//! failure, never a skip.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

/// The nstrace binary under test.
pub const NSTRACE: &str = env!("CARGO_BIN_EXE_nstrace");
/// The repo's syscall helper.
pub const EXERCISE: &str = env!("CARGO_BIN_EXE_nstrace-exercise");

/// True if the test can run; false (with a message) when it must be skipped
/// on a developer machine. Panics under CI, where nothing may be skipped.
pub fn root_or_skip() -> bool {
    // SAFETY: plain syscall without arguments.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and not root: this test loads BPF programs and cannot be skipped");
    }
    eprintln!("SKIPPED: needs root (run `sudo cargo xtask test`)");
    false
}

/// Whether this kernel lets nstrace observe syscalls with `hook` (as
/// `nstrace doctor` says); false, and the test skipped, on a developer
/// machine where it does not. Panics under CI, where nothing may be
/// skipped: every kernel CI runs on loads each hook asked for here.
pub fn hook_or_skip(hook: &str) -> bool {
    if syscall_hooks().contains(&hook) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and this kernel does not load the {hook} hook: the test cannot be skipped");
    }
    eprintln!("SKIPPED: this kernel does not load the {hook} hook");
    false
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nstrace-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What nstrace did with `nstrace OPTIONS -- touch MARKER`, for options it
/// must refuse before it starts anything: its exit status, its standard
/// error, and whether the command ran (the marker exists).
pub struct Refusal {
    pub code: Option<i32>,
    pub stderr: String,
    pub ran: bool,
}

/// Runs `nstrace OPTIONS -- touch MARKER` (see [`Refusal`]).
pub fn refusal(options: &[&str]) -> Refusal {
    let scratch = Scratch::new("refusal");
    let marker = scratch.path("ran");
    let out = Command::new(NSTRACE)
        .args(options)
        .args(["--", "touch"])
        .arg(&marker)
        .output()
        .expect("run nstrace");
    Refusal {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ran: marker.exists(),
    }
}

/// One nstrace run: its NDJSON lines, its exit status, and the traced
/// command's own output.
pub struct Trace {
    pub lines: Vec<Value>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A run that takes longer than this is a hang: it fails (status 124)
/// instead of stalling the whole suite.
pub const TIMEOUT: &str = "120";

/// Runs `nstrace [extra] --format ndjson -o FILE -- cmd...` (under `timeout`).
pub fn trace_with(extra: &[&str], cmd: &[&str]) -> Trace {
    trace_env(&[], extra, cmd)
}

/// [`trace_with`], with environment variables set for nstrace (its test
/// knobs, like `NSTRACE_SYSCALL_HOOK`).
pub fn trace_env(env: &[(&str, &str)], extra: &[&str], cmd: &[&str]) -> Trace {
    let scratch = Scratch::new("out");
    let out = scratch.path("trace.ndjson");
    let output = Command::new("timeout")
        .args(["-k", "5", TIMEOUT, NSTRACE])
        .envs(env.iter().copied())
        .args(extra)
        .args(["--format", "ndjson", "-o"])
        .arg(&out)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run nstrace");
    finish(output, &out)
}

/// Runs `nstrace --format ndjson -o FILE -- cmd...`.
pub fn trace(cmd: &[&str]) -> Trace {
    trace_with(&[], cmd)
}

pub fn finish(output: Output, ndjson: &Path) -> Trace {
    let text = std::fs::read_to_string(ndjson).unwrap_or_default();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect();
    Trace {
        lines,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Trace {
    /// Syscall lines of `name`.
    pub fn syscalls(&self, name: &str) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l["type"] == "syscall" && l["syscall"] == name)
            .collect()
    }

    /// Syscall lines of the process that exec'd `program` (argv[0] ending
    /// with it), in order.
    pub fn syscalls_of_program(&self, program: &str) -> Vec<&Value> {
        let pid = &self.exec_of(program)["pid"];
        self.of_type("syscall")
            .into_iter()
            .filter(|l| &l["pid"] == pid)
            .collect()
    }

    /// Lines of a type.
    pub fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == ty).collect()
    }

    /// The exec line of the program whose argv[0] ends with `name`.
    pub fn exec_of(&self, name: &str) -> &Value {
        self.of_type("exec")
            .into_iter()
            .find(|l| l["argv"][0].as_str().is_some_and(|a| a.ends_with(name)))
            .unwrap_or_else(|| panic!("no exec of {name} in {}", self.dump()))
    }

    /// The summary line (must be last).
    pub fn summary(&self) -> &Value {
        let last = self.lines.last().expect("empty trace");
        assert_eq!(last["type"], "summary", "last line is not the summary");
        last
    }

    /// The trace as text, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.to_string());
            s.push('\n');
        }
        s.push_str(&format!(
            "stdout: {}\nstderr: {}\n",
            self.stdout, self.stderr
        ));
        s
    }
}

/// The inode in `NAME:[INODE]` as printed by readlink.
pub fn ns_inode(readlink: &str) -> u64 {
    readlink
        .trim()
        .rsplit('[')
        .next()
        .and_then(|s| s.trim_end_matches(']').parse().ok())
        .unwrap_or_else(|| panic!("not a namespace link: {readlink:?}"))
}

/// The ways to observe syscalls this kernel allows, by the names
/// `--syscall-hook` takes, as `nstrace doctor` finds them (it tries each):
/// the trace events and the raw tracepoints everywhere, fentry where the
/// kernel allows trampolines (stock kernels; not this machine's). The test
/// VMs check that the guests list fentry, so a kernel that should allow it
/// and does not is caught there.
#[allow(dead_code)]
pub fn syscall_hooks() -> Vec<&'static str> {
    let out = Command::new(NSTRACE)
        .args(["doctor", "--format", "ndjson"])
        .env_remove("NSTRACE_SYSCALL_HOOK")
        .output()
        .expect("run nstrace doctor");
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor's JSON");
    let point = report["points"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["point"] == "syscalls"))
        .expect("doctor reports the syscall hooks")
        .clone();
    let loads: Vec<&str> = std::iter::once(&point["attached"])
        .chain(point["also_loads"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let mut hooks = vec!["syscall_events", "raw_syscalls"];
    if loads.iter().any(|h| h.starts_with("fentry/fexit")) {
        hooks.push("fentry");
    } else {
        let refused = point["refused"].as_array().expect("refused hooks");
        assert!(
            refused.iter().any(|r| r["hook"]
                .as_str()
                .is_some_and(|h| h.starts_with("fentry/fexit"))),
            "doctor neither loads nor refuses the fentry hook: {point}"
        );
    }
    hooks
}
