//! Idempotent set-up of a fresh machine: the nightly's rust-src, a
//! bpf-linker linked against the nightly's own libLLVM, Debian packages.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// bpf-linker release known to build against LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Programs the tests and the demo run, and the Debian package of each.
const DEBIAN_TOOLS: &[(&str, &str)] = &[
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("mount", "mount"),
    ("ldd", "libc-bin"),
];

/// Everything.
pub fn all() -> Result<()> {
    toolchain()?;
    debian_packages()
}

/// rust-src for the nightly, and a matching bpf-linker.
pub fn toolchain() -> Result<()> {
    nightly()?;
    bpf_linker()
}

/// Runs a command and returns its standard output, failing with its
/// standard error if it fails.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        println!("xtask: installing the nightly toolchain (for the BPF target)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        println!(
            "xtask: adding rust-src to the nightly toolchain (build-std for bpfel-unknown-none)"
        );
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// The nightly's own shared libLLVM (bpf-linker must use the same LLVM as
/// the rustc that emits the bitcode).
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let found = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        });
    found.with_context(|| format!("the nightly toolchain has no libLLVM in {}", lib.display()))
}

fn llvm_major() -> Result<String> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV names no LLVM version")?;
    Ok(version.split('.').next().unwrap_or(version).to_string())
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// Whether the installed bpf-linker runs and is linked against `libllvm`.
fn bpf_linker_matches(libllvm: &std::path::Path) -> bool {
    let Ok(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let path = path.trim().to_string();
    if output(Command::new(&path).arg("--version")).is_err() {
        return false;
    }
    let Some(name) = libllvm.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    output(Command::new("ldd").arg(&path))
        .map(|ldd| {
            ldd.lines()
                .any(|l| l.contains(name) && !l.contains("not found"))
        })
        .unwrap_or(false)
}

fn bpf_linker() -> Result<()> {
    let libllvm = nightly_libllvm()?;
    if bpf_linker_matches(&libllvm) {
        return Ok(());
    }
    let major = llvm_major()?;
    println!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} ({}); about a minute",
        libllvm.display()
    );
    // A prefix that lasts: bpf-linker records an rpath into it.
    let prefix = home()?.join(".local/share/nstrace/llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let file_name = libllvm.file_name().context("libLLVM has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_matches(&libllvm) {
        bail!(
            "bpf-linker was installed but does not run against {}",
            libllvm.display()
        );
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    install_tools(DEBIAN_TOOLS)
}

/// Whether Debian package `pkg` is installed.
fn package_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

/// Whether `name` is a command on the PATH.
fn have_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian package of each `(program, package)` whose program
/// is not on the PATH.
pub(crate) fn install_tools(tools: &[(&str, &str)]) -> Result<()> {
    install_missing(tools, &[])
}

/// [`install_tools`], plus `packages` that must be installed whatever the
/// PATH has.
pub(crate) fn install_missing(tools: &[(&str, &str)], packages: &[&str]) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| !have_command(tool))
        .map(|(_, pkg)| *pkg)
        .chain(packages.iter().copied().filter(|p| !package_installed(p)))
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
