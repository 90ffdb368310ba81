//! `cargo xtask test-vm [--kernel NAME]...`: the BPF integration tests and
//! the explanation tests on stock Debian kernels, under QEMU.
//!
//! This machine's kernel has the `capability:cap_capable` tracepoint and
//! refuses trampolines; stock kernels (bookworm's 6.1, 6.12 from
//! bookworm-security) are the opposite. Each kernel package is fetched from
//! the configured Debian archive (`apt-get download`, unpacked with
//! `dpkg -x`, nothing installed), an initramfs is built with the test
//! binaries at the very paths cargo gave them (they name nstrace by its
//! absolute path) and the programs they run with their libraries, and the
//! kernel boots it under QEMU's software emulation (this machine's KVM
//! cannot run stock kernels). The guest prints `nstrace doctor` (which
//! hook each decision point uses) and the tests' results on the serial
//! console; one line per kernel sums them up.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::run;
use crate::setup::output;

/// Kernels tested when none is named: bookworm's 6.1 and bookworm-security's 6.12.
pub const DEFAULT_KERNELS: [&str; 2] = ["6.1", "6.12"];
/// The test binaries run in the guest (cargo's names for tests/*.rs).
const GUEST_TESTS: [&str; 3] = ["trace", "explain", "hooks"];
/// Programs the tests and the guest's init run.
const GUEST_PROGRAMS: &[&str] = &[
    "sh",
    "grep",
    "cp",
    "switch_root",
    "unshare",
    "nsenter",
    "setpriv",
    "mount",
    "umount",
    "pivot_root",
    "timeout",
    "readlink",
    "id",
    "true",
    "false",
    "sleep",
    "mkdir",
    "touch",
    "cat",
    "echo",
    "env",
    "chroot",
    "ls",
    "rm",
    "seq",
];
/// Debian packages: QEMU, and cpio for the initramfs.
const HOST_TOOLS: &[(&str, &str)] = &[("qemu-system-x86_64", "qemu-system-x86"), ("cpio", "cpio")];
/// A guest that has not finished by then is a failure.
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// One kernel to boot.
struct Kernel {
    /// The Debian package.
    package: String,
    /// Its vmlinuz, unpacked.
    vmlinuz: PathBuf,
}

/// What a guest reported.
#[derive(Debug, Default)]
struct GuestResult {
    release: String,
    /// The capability hook of each doctor report, in order.
    cap_hooks: Vec<String>,
    /// The syscall hook of each doctor report, in order.
    syscall_hooks: Vec<String>,
    /// The syscall hooks the doctor reports found also loading.
    syscall_loads: Vec<String>,
    passed: u64,
    failed: u64,
    /// Test binary runs started (NSTRACE-VM-TEST lines).
    runs: usize,
    binaries_failed: Vec<String>,
    finished: bool,
}

/// Whether a guest ran everything it should have, and it all passed.
fn guest_ok(r: &GuestResult) -> bool {
    r.finished && r.failed == 0 && r.binaries_failed.is_empty() && r.passed > 0
        // Each test binary; explain's capability tests again with kprobes
        // forced; the trace and explanation tests again on fentry.
        && r.runs == GUEST_TESTS.len() + 3
        // Stock kernels lack the cap_capable tracepoint: fexit (or kprobe)
        // must really carry the capability checks. One doctor report per
        // pass: the second has kprobes forced.
        && r.cap_hooks.len() == 3
        && r.cap_hooks.iter().all(|h| h != "none")
        && r.cap_hooks[1].starts_with("kprobe")
        // Per-syscall events first, then the raw tracepoints (the
        // fallback), forced in the second pass, then fentry (asked for) in
        // the third; the first doctor found fentry loading too (the tests
        // that try each hook the kernel allows then tried it).
        && r.syscall_hooks.len() == 3
        && r.syscall_hooks[0].starts_with("tracepoints syscalls:")
        && r.syscall_hooks[1].starts_with("raw tracepoints")
        && r.syscall_hooks[2].starts_with("fentry/fexit")
        && r.syscall_loads.iter().any(|h| h.starts_with("fentry/fexit"))
}

