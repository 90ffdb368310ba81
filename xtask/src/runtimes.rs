//! Real container runtimes for the tests: a private dockerd, podman and
//! plain runc, all running one busybox image made locally (no registry).
//!
//! Everything lives under `<workspace>/target/nstrace-runtimes/`:
//! - `rootfs/`: busybox from `busybox-static`, one symlink per applet, and
//!   empty `/proc /sys /dev /tmp /etc`;
//! - `rootfs.tar`: that tree, imported as [`IMAGE`] into docker and podman;
//! - `bundle/`: a runc bundle, `config.json` from `runc spec` (see
//!   [`bundle_config`]) and a `rootfs` symlink;
//! - `docker/`: the private dockerd's data root, exec root, pid file, log
//!   and (empty) daemon.json;
//! - `podman/`: podman's private image and container store.
//!
//! The private dockerd listens on [`DOCKER_SOCKET`] only, runs with
//! `--iptables=false --ip-forward=false --ip-masq=false --bridge=none`
//! (containers must use `--network none`) and starts its own containerd
//! under its exec root, so it neither meets another dockerd nor leaves a
//! bridge or firewall rules behind.
//!
//! Environment given to the tests by `cargo xtask test` (and printed by
//! `cargo xtask runtimes up`); a test that needs a runtime skips itself when
//! its variable is absent:
//! - `NSTRACE_DOCKER_HOST`: the private dockerd's address, for
//!   `docker --host "$NSTRACE_DOCKER_HOST" run --rm --network none ...`;
//! - `NSTRACE_TEST_IMAGE`: `nstrace-busybox:latest`, in docker and podman;
//! - `NSTRACE_RUNC_BUNDLE`: the runc bundle directory;
//! - `NSTRACE_RUNC_CONFIG`: its `config.json`, the base configuration. Its
//!   `root.path` is absolute, so a test copies it into a directory of its
//!   own, sets `process.args` (and `linux.maskedPaths` /
//!   `linux.readonlyPaths`), and runs
//!   `runc --root STATE run --bundle DIR ID`;
//! - `NSTRACE_PODMAN_ARGS`: podman's global options (runtime, cgroup
//!   manager, events backend, private store), whitespace-separated, for
//!   any podman command: `podman $NSTRACE_PODMAN_ARGS run ...`;
//! - `NSTRACE_PODMAN_RUN_ARGS`: options for `podman run` / `create`:
//!   `--network none` and rlimits this machine allows (root lacks
//!   CAP_SYS_RESOURCE, podman would otherwise ask for more).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::run;
use crate::setup::output;

/// The private dockerd's API socket.
pub const DOCKER_SOCKET: &str = "/run/nstrace-docker.sock";
/// The image the tests run, in docker and in podman.
pub const IMAGE: &str = "nstrace-busybox:latest";
/// podman's run-time state (tmpfs, like podman's own /run/containers).
const PODMAN_RUNROOT: &str = "/run/nstrace-podman";
/// How long dockerd may take to answer `docker info`.
const DOCKERD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dockerd may take to stop its containers and exit on SIGTERM.
const DOCKERD_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Programs the runtimes need, and the Debian package of each.
const RUNTIME_TOOLS: &[(&str, &str)] = &[
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("runc", "runc"),
    ("podman", "podman"),
    ("conmon", "conmon"),
    ("strace", "strace"),
    ("tar", "tar"),
];
/// The statically linked busybox that goes into the image.
const BUSYBOX: &str = "/bin/busybox";
/// Docker's default capabilities, for the runc bundle. `runc spec` keeps
/// only three, too few for `unshare -r` (mapping uid 0 needs CAP_SETFCAP);
/// all capabilities fail here, as root lacks CAP_SYS_RESOURCE.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Where everything lives.
pub struct Layout {
    dir: PathBuf,
    rootfs: PathBuf,
    tarball: PathBuf,
    bundle: PathBuf,
    data_root: PathBuf,
    exec_root: PathBuf,
    pidfile: PathBuf,
    /// Present while `cargo xtask runtimes up` keeps dockerd for a developer.
    kept: PathBuf,
    log: PathBuf,
    daemon_json: PathBuf,
    podman_root: PathBuf,
}

