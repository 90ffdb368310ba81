//! Project tasks: `cargo xtask setup | build | demo | test | lint | bench | runtimes up|down`.
//!
//! Every task does its own set-up first, idempotently, so that a fresh
//! machine needs nothing but `cargo xtask demo` or `cargo xtask test`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod runtimes;
mod setup;
mod vm;

#[derive(Parser)]
#[command(name = "xtask", about = "nstrace project tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (nightly rust-src, bpf-linker, Debian packages).
    Setup,
    /// Build everything; the binary lands at target/release/nstrace.
    Build,
    /// Build, then trace the classic refusal: a proc mount in a new user
    /// namespace under a masked /proc file gets EPERM (needs root).
    Demo,
    /// Every test, including those that load real BPF programs and those
    /// that run docker, podman and runc (as root; see `runtimes up`); then,
    /// unless test arguments are given, `test-vm` on the default kernels.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// fmt check and clippy, for the userspace crates and the BPF crate.
    Lint,
    /// The BPF and explanation tests on stock Debian kernels under QEMU
    /// (default: bookworm's 6.1 and 6.12), one result line per kernel.
    TestVm {
        /// A kernel series (`6.1`, `6.12`) or a full package name; repeatable.
        #[arg(long = "kernel", value_name = "NAME")]
        kernels: Vec<String>,
    },
    /// Performance and loss, side by side with strace and bpftrace; prints
    /// a table (as root).
    Bench {
        /// Smaller workloads and fewer repetitions (about a minute).
        #[arg(long)]
        quick: bool,
    },
    /// The container runtimes the tests use (a private dockerd, podman,
    /// runc), for manual work (as root).
    Runtimes {
        #[command(subcommand)]
        action: RuntimesAction,
    },
}

#[derive(Subcommand)]
enum RuntimesAction {
    /// Install, build the busybox image and runc bundle, start the private
    /// dockerd, and print the tests' variables as `export` lines.
    Up,
    /// Stop the private dockerd (and its containerd).
    Down,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match args.task {
        Task::Setup => setup::all(),
        Task::Build => build(),
        Task::Demo => demo(&root),
        Task::Test { cargo_args } => test(&root, &cargo_args),
        Task::Lint => lint(),
        Task::TestVm { kernels } => vm::test_vm(&root, &kernels),
        Task::Bench { quick } => bench::bench(&root, quick),
        Task::Runtimes { action } => match action {
            RuntimesAction::Up => runtimes_up(&root),
            RuntimesAction::Down => runtimes::down(&root),
        },
    }
}

fn workspace_root() -> Result<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Runs a command, failing with its status if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn build() -> Result<()> {
    setup::toolchain()?;
    run(cargo().args(["build", "--release", "-p", "nstrace", "--bins"]))?;
    println!("xtask: built target/release/nstrace");
    Ok(())
}

pub(crate) fn is_root() -> bool {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::geteuid() == 0 }
}

fn demo(root: &Path) -> Result<()> {
    if !is_root() {
        bail!(
            "the demo loads BPF programs and makes mounts: run it as root (sudo cargo xtask demo)"
        );
    }
    build()?;
    let nstrace = root.join("target/release/nstrace");
    // A /proc file to mask, as a container runtime does.
    let masked = ["/proc/keys", "/proc/timer_list", "/proc/kcore", "/proc/sched_debug"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("no /proc file to mask (tried /proc/keys, /proc/timer_list, /proc/kcore, /proc/sched_debug)")?;
    println!();
    println!("nstrace demo: the classic refusal, without a container runtime");
    println!("  1. a private mount namespace where /dev/null is bind-mounted over {masked}");
    println!("     (what docker, podman and runc do to the masked /proc paths);");
    println!("  2. under nstrace: unshare -Umpfr mount -t proc proc /proc");
    println!("     The new user namespace's mount namespace inherits the masking mount,");
    println!("     locked; a fresh proc mount would reveal what it hides, so the kernel");
    println!("     refuses it with EPERM (\"mount too revealing\").");
    println!();
    let color = if std::io::stdout().is_terminal() {
        "always"
    } else {
        "never"
    };
    let script = format!(
        "mount --bind /dev/null {masked} && exec {} --color {color} -- unshare -Umpfr mount -t proc proc /proc",
        shell_quote(nstrace.as_os_str())
    );
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run unshare (util-linux)")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (mut saw_unshare, mut saw_eperm, mut saw_why) = (false, false, false);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        saw_unshare |= line.contains("unshare(") && line.contains("CLONE_NEWUSER");
        saw_eperm |= line.contains("mount(\"proc\", \"/proc\", \"proc\"") && line.contains("EPERM");
        saw_why |= line.contains("why:") && line.contains("(mount_too_revealing)");
    }
    let status = child.wait()?;
    println!();
    if saw_unshare && saw_eperm && saw_why {
        println!(
            "demo: traced the unshare and the refused proc mount (EPERM), explained as \
             mount_too_revealing naming {masked}; the command exited with {}.",
            status
                .code()
                .map_or_else(|| status.to_string(), |c| c.to_string())
        );
        Ok(())
    } else {
        bail!(
            "demo: expected an unshare(CLONE_NEWUSER...) line, a proc mount failing with EPERM \
             and its explanation (mount_too_revealing) in the trace"
        )
    }
}

fn shell_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}

fn runtimes_up(root: &Path) -> Result<()> {
    let session = runtimes::up(root)?;
    println!("# The private dockerd stays up until `cargo xtask runtimes down`.");
    println!("# For the tests' variables in this shell: eval \"$(cargo xtask runtimes up | grep ^export)\"");
    for (name, value) in session.env() {
        println!("export {name}={}", shell_quote(OsStr::new(&value)));
    }
    session.keep()
}

/// Sets up the container runtimes (as root), runs the tests with their
/// variables, and stops the dockerd it started, whatever the tests did.
fn test(root: &Path, extra: &[String]) -> Result<()> {
    setup::all()?;
    if std::env::var("CI").is_ok_and(|v| v == "true") && !is_root() {
        bail!("CI=true but not root: the BPF tests cannot run, and they must not be skipped");
    }
    if !is_root() {
        println!(
            "xtask: not root: no container runtimes; the tests that need them skip themselves"
        );
        return cargo_test(extra, &[]);
    }
    let session = runtimes::up(root)?;
    let env = session.env();
    // Survive a ^C (the tests get it and stop) so as to stop dockerd; a
    // handler, unlike SIG_IGN, does not pass on to the programs we run.
    extern "C" fn on_interrupt(_: libc::c_int) {}
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let tested = cargo_test(extra, &env);
    match (tested, session.finish()) {
        (Err(e), Err(stop)) => {
            eprintln!("xtask: {stop:#}");
            return Err(e);
        }
        (tested, finished) => tested.and(finished)?,
    }
    // The same tests on stock kernels; a filtered run is a developer's
    // quick loop and skips them.
    if extra.is_empty() {
        vm::test_vm(root, &[])?;
    }
    Ok(())
}

/// `cargo test` with `env` added, ending on one total.
fn cargo_test(extra: &[String], env: &[(&str, String)]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--lib", "--tests"]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    // Pass the output through and add up the harnesses' results, so that the
    // run ends on one total.
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |what: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(what))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
            ignored += count("ignored");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn lint() -> Result<()> {
    setup::toolchain()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    run(Command::new("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir("nstrace-ebpf"))
}