/// Runs the tests in a guest for each kernel (`names`, or the defaults).
pub fn test_vm(root: &Path, names: &[String]) -> Result<()> {
    if !crate::is_root() {
        bail!("test-vm needs root (apt-get for QEMU and the kernels)");
    }
    crate::setup::install_tools(HOST_TOOLS)?;
    let names: Vec<String> = if names.is_empty() {
        DEFAULT_KERNELS.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    let dir = root.join("target/vm");
    fs::create_dir_all(&dir)?;
    let kernels = names
        .iter()
        .map(|n| fetch_kernel(&dir, n))
        .collect::<Result<Vec<_>>>()?;
    let tests = build_tests(root)?;
    let initrd = initramfs(root, &dir, &tests)?;
    // One QEMU per kernel, side by side (each uses one host core).
    let started = Instant::now();
    let handles: Vec<_> = kernels
        .into_iter()
        .map(|k| {
            let (initrd, log) = (initrd.clone(), dir.join(format!("{}.log", k.package)));
            std::thread::spawn(move || (boot(&k, &initrd, &log), k.package, log))
        })
        .collect();
    let mut failures = 0;
    for h in handles {
        let (result, package, log) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a guest thread panicked"))?;
        match result {
            Ok(r) => {
                let ok = guest_ok(&r);
                println!(
                    "vm {}: {} ({} passed, {} failed{}); capability checks via {}; syscalls via {}; log {}",
                    if r.release.is_empty() {
                        &package
                    } else {
                        &r.release
                    },
                    if ok { "ok" } else { "FAILED" },
                    r.passed,
                    r.failed,
                    if r.finished {
                        ""
                    } else {
                        ", the guest did not finish"
                    },
                    if r.cap_hooks.is_empty() {
                        "none".to_string()
                    } else {
                        r.cap_hooks.join(", then ")
                    },
                    if r.syscall_hooks.is_empty() {
                        "none".to_string()
                    } else {
                        r.syscall_hooks.join(", then (forced) ")
                    },
                    log.display()
                );
                if !ok {
                    failures += 1;
                }
            }
            Err(e) => {
                println!("vm {package}: FAILED: {e:#}");
                failures += 1;
            }
        }
    }
    println!(
        "vm: {} kernel(s) failed, in {:.0} s",
        failures,
        started.elapsed().as_secs_f64()
    );
    if failures > 0 {
        bail!("{failures} guest kernel(s) failed");
    }
    Ok(())
}

/// The newest cloud kernel package of series `name` (`6.1`, `6.12`), or
/// the package `name` itself, downloaded and unpacked once.
fn fetch_kernel(dir: &Path, name: &str) -> Result<Kernel> {
    let package = if name.starts_with("linux-image-") {
        name.to_string()
    } else {
        let series = regex_escape(name);
        let pattern = format!("^linux-image-{series}[.-][0-9].*-cloud-amd64-unsigned$");
        let found = output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
        let mut names: Vec<String> = found
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        names.sort_by(|a, b| version_cmp(a, b));
        names
            .pop()
            .with_context(|| format!("no Debian cloud kernel package matches {pattern}"))?
    };
    let unpacked = dir.join("kernels").join(&package);
    if !unpacked.join("boot").is_dir() {
        println!("xtask: fetching {package}");
        let dl = dir.join("download");
        fs::create_dir_all(&dl)?;
        // apt's sandbox user cannot write here; it warns and downloads as root.
        run(Command::new("apt-get")
            // As root into a root-owned directory (apt's sandbox user could
            // not write there and would only warn).
            .args(["-o", "APT::Sandbox::User=root", "download", "-q", &package])
            .current_dir(&dl))?;
        let deb = fs::read_dir(&dl)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download left no {package} .deb"))?;
        let tmp = dir.join("kernels").join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
        fs::rename(&tmp, &unpacked)?;
        fs::remove_file(&deb)?;
    }
    let vmlinuz = fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    Ok(Kernel { package, vmlinuz })
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Compares package names by their numbers (6.1.0-9 < 6.1.0-56).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    nums(a).cmp(&nums(b))
}

/// Builds the test binaries and returns their paths.
fn build_tests(root: &Path) -> Result<Vec<PathBuf>> {
    let out = crate::cargo()
        // The same selection as the host run, so that nothing is rebuilt.
        .args([
            "test",
            "--release",
            "--lib",
            "--tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = v["target"]["name"].as_str().unwrap_or_default();
        let is_test = v["target"]["kind"] == serde_json::json!(["test"]);
        if is_test && GUEST_TESTS.contains(&name) {
            if let Some(exe) = v["executable"].as_str() {
                found.push(PathBuf::from(exe));
            }
        }
    }
    if found.len() != GUEST_TESTS.len() {
        bail!("expected test binaries {GUEST_TESTS:?}, found {found:?}");
    }
    Ok(found)
}

/// The initramfs: the programs with their libraries, nstrace and the test
/// binaries at their own absolute paths, and an init that runs them.
fn initramfs(root: &Path, dir: &Path, tests: &[PathBuf]) -> Result<PathBuf> {
    let tree = dir.join("root");
    let _ = fs::remove_dir_all(&tree);
    for d in [
        "usr/bin", "usr/sbin", "lib", "lib64", "proc", "sys", "dev", "tmp", "mnt", "etc", "run",
    ] {
        fs::create_dir_all(tree.join(d))?;
    }
    symlink("usr/bin", tree.join("bin"))?;
    symlink("usr/sbin", tree.join("sbin"))?;
    let mut files: Vec<PathBuf> = GUEST_PROGRAMS
        .iter()
        .map(|p| which(p))
        .collect::<Result<_>>()?;
    let release = root.join("target/release");
    files.push(release.join("nstrace"));
    files.push(release.join("nstrace-exercise"));
    files.push(release.join("nstrace-bench"));
    files.extend(tests.iter().cloned());
    for f in &files {
        copy_with_libs(&tree, f)?;
    }
    fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )?;
    fs::write(tree.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let list: Vec<String> = tests.iter().map(|t| t.display().to_string()).collect();
    fs::write(tree.join("tests"), list.join("\n") + "\n")?;
    let nstrace = release.join("nstrace");
    write_exec(&tree.join("init"), INIT)?;
    write_exec(
        &tree.join("init2"),
        &INIT2.replace("@NSTRACE@", &nstrace.display().to_string()),
    )?;
    let image = dir.join("initrd.img");
    let cpio = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet")
        .current_dir(&tree)
        .output()
        .context("cannot run cpio")?;
    if !cpio.status.success() {
        bail!("cpio failed: {}", String::from_utf8_lossy(&cpio.stderr));
    }
    fs::File::create(&image)?.write_all(&cpio.stdout)?;
    Ok(image)
}

/// The first init: the initramfs root cannot be pivot_root'ed (it has no
/// parent), and the tests pivot: move everything into a tmpfs first.
const INIT: &str = "#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs root /mnt
for d in /*; do case $d in /proc|/sys|/dev|/mnt|/run) ;; *) cp -a $d /mnt/ ;; esac; done
mkdir -p /mnt/proc /mnt/sys /mnt/dev /mnt/tmp /mnt/run /mnt/mnt /mnt/scratch
exec switch_root /mnt /init2
";

/// The second init: the tests, then power off.
const INIT2: &str = "#!/bin/sh
# The tests' scratch space is a tmpfs of its own: /tmp may hold the very
# checkout the binaries came from (their paths are kept).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin CI=true RUST_BACKTRACE=1 TMPDIR=/scratch
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs scratch /scratch
mount -t tracefs tracefs /sys/kernel/tracing
echo \"NSTRACE-VM-BEGIN $(cat /proc/sys/kernel/osrelease)\"
@NSTRACE@ doctor
for t in $(cat /tests); do
  echo \"NSTRACE-VM-TEST $t\"
  $t --test-threads=1 2>&1
  echo \"NSTRACE-VM-STATUS $?\"
done
# The kprobe + kretprobe path, forced, for the capability explanations,
# with syscalls seen through the raw tracepoints (the fallback).
export NSTRACE_CAP_HOOK=kprobe NSTRACE_SYSCALL_HOOK=raw_syscalls
@NSTRACE@ doctor
for t in $(grep /explain- /tests); do
  echo \"NSTRACE-VM-TEST $t (kprobe)\"
  $t --test-threads=1 capability userns_mountable lsm_denial 2>&1
  echo \"NSTRACE-VM-STATUS $?\"
done
# Syscalls on fentry/fexit (asked for), for every trace and explanation
# test but the seccomp one: calls seccomp refuses never reach the
# syscall's function, and this hook does not see them (as documented).
unset NSTRACE_CAP_HOOK
export NSTRACE_SYSCALL_HOOK=fentry
@NSTRACE@ doctor
for t in $(grep -e /trace- -e /explain- /tests); do
  echo \"NSTRACE-VM-TEST $t (fentry)\"
  $t --test-threads=1 --skip seccomp_filter_is_a_seccomp_denial 2>&1
  echo \"NSTRACE-VM-STATUS $?\"
done
echo NSTRACE-VM-END
echo o > /proc/sysrq-trigger
sleep 60
";

fn write_exec(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not installed (needed in the guest)"))
}

/// Copies `file` (symlinks followed) to the same path under `tree`, with
/// the shared libraries ldd lists for it.
fn copy_with_libs(tree: &Path, file: &Path) -> Result<()> {
    let mut all = vec![file.to_path_buf()];
    if let Ok(out) = Command::new("ldd").arg(file).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) {
                all.push(PathBuf::from(lib));
            }
        }
    }
    for f in all {
        let rel = f.strip_prefix("/").unwrap_or(&f);
        let dest = tree.join(rel);
        if dest.exists() {
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&f, &dest).with_context(|| format!("cannot copy {}", f.display()))?;
    }
    Ok(())
}

/// Boots `k` with the initramfs, logs the console, and reads the results.
fn boot(k: &Kernel, initrd: &Path, log: &Path) -> Result<GuestResult> {
    let console = fs::File::create(log)?;
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-m",
            "2G",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-nic", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(parse_console(&String::from_utf8_lossy(&fs::read(log)?)))
}

/// Reads the guest's report from its console.
fn parse_console(text: &str) -> GuestResult {
    let mut r = GuestResult::default();
    let mut section = "";
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches(|c: char| c.is_control() || c == '[' || c == '?');
        if let Some(rel) = line.split("NSTRACE-VM-BEGIN ").nth(1) {
            r.release = rel.trim().to_string();
        } else if line.trim_end() == "capability checks:" {
            section = "cap";
        } else if line.trim_end() == "syscalls:" {
            section = "syscalls";
        } else if let Some(h) = line.trim().strip_prefix("in use:") {
            match section {
                "cap" => r.cap_hooks.push(h.trim().to_string()),
                "syscalls" => r.syscall_hooks.push(h.trim().to_string()),
                _ => {}
            }
        } else if let Some(h) = line.trim().strip_prefix("loads:") {
            if section == "syscalls" {
                r.syscall_loads.push(h.trim().to_string());
            }
        } else if let Some(t) = line.strip_prefix("NSTRACE-VM-TEST ") {
            current = t.trim().to_string();
            r.runs += 1;
        } else if let Some(st) = line.strip_prefix("NSTRACE-VM-STATUS ") {
            if st.trim() != "0" {
                r.binaries_failed.push(current.clone());
            }
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |what: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(what))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            r.passed += count("passed");
            r.failed += count("failed");
        } else if line.contains("NSTRACE-VM-END") {
            r.finished = true;
        } else if !line.starts_with(' ') {
            // The next heading (or anything else): out of the section.
            section = "";
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_report_is_read() {
        let text = "\u{1b}c\u{1b}[?7lNSTRACE-VM-BEGIN 6.1.0-56-cloud-amd64\n\
                    kernel 6.1.0-56-cloud-amd64\nsyscalls:\n  in use:  tracepoints syscalls:x\n\
                    \x20 loads:   fentry/fexit y (not needed)\n\
                    capability checks:\n  in use:  fexit cap_capable\n\
                    \x20 loads:   kprobe z (not needed)\n\
                    kernel log lines:\n  in use:  tracepoint printk:console\n\
                    NSTRACE-VM-TEST /x/trace-1\n\
                    test result: ok. 19 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
                    NSTRACE-VM-STATUS 0\nNSTRACE-VM-TEST /x/explain-2\n\
                    test result: FAILED. 18 passed; 1 failed; 0 ignored\nNSTRACE-VM-STATUS 101\n\
                    NSTRACE-VM-END\n";
        let r = parse_console(text);
        assert_eq!(r.release, "6.1.0-56-cloud-amd64");
        assert_eq!(r.cap_hooks, vec!["fexit cap_capable".to_string()]);
        assert_eq!(r.syscall_hooks, vec!["tracepoints syscalls:x".to_string()]);
        assert_eq!(
            r.syscall_loads,
            vec!["fentry/fexit y (not needed)".to_string()]
        );
        assert_eq!((r.passed, r.failed), (37, 1));
        assert_eq!(r.binaries_failed, vec!["/x/explain-2".to_string()]);
        assert!(r.finished);
        // A failed test, one pass instead of three.
        assert!(!guest_ok(&r));
    }

    #[test]
    fn kernel_packages_sort_by_their_numbers() {
        let mut v = [
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-10-cloud-amd64-unsigned",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v[2], "linux-image-6.1.0-56-cloud-amd64-unsigned");
    }
}