impl Layout {
    /// The layout under `<workspace>/target/nstrace-runtimes`.
    pub fn new(workspace: &Path) -> Self {
        let dir = workspace.join("target/nstrace-runtimes");
        let docker = dir.join("docker");
        Self {
            rootfs: dir.join("rootfs"),
            tarball: dir.join("rootfs.tar"),
            bundle: dir.join("bundle"),
            data_root: docker.join("data"),
            exec_root: docker.join("exec"),
            pidfile: docker.join("dockerd.pid"),
            kept: docker.join("kept-by-runtimes-up"),
            log: docker.join("dockerd.log"),
            daemon_json: docker.join("daemon.json"),
            podman_root: dir.join("podman"),
            dir,
        }
    }

    fn docker_host() -> String {
        format!("unix://{DOCKER_SOCKET}")
    }

    /// podman's global options: runc (crun refuses hybrid cgroups), cgroupfs
    /// and a file for events (no systemd), and a private store.
    fn podman_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]
        .map(String::from)
        .to_vec();
        args.push("--root".into());
        args.push(self.podman_root.display().to_string());
        args.push("--runroot".into());
        args.push(format!("{PODMAN_RUNROOT}/run"));
        args.push("--tmpdir".into());
        args.push(format!("{PODMAN_RUNROOT}/tmp"));
        args
    }

    fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(self.podman_args());
        cmd
    }

    fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("--host").arg(Self::docker_host());
        cmd
    }

    /// The variables the tests read (see the module documentation).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NSTRACE_DOCKER_HOST", Self::docker_host()),
            ("NSTRACE_TEST_IMAGE", IMAGE.to_string()),
            ("NSTRACE_RUNC_BUNDLE", self.bundle.display().to_string()),
            (
                "NSTRACE_RUNC_CONFIG",
                self.bundle.join("config.json").display().to_string(),
            ),
            ("NSTRACE_PODMAN_ARGS", self.podman_args().join(" ")),
            ("NSTRACE_PODMAN_RUN_ARGS", podman_run_args().join(" ")),
        ]
    }
}

/// Options for `podman run`: no network, and rlimits no higher than ours.
/// As root podman asks for nofile=1048576 and a high nproc, which needs
/// CAP_SYS_RESOURCE; nproc above 32768 fails here even under the hard limit.
fn podman_run_args() -> Vec<String> {
    let nofile = hard_limit(libc::RLIMIT_NOFILE).min(1 << 20);
    let nproc = hard_limit(libc::RLIMIT_NPROC).min(32768);
    vec![
        "--network".into(),
        "none".into(),
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        format!("nproc={nproc}:{nproc}"),
    ]
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_max
}

fn require_root(what: &str) -> Result<()> {
    if !crate::is_root() {
        bail!("{what} starts daemons and containers: run it as root (sudo cargo xtask ...)");
    }
    Ok(())
}

/// Installs docker.io (with containerd and runc), podman, runc,
/// busybox-static and strace with apt-get, if their commands are missing
/// (docker.io is about 290 MB).
pub fn ensure_packages() -> Result<()> {
    // The image needs the static busybox, not merely some busybox.
    crate::setup::install_missing(RUNTIME_TOOLS, &["busybox-static"])
}

/// The busybox root file system, built once (into a temporary directory,
/// then renamed, so that an interrupted build is not taken for a whole one).
fn rootfs(layout: &Layout) -> Result<()> {
    if layout.rootfs.join("bin/busybox").exists() {
        return Ok(());
    }
    let tmp = layout.dir.join("rootfs.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    println!("xtask: building the busybox root file system");
    let bin = tmp.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    fs::copy(BUSYBOX, bin.join("busybox"))
        .with_context(|| format!("cannot copy {BUSYBOX} (package busybox-static)"))?;
    let list = output(Command::new(BUSYBOX).arg("--list"))?;
    for applet in list.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", bin.join(applet))
            .with_context(|| format!("cannot link the applet {applet}"))?;
    }
    for dir in ["proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(tmp.join(dir))?;
    }
    fs::set_permissions(tmp.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    // A new tree makes the old tarball stale.
    if layout.tarball.exists() {
        fs::remove_file(&layout.tarball)?;
    }
    fs::rename(&tmp, &layout.rootfs)
        .with_context(|| format!("cannot rename {} to rootfs", tmp.display()))
}

fn tarball(layout: &Layout) -> Result<()> {
    if layout.tarball.exists() {
        return Ok(());
    }
    let tmp = layout.dir.join("rootfs.tar.tmp");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout.rootfs)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tmp)
        .arg("."))?;
    fs::rename(&tmp, &layout.tarball).with_context(|| format!("cannot rename {}", tmp.display()))
}

