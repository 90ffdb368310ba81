//! Containers started by real runtimes: a private dockerd, podman and plain
//! runc, all set up by `cargo xtask test` (see xtask/src/runtimes.rs), which
//! passes their coordinates in NSTRACE_* variables. Each test checks what
//! nstrace saw against the runtime's own account (cidfiles, inspect, the
//! container's /proc/PID/ns links).

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::*;
use serde_json::Value;

/// The tests of this file run one at a time: a runtime that one test starts
/// while another test's traced client runs would be followed by both (the
/// documented limit of the rule), and make the other's counts wrong.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A runtime coordinate from `cargo xtask test`; `None` (skip) outside CI
/// when absent, a failure under CI, where nothing may be skipped.
fn runtime_env(name: &str) -> Option<String> {
    if !root_or_skip() {
        return None;
    }
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and {name} is not set: run the tests with `cargo xtask test`")
        }
        _ => {
            eprintln!(
                "SKIPPED: {name} is not set (run `cargo xtask test` or `cargo xtask runtimes up`)"
            );
            None
        }
    }
}

/// `docker run` for the tests: removed at exit, no network (the private
/// dockerd has no bridge), no seccomp filter (its default refuses unshare).
const DOCKER_RUN: [&str; 6] = [
    "run",
    "--rm",
    "--network",
    "none",
    "--security-opt",
    "seccomp=unconfined",
];

/// The private dockerd's address and the test image.
fn docker() -> Option<(String, String)> {
    Some((
        runtime_env("NSTRACE_DOCKER_HOST")?,
        runtime_env("NSTRACE_TEST_IMAGE")?,
    ))
}