/// The base runc configuration: `runc spec` with `process.terminal` false,
/// Docker's default capabilities, no seccomp, and the shared read-only
/// rootfs by absolute path. The masked and read-only paths stay runc's
/// defaults (the proc mount in a new user namespace then fails with EPERM;
/// with both lists empty it succeeds).
fn bundle_config(layout: &Layout) -> Result<serde_json::Value> {
    let tmp = layout.dir.join("spec.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    run(Command::new("runc").arg("spec").arg("--bundle").arg(&tmp))?;
    let spec_file = tmp.join("config.json");
    let text = fs::read_to_string(&spec_file)
        .with_context(|| format!("cannot read {}", spec_file.display()))?;
    fs::remove_dir_all(&tmp)?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).context("runc spec wrote invalid JSON")?;
    let process = config
        .get_mut("process")
        .and_then(|p| p.as_object_mut())
        .context("runc spec has no process object")?;
    process.insert("terminal".into(), false.into());
    let caps: serde_json::Value = DEFAULT_CAPS.to_vec().into();
    let sets: serde_json::Map<String, serde_json::Value> =
        ["bounding", "effective", "permitted", "ambient"]
            .into_iter()
            .map(|set| (set.to_string(), caps.clone()))
            .collect();
    process.insert("capabilities".into(), sets.into());
    config["root"] = serde_json::json!({
        "path": layout.rootfs.display().to_string(),
        "readonly": true,
    });
    if let Some(linux) = config.get_mut("linux").and_then(|l| l.as_object_mut()) {
        linux.remove("seccomp");
    }
    Ok(config)
}

fn bundle(layout: &Layout) -> Result<()> {
    fs::create_dir_all(&layout.bundle)?;
    let config = bundle_config(layout)?;
    let text = serde_json::to_string_pretty(&config)?;
    let path = layout.bundle.join("config.json");
    if fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let tmp = layout.bundle.join("config.json.tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    let link = layout.bundle.join("rootfs");
    if fs::symlink_metadata(&link).is_err() {
        symlink(&layout.rootfs, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    Ok(())
}

fn quiet_success(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn podman_image(layout: &Layout) -> Result<()> {
    if quiet_success(layout.podman().args(["image", "exists", IMAGE])) {
        return Ok(());
    }
    println!("xtask: importing {IMAGE} into podman");
    run(layout
        .podman()
        .args(["import", "--quiet", "--change", "CMD [\"/bin/sh\"]"])
        .arg(&layout.tarball)
        .arg(IMAGE)
        .stdout(Stdio::null()))
}

fn docker_image(layout: &Layout) -> Result<()> {
    if quiet_success(layout.docker().args(["image", "inspect", IMAGE])) {
        return Ok(());
    }
    println!("xtask: importing {IMAGE} into the private dockerd");
    run(layout
        .docker()
        .args(["import", "--change", "CMD [\"/bin/sh\"]"])
        .arg(&layout.tarball)
        .arg(IMAGE)
        .stdout(Stdio::null()))
}

// --- processes -------------------------------------------------------------

/// Whether `pid` is still running. A zombie counts as gone, and is reaped
/// if it is our child (dockerd, when this process started it); a child
/// whose other threads are still exiting counts as running.
fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised comm, which may contain spaces.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        let mut status = 0;
        // SAFETY: WNOHANG never blocks. 0: our child, not yet reapable;
        // -1: not our child (its parent reaps it).
        return unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0;
    }
    true
}

fn comm(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_string())
}

fn cmdline(pid: i32) -> Option<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
}