/// `docker --host HOST` plus `args`.
fn docker_cmd(host: &str, args: &[&str]) -> Vec<String> {
    ["docker", "--host", host]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

fn run_ok(cmd: &[String]) -> String {
    let out = Command::new(&cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn trace_strings(cmd: &[String]) -> Trace {
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    trace(&refs)
}

/// The classic reproduction inside a container.
const SEED: [&str; 7] = ["unshare", "-Umpfr", "mount", "-t", "proc", "proc", "/proc"];

/// The container's failing (or not) proc mount: the mount of `proc` on
/// `/proc` made by `mount` inside the container.
fn proc_mount<'a>(t: &'a Trace, id: &str) -> &'a Value {
    let mounts: Vec<&Value> = t
        .syscalls("mount")
        .into_iter()
        .filter(|l| l["args"]["fstype"] == "proc" && l["args"]["target"] == "/proc")
        .collect();
    assert_eq!(mounts.len(), 1, "one proc mount on /proc: {}", t.dump());
    assert_eq!(mounts[0]["container"]["id"], id, "{}", mounts[0]);
    mounts[0]
}

/// What every trace of a container must show: the runtime adopted, its
/// namespaces created, the masks and pivot_root, all labelled with `id`.
fn check_runtime_setup(t: &Trace, id: &str, runtime: &str) {
    let labelled = |l: &&Value| l["container"]["id"] == id;
    assert!(
        t.of_type("exec")
            .into_iter()
            .filter(labelled)
            .any(|l| l["comm"] == runtime && l["container"]["runtime"] == runtime),
        "the runtime's exec, labelled: {}",
        t.dump()
    );
    let unshares: Vec<&Value> = t.syscalls("unshare").into_iter().filter(labelled).collect();
    assert!(
        unshares.iter().any(|l| l["args"]["flags"]
            .as_array()
            .unwrap()
            .contains(&Value::from("CLONE_NEWPID"))),
        "the runtime creates the container's namespaces: {}",
        t.dump()
    );
    assert!(
        t.syscalls("pivot_root").into_iter().any(|l| labelled(&l)),
        "pivot_root into the container: {}",
        t.dump()
    );
}

fn check_masked_and_unmasked(masked: &Trace, unmasked: &Trace, id: (&str, &str)) {
    let m = proc_mount(masked, id.0);
    assert_eq!(m["errno"], "EPERM", "{m}");
    assert_eq!(m["explanation"]["cause"], "mount_too_revealing", "{m}");
    let masks: HashSet<&str> = m["explanation"]["mounts"]
        .as_array()
        .unwrap_or_else(|| panic!("{m}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        masks.contains("/proc/keys") || masks.contains("/proc/timer_list"),
        "the runtime's masked paths are named: {m}"
    );
    let u = proc_mount(unmasked, id.1);
    assert_eq!(u["errno"], Value::Null, "{u}");
    assert!(u.get("explanation").is_none(), "{u}");
}

fn read_trimmed(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn docker_run_classic_case_both_ways() {
    let _serial = serial();
    let Some((host, image)) = docker() else {
        return;
    };
    let scratch = Scratch::new("docker");
    let run = |cidfile: &str, extra: &[&str]| {
        let cid = scratch.path(cidfile);
        let mut cmd = docker_cmd(&host, &DOCKER_RUN);
        cmd.extend(["--cidfile".to_string(), cid.display().to_string()]);
        cmd.extend(extra.iter().map(|s| s.to_string()));
        cmd.push(image.clone());
        cmd.extend(SEED.iter().map(|s| s.to_string()));
        let t = trace_strings(&cmd);
        (t, read_trimmed(&cid))
    };
    let (masked, id) = run("masked", &[]);
    assert_ne!(masked.code, Some(0), "{}", masked.dump());
    check_runtime_setup(&masked, &id, "runc");
    let adopted = masked.of_type("exec");
    assert!(
        adopted
            .iter()
            .any(|l| l["adopted"] == true && l["container"]["engine"] == "docker"),
        "runc adopted from docker's daemon: {}",
        masked.dump()
    );
    // docker's client is traced but is not part of the container.
    assert!(masked
        .of_type("exec")
        .iter()
        .any(|l| l["comm"] == "docker" && l.get("container").is_none()));
    let (unmasked, id2) = run("unmasked", &["--security-opt", "systempaths=unconfined"]);
    assert_eq!(unmasked.code, Some(0), "{}", unmasked.dump());
    check_masked_and_unmasked(&masked, &unmasked, (&id, &id2));
    // The init pid, from runc's state, is the process that ran the seed.
    let init = masked
        .of_type("container")
        .iter()
        .find_map(|l| l["container"]["init_pid"].as_u64())
        .expect("a container line with the init pid");
    assert!(masked
        .of_type("exec")
        .iter()
        .any(|l| l["pid"] == init && l["comm"] == "unshare"));
}

#[test]
fn podman_run_classic_case_both_ways() {
    let _serial = serial();
    let (Some(args), Some(run_args), Some(image)) = (
        runtime_env("NSTRACE_PODMAN_ARGS"),
        runtime_env("NSTRACE_PODMAN_RUN_ARGS"),
        runtime_env("NSTRACE_TEST_IMAGE"),
    ) else {
        return;
    };
    let scratch = Scratch::new("podman");
    let run = |cidfile: &str, extra: &[&str]| {
        let cid = scratch.path(cidfile);
        let mut cmd = vec!["podman".to_string()];
        cmd.extend(args.split_whitespace().map(String::from));
        cmd.extend(["run", "--rm"].map(String::from));
        cmd.extend(run_args.split_whitespace().map(String::from));
        cmd.extend(["--security-opt", "seccomp=unconfined", "--cidfile"].map(String::from));
        cmd.push(cid.to_str().unwrap().to_string());
        cmd.extend(extra.iter().map(|s| s.to_string()));
        cmd.push(image.clone());
        cmd.extend(SEED.iter().map(|s| s.to_string()));
        let t = trace_strings(&cmd);
        (t, read_trimmed(&cid))
    };
    let (masked, id) = run("masked", &[]);
    check_runtime_setup(&masked, &id, "runc");
    let (unmasked, id2) = run("unmasked", &["--security-opt", "unmask=ALL"]);
    assert_eq!(unmasked.code, Some(0), "{}", unmasked.dump());
    check_masked_and_unmasked(&masked, &unmasked, (&id, &id2));
    assert!(masked
        .lines
        .iter()
        .any(|l| l["container"]["engine"] == "podman"));
}

/// A runc bundle of the test's own with `args` and, unless `masked`, no
/// masked or read-only paths.
fn runc_bundle(dir: &std::path::Path, args: &[&str], masked: bool) -> String {
    let base = runtime_env("NSTRACE_RUNC_CONFIG").unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(base).unwrap()).unwrap();
    config["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
    if !masked {
        config["linux"]["maskedPaths"] = Value::Array(vec![]);
        config["linux"]["readonlyPaths"] = Value::Array(vec![]);
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir.to_str().unwrap().to_string()
}

#[test]
fn runc_run_classic_case_both_ways() {
    let _serial = serial();
    if runtime_env("NSTRACE_RUNC_CONFIG").is_none() {
        return;
    }
    let scratch = Scratch::new("runc");
    let state = scratch.path("state");
    let run = |id: &str, masked: bool| {
        let bundle = runc_bundle(&scratch.path(id), &SEED, masked);
        trace(&[
            "runc",
            "--root",
            state.to_str().unwrap(),
            "run",
            "--bundle",
            &bundle,
            id,
        ])
    };
    let id = format!("nstrace-masked-{}", std::process::id());
    let masked = run(&id, true);
    check_runtime_setup(&masked, &id, "runc");
    let id2 = format!("nstrace-unmasked-{}", std::process::id());
    let unmasked = run(&id2, false);
    assert_eq!(unmasked.code, Some(0), "{}", unmasked.dump());
    check_masked_and_unmasked(&masked, &unmasked, (&id, &id2));
    // Plain runc is a descendant: nothing needed adopting.
    assert!(masked
        .of_type("exec")
        .iter()
        .all(|l| l.get("adopted").is_none()));
}

#[test]
fn two_containers_at_once_are_told_apart() {
    let _serial = serial();
    let Some((host, image)) = docker() else {
        return;
    };
    let scratch = Scratch::new("two");
    // Each container makes a mount only it makes (the source names it); both
    // start together and overlap (sleep).
    let one = |name: &str| {
        format!(
            "docker --host {host} run --rm --network none --security-opt seccomp=unconfined \
             --cidfile {} {image} \
             sh -c 'mount -t tmpfs {name} /tmp; sleep 0.5; mount -t tmpfs {name} /tmp' &",
            scratch.path(name).display()
        )
    };
    let script = format!("{} {} wait", one("ctr-a"), one("ctr-b"));
    let t = trace(&["sh", "-c", &script]);
    for name in ["ctr-a", "ctr-b"] {
        let id = read_trimmed(&scratch.path(name));
        let mounts: Vec<&Value> = t
            .syscalls("mount")
            .into_iter()
            .filter(|l| l["args"]["source"] == name)
            .collect();
        assert_eq!(mounts.len(), 2, "{name}: {}", t.dump());
        for m in mounts {
            assert_eq!(m["container"]["id"], id, "{m}");
            // Without CAP_SYS_ADMIN in the container, and explained so.
            assert_eq!(m["explanation"]["cause"], "missing_capability", "{m}");
        }
        // Every event of a process of this container carries its id only.
        let pids: HashSet<u64> = t
            .lines
            .iter()
            .filter(|l| l["container"]["id"] == id)
            .filter_map(|l| l["pid"].as_u64())
            .collect();
        assert!(!pids.is_empty());
        for l in t.lines.iter().filter(|l| {
            l["pid"].as_u64().is_some_and(|p| pids.contains(&p)) && l.get("container").is_some()
        }) {
            assert_eq!(l["container"]["id"], id, "{l}");
        }
    }
}

/// A detached container, removed when dropped.
struct Detached {
    host: String,
    id: String,
}

impl Detached {
    fn start(host: &str, image: &str, script: &str) -> Self {
        let id = run_ok(&docker_cmd(
            host,
            &[
                "run",
                "-d",
                "--network",
                "none",
                "--security-opt",
                "seccomp=unconfined",
                image,
                "sh",
                "-c",
                script,
            ],
        ));
        Self {
            host: host.to_string(),
            id,
        }
    }

    fn init_pid(&self) -> u64 {
        run_ok(&docker_cmd(
            &self.host,
            &["inspect", "-f", "{{.State.Pid}}", &self.id],
        ))
        .parse()
        .unwrap()
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["--host", &self.host, "rm", "-f", &self.id])
            .output();
    }
}

#[test]
fn containers_outside_the_traced_command_do_not_appear() {
    let _serial = serial();
    let Some((host, image)) = docker() else {
        return;
    };
    // Started before the trace, and busy making namespace calls during it.
    let busy = Detached::start(
        &host,
        &image,
        "while true; do unshare -m true; mount -t tmpfs busy /mnt; sleep 0.02; done",
    );
    // An unrelated process on the host, busy as well.
    let mut host_loop = Command::new("sh")
        .args(["-c", "while true; do unshare -m true; sleep 0.02; done"])
        .spawn()
        .unwrap();
    let mut cmd = docker_cmd(&host, &DOCKER_RUN);
    cmd.extend([image.clone(), "unshare".into(), "-U".into(), "true".into()]);
    let t = trace_strings(&cmd);
    let _ = host_loop.kill();
    let _ = host_loop.wait();
    assert_eq!(t.code, Some(0), "{}", t.dump());
    // The traced container's unshare is there...
    assert!(t
        .syscalls("unshare")
        .iter()
        .any(|l| l["comm"] == "unshare" && l.get("container").is_some()));
    // ... and nothing of the other container or of the host loop.
    for l in &t.lines {
        assert_ne!(l["container"]["id"], busy.id.as_str(), "{l}");
        assert_ne!(l["args"]["source"], "busy", "{l}");
        if l["type"] == "syscall" && l["comm"] == "unshare" {
            assert!(
                l.get("container").is_some(),
                "a host unshare leaked in: {l}"
            );
        }
    }
}

#[test]
fn docker_exec_enters_the_containers_namespaces() {
    let _serial = serial();
    let Some((host, image)) = docker() else {
        return;
    };
    let target = Detached::start(&host, &image, "exec sleep 300");
    let init = target.init_pid();
    let t = trace_strings(&docker_cmd(&host, &["exec", &target.id, "true"]));
    assert_eq!(t.code, Some(0), "{}", t.dump());
    let setns: Vec<&Value> = t
        .syscalls("setns")
        .into_iter()
        .filter(|l| l["container"]["id"] == target.id.as_str())
        .collect();
    assert!(!setns.is_empty(), "runc exec's setns: {}", t.dump());
    // Ground truth: the namespaces of the container's init, each entered.
    let entered: HashSet<u64> = setns.iter().filter_map(|l| l["fd_ns"].as_u64()).collect();
    for k in ["mnt", "pid", "net", "uts", "ipc"] {
        let inode = ns_inode(
            &std::fs::read_link(format!("/proc/{init}/ns/{k}"))
                .unwrap()
                .to_string_lossy(),
        );
        assert!(
            entered.contains(&inode),
            "setns into {k} {inode}: {}",
            t.dump()
        );
    }
    // The process runc exec started lives in the container's namespaces.
    let exec_true = t
        .of_type("exec")
        .into_iter()
        .find(|l| l["comm"] == "true")
        .unwrap_or_else(|| panic!("exec of true: {}", t.dump()));
    assert_eq!(exec_true["container"]["id"], target.id.as_str());
    assert_eq!(exec_true["container"]["init_pid"], init);
    let mnt = ns_inode(
        &std::fs::read_link(format!("/proc/{init}/ns/mnt"))
            .unwrap()
            .to_string_lossy(),
    );
    assert_eq!(exec_true["ns"]["mnt"], mnt);
}