/// Processes named `name` whose command line contains `needle`.
fn find_processes(name: &str, needle: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| comm(pid).as_deref() == Some(name))
        .filter(|&pid| cmdline(pid).is_some_and(|c| c.contains(needle)))
        .collect()
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: plain syscall; the pid was checked to be the process we mean.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !alive(pid) {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

/// SIGTERM, wait up to `timeout`, then SIGKILL.
fn terminate(pid: i32, what: &str, timeout: Duration) -> Result<()> {
    if !alive(pid) {
        return Ok(());
    }
    signal(pid, libc::SIGTERM);
    if wait_gone(pid, timeout) {
        return Ok(());
    }
    eprintln!(
        "xtask: {what} (pid {pid}) still runs {}s after SIGTERM; sending SIGKILL",
        timeout.as_secs()
    );
    signal(pid, libc::SIGKILL);
    if wait_gone(pid, Duration::from_secs(5)) {
        Ok(())
    } else {
        bail!("{what} (pid {pid}) survives SIGKILL")
    }
}

// --- the private dockerd ---------------------------------------------------

/// The pid of our dockerd, if its pid file names a running dockerd that
/// uses our data root.
fn dockerd_pid(layout: &Layout) -> Option<i32> {
    let pid: i32 = fs::read_to_string(&layout.pidfile)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let ours = alive(pid)
        && comm(pid).as_deref() == Some("dockerd")
        && cmdline(pid).is_some_and(|c| c.contains(&layout.data_root.display().to_string()));
    ours.then_some(pid)
}

fn docker_answers(layout: &Layout) -> bool {
    quiet_success(
        layout
            .docker()
            .args(["info", "--format", "{{.ServerVersion}}"]),
    )
}

/// The last lines of dockerd's log, for error messages.
fn log_tail(layout: &Layout) -> String {
    let Ok(mut file) = fs::File::open(&layout.log) else {
        return format!("(no log at {})", layout.log.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Starts the private dockerd unless it already runs; returns whether the
/// caller should stop it: it was started here, or left running by a run
/// that was killed (no `runtimes up` keeps it), which would otherwise
/// outlive every later run.
fn start_dockerd(layout: &Layout) -> Result<bool> {
    if let Some(pid) = dockerd_pid(layout) {
        wait_ready(layout, pid)?;
        let kept = layout.kept.exists();
        let whose = if kept {
            "kept by `cargo xtask runtimes up`"
        } else {
            "left by an interrupted run; stopped at the end"
        };
        println!("xtask: the private dockerd (pid {pid}) already runs ({whose})");
        return Ok(!kept);
    }
    if docker_answers(layout) {
        bail!(
            "a daemon already answers on {DOCKER_SOCKET} but it is not the one whose pid file is {}; stop it first",
            layout.pidfile.display()
        );
    }
    // A stale pid file makes dockerd refuse to start; a stale mark (from
    // before a reboot) would keep a later run's leftover.
    let _ = fs::remove_file(&layout.pidfile);
    let _ = fs::remove_file(&layout.kept);
    for dir in [&layout.data_root, &layout.exec_root] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Our own (empty) configuration, so that /etc/docker/daemon.json does
    // not apply.
    fs::write(&layout.daemon_json, "{}\n")?;
    let log = fs::File::create(&layout.log)
        .with_context(|| format!("cannot create {}", layout.log.display()))?;
    let mut cmd = Command::new("dockerd");
    cmd.arg("--data-root")
        .arg(&layout.data_root)
        .arg("--exec-root")
        .arg(&layout.exec_root)
        .arg("--pidfile")
        .arg(&layout.pidfile)
        .arg("--config-file")
        .arg(&layout.daemon_json)
        .arg("--host")
        .arg(Layout::docker_host())
        .args([
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a ^C meant for the tests must not reach it.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .context("cannot run dockerd (package docker.io)")?;
    let pid = i32::try_from(child.id()).context("dockerd's pid does not fit an i32")?;
    println!(
        "xtask: started the private dockerd (pid {pid}, log {})",
        layout.log.display()
    );
    if let Err(e) = wait_ready(layout, pid) {
        let _ = terminate(pid, "dockerd", Duration::from_secs(5));
        let _ = child.try_wait();
        return Err(e);
    }
    Ok(true)
}

fn wait_ready(layout: &Layout, pid: i32) -> Result<()> {
    let start = Instant::now();
    loop {
        if docker_answers(layout) {
            return Ok(());
        }
        if !alive(pid) {
            bail!(
                "dockerd (pid {pid}) exited before answering on {DOCKER_SOCKET}; the end of {}:\n{}",
                layout.log.display(),
                log_tail(layout)
            );
        }
        if start.elapsed() > DOCKERD_READY_TIMEOUT {
            bail!(
                "dockerd (pid {pid}) did not answer `docker info` on {DOCKER_SOCKET} within {}s; the end of {}:\n{}",
                DOCKERD_READY_TIMEOUT.as_secs(),
                layout.log.display(),
                log_tail(layout)
            );
        }
        sleep(Duration::from_millis(100));
    }
}

/// Stops the private dockerd (SIGTERM, then SIGKILL) and makes sure its
/// containerd stops too.
fn stop_dockerd(layout: &Layout) -> Result<()> {
    // dockerd starts containerd with `--config <exec root>/containerd/...`;
    // find it before dockerd goes, as it would be orphaned by a SIGKILL.
    let exec_root = layout.exec_root.display().to_string();
    let containerds = find_processes("containerd", &exec_root);
    match dockerd_pid(layout) {
        Some(pid) => {
            terminate(pid, "dockerd", DOCKERD_STOP_TIMEOUT)?;
            println!("xtask: stopped the private dockerd (pid {pid})");
        }
        None => println!("xtask: the private dockerd does not run"),
    }
    for pid in containerds {
        terminate(pid, "dockerd's containerd", Duration::from_secs(10))?;
    }
    let shims = find_processes("containerd-shim", &exec_root);
    if !shims.is_empty() {
        eprintln!(
            "xtask: warning: containerd shims of the private dockerd still run (pids {shims:?}); \
             their containers were not stopped"
        );
    }
    let _ = fs::remove_file(&layout.pidfile);
    Ok(())
}

// --- the whole set-up --------------------------------------------------------

/// A running set-up.
pub struct Session {
    layout: Layout,
    /// dockerd was started (or adopted) by this session.
    started_dockerd: bool,
}

impl Session {
    /// The variables the tests read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.layout.env()
    }

    /// Keeps dockerd running after this process, until `runtimes down`.
    pub fn keep(self) -> Result<()> {
        fs::write(&self.layout.kept, "")
            .with_context(|| format!("cannot create {}", self.layout.kept.display()))
    }

    /// Stops dockerd if this session started it.
    pub fn finish(self) -> Result<()> {
        if self.started_dockerd {
            stop_dockerd(&self.layout)
        } else {
            println!(
                "xtask: leaving the private dockerd running (started by `cargo xtask runtimes up`)"
            );
            Ok(())
        }
    }
}

/// Packages, rootfs, tarball, runc bundle, podman image, the private
/// dockerd and its image. Idempotent; a dockerd that already runs is kept.
pub fn up(workspace: &Path) -> Result<Session> {
    require_root("the container runtime set-up")?;
    ensure_packages()?;
    let layout = Layout::new(workspace);
    fs::create_dir_all(&layout.dir)
        .with_context(|| format!("cannot create {}", layout.dir.display()))?;
    rootfs(&layout)?;
    tarball(&layout)?;
    bundle(&layout)?;
    podman_image(&layout)?;
    let started_dockerd = start_dockerd(&layout)?;
    if let Err(e) = docker_image(&layout) {
        if started_dockerd {
            let _ = stop_dockerd(&layout);
        }
        return Err(e);
    }
    Ok(Session {
        layout,
        started_dockerd,
    })
}

/// Stops the private dockerd (the files stay, for the next `up`).
pub fn down(workspace: &Path) -> Result<()> {
    require_root("stopping the private dockerd")?;
    let layout = Layout::new(workspace);
    let _ = fs::remove_file(&layout.kept);
    stop_dockerd(&layout)
}
