//! `cargo xtask bench`: nstrace side by side with strace and bpftrace, in
//! one run, with medians over repeated runs; prints one table (also written
//! to `target/bench/last.md`).
//!
//! 1. namespace-heavy workload (`nstrace-bench ns N`): the workload's own
//!    time, untraced and under each tracer (so that tracer start-up, which
//!    benchmark 3 measures, does not count twice), with how many of the new
//!    namespaces' tables each nstrace variant read while they lived; an
//!    idle bpftrace program (the kernel's floor for any syscall tracer) and
//!    nstrace polling every 100 ms (its kernel side, userspace mostly
//!    asleep) split the cost;
//! 2. unrelated work (`nstrace-bench noise N`) while `nstrace --all` runs;
//! 3. start-up: `TRACER -- true`, total wall time;
//! 4. the userspace pipeline (criterion, `nstrace/benches/pipeline.rs`);
//! 5. peak memory (max RSS) of nstrace tracing 100,000 failing umount2
//!    calls, for several ring-buffer sizes, with the events reported and
//!    lost; and once with the kernel offsets not cached yet (a first run).
//!
//! Runs of one benchmark are interleaved (untraced, nstrace, strace,
//! bpftrace, then again), and each ratio is the median of the per-round
//! ratios, so that drift on a shared machine hits every variant alike.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, run, setup};

/// Sizes and repetitions of one run.
struct Plan {
    /// Rounds of `nstrace-bench ns`.
    ns_rounds: u64,
    /// Rounds of `nstrace-bench noise` (2 syscalls each).
    noise_rounds: u64,
    /// Repetitions of benchmarks 1 and 2.
    reps: usize,
    /// Repetitions of benchmark 3.
    startup_reps: usize,
    /// Calls of the memory benchmark.
    mem_calls: u64,
    /// Ring-buffer sizes the memory benchmark tries.
    buffer_sizes: &'static [&'static str],
    /// criterion's measurement time per benchmark, in seconds.
    criterion_secs: u32,
}

const FULL: Plan = Plan {
    ns_rounds: 2_000,
    noise_rounds: 2_000_000,
    reps: 7,
    startup_reps: 15,
    mem_calls: 100_000,
    buffer_sizes: &["256K", "1M", "4M", "16M"],
    criterion_secs: 5,
};

const QUICK: Plan = Plan {
    ns_rounds: 500,
    noise_rounds: 500_000,
    reps: 3,
    startup_reps: 5,
    mem_calls: 100_000,
    buffer_sizes: &["1M", "4M"],
    criterion_secs: 2,
};

/// The syscalls strace and bpftrace are limited to (nstrace's own set, as
/// far as the workload makes them).
const STRACE_CALLS: &str = "trace=clone,clone3,fork,vfork,unshare,setns,mount,umount2";

/// The bpftrace equivalent of nstrace for the workload: entry with decoded
/// arguments, exit with the result, fork and exit of the processes.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_unshare /comm == "nstrace-bench"/ { printf("%d unshare %x\n", pid, args->unshare_flags); }
tracepoint:syscalls:sys_enter_mount /comm == "nstrace-bench"/ { printf("%d mount %s %s %s %x\n", pid, str(args->dev_name), str(args->dir_name), str(args->type), args->flags); }
tracepoint:syscalls:sys_enter_umount /comm == "nstrace-bench"/ { printf("%d umount2 %s %d\n", pid, str(args->name), args->flags); }
tracepoint:syscalls:sys_exit_unshare, tracepoint:syscalls:sys_exit_mount, tracepoint:syscalls:sys_exit_umount, tracepoint:syscalls:sys_exit_clone, tracepoint:syscalls:sys_exit_clone3 /comm == "nstrace-bench"/ { printf("%d %s = %d\n", pid, probe, args->ret); }
tracepoint:sched:sched_process_fork /comm == "nstrace-bench"/ { printf("%d fork %d\n", args->parent_pid, args->child_pid); }
tracepoint:sched:sched_process_exit /comm == "nstrace-bench"/ { printf("%d exit\n", pid); }
"#;

/// A tracer that only enables one syscall event the workload never makes:
/// what any syscall-tracepoint tracer costs the other syscalls (the kernel
/// then takes its syscall slow path for every task).
const IDLE_SCRIPT: &str = "tracepoint:syscalls:sys_enter_pivot_root { @ = count(); }";

/// Where the binaries and scratch files are.
struct Env {
    nstrace: PathBuf,
    helper: PathBuf,
    scratch: PathBuf,
}

/// One row of the table.
struct Row {
    bench: String,
    variant: String,
    value: String,
    ratio: String,
    goal: String,
    met: Option<bool>,
}

impl Row {
    fn new(bench: &str, variant: &str, value: String) -> Self {
        Self {
            bench: bench.into(),
            variant: variant.into(),
            value,
            ratio: String::new(),
            goal: String::new(),
            met: None,
        }
    }
    fn ratio(mut self, r: f64) -> Self {
        self.ratio = format!("{r:.3}x");
        self
    }
    fn goal(mut self, goal: &str, met: bool) -> Self {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

/// Runs every benchmark and prints the table.
pub fn bench(root: &Path, quick: bool) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmarks load BPF programs: run them as root");
    }
    setup::toolchain()?;
    setup::install_tools(&[("strace", "strace"), ("bpftrace", "bpftrace")])?;
    run(cargo().args(["build", "--release", "-p", "nstrace", "--bins"]))?;
    let plan = if quick { &QUICK } else { &FULL };
    let scratch = root.join("target/bench");
    std::fs::create_dir_all(&scratch)?;
    let env = Env {
        nstrace: root.join("target/release/nstrace"),
        helper: root.join("target/release/nstrace-bench"),
        scratch,
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    rows.extend(ns_workload(&env, plan)?);
    rows.extend(unrelated_work(&env, plan)?);
    rows.extend(startup(&env, plan)?);
    rows.extend(pipeline(plan)?);
    rows.extend(memory(&env, plan)?);
    let table = render(&rows, plan, quick, started.elapsed());
    println!("\n{table}");
    std::fs::write(env.scratch.join("last.md"), &table)?;
    println!("(also in target/bench/last.md)");
    Ok(())
}

/// A command line to run, as program and arguments.
type Argv = Vec<String>;

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// Runs `argv`, returns its wall time and its standard output (its
/// standard error goes to `log`).
fn timed(argv: &[String], log: &Path) -> Result<(Duration, String)> {
    let log_file = std::fs::File::create(log)?;
    let start = Instant::now();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(log_file)
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed ({}); see {}",
            argv.join(" "),
            out.status,
            log.display()
        );
    }
    Ok((wall, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The helper's own line (`MODE ... ELAPSED_NS`): its fields after the mode.
fn helper_line(stdout: &str, mode: &str) -> Result<Vec<u64>> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{mode} ")))
        .with_context(|| format!("no `{mode}` line from the helper in {stdout:?}"))?;
    line.split_whitespace()
        .skip(1)
        .map(|f| f.parse().context("bad number from the helper"))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Variants of a side-by-side benchmark: name and command line.
fn variants(env: &Env, workload: &[String], tracers: &[&str]) -> Vec<(String, Argv)> {
    let out = |name: &str| s(env.scratch.join(format!("{name}.out")));
    let mut v = vec![("untraced".to_string(), workload.to_vec())];
    for t in tracers {
        // "X (HOOK)": X made to observe syscalls with HOOK (the raw syscall
        // tracepoints, the fallback; fentry, asked for) instead of the
        // per-syscall events, for comparison.
        let hook = ["raw_syscalls", "fentry"]
            .into_iter()
            .find(|h| t.ends_with(&format!(" ({h})")));
        let (base, prefix): (&str, Argv) = match hook {
            Some(h) => (
                &t[..t.len() - h.len() - 3],
                vec!["env".into(), format!("NSTRACE_SYSCALL_HOOK={h}")],
            ),
            None => (t, Vec::new()),
        };
        let out = |name: &str| out(&hook.map_or(name.to_string(), |h| format!("{name}-{h}")));
        let mut argv: Argv = prefix.clone();
        argv.extend(match base {
            "nstrace" => vec![
                s(&env.nstrace),
                "--format".into(),
                "ndjson".into(),
                "-o".into(),
                out("nstrace"),
                "--".into(),
            ],
            // The same, polling less often once woken (see Performance in
            // the README: the polls' timer interrupts cost the traced tasks).
            // At 100ms nstrace's userspace mostly sleeps: what remains is
            // the kernel side's cost.
            _ if base.starts_with("nstrace --poll-interval ") => {
                let interval = base.trim_start_matches("nstrace --poll-interval ");
                vec![
                    s(&env.nstrace),
                    "--poll-interval".into(),
                    interval.into(),
                    "--format".into(),
                    "ndjson".into(),
                    "-o".into(),
                    out(&format!("nstrace-poll{interval}")),
                    "--".into(),
                ]
            }
            // The workload starts a second after nstrace, which is stopped
            // (SIGSTOP) by then: see `timed_stopped`.
            STOPPED => {
                let mut a: Argv = vec![
                    s(&env.nstrace),
                    "--format".into(),
                    "ndjson".into(),
                    "-o".into(),
                    out("nstrace-stopped"),
                    "--".into(),
                    "sh".into(),
                    "-c".into(),
                ];
                a.push(format!("sleep 1; exec {}", workload.join(" ")));
                v.push(((*t).to_string(), a));
                continue;
            }
            "nstrace --all" => vec![
                s(&env.nstrace),
                "--all".into(),
                "--format".into(),
                "ndjson".into(),
                "-o".into(),
                out("nstrace-all"),
                "--".into(),
            ],
            "strace -f" => vec![
                "strace".into(),
                "-f".into(),
                "-qq".into(),
                "--seccomp-bpf".into(),
                "-e".into(),
                STRACE_CALLS.into(),
                "-o".into(),
                out("strace"),
                "--".into(),
            ],
            "bpftrace" | "bpftrace, one idle syscall event" => {
                let script = if base == "bpftrace" {
                    BPFTRACE_SCRIPT
                } else {
                    IDLE_SCRIPT
                };
                let mut a: Argv = vec![
                    "bpftrace".into(),
                    "-q".into(),
                    "-o".into(),
                    out("bpftrace"),
                    "-e".into(),
                    script.into(),
                    "-c".into(),
                ];
                a.push(workload.join(" "));
                v.push(((*t).to_string(), a));
                continue;
            }
            _ => continue,
        });
        argv.extend(workload.iter().cloned());
        v.push(((*t).to_string(), argv));
    }
    v
}

/// The variant of benchmark 1 that runs with nstrace's programs attached
/// and its userspace stopped: what the kernel side costs alone.
const STOPPED: &str = "nstrace, userspace stopped (SIGSTOP)";

/// Runs nstrace's `argv` (a variant [`STOPPED`]), stops nstrace once it
/// traces (`out`, its trace, has the first event) and before the workload
/// starts, and resumes it once the helper has printed its `mode` line. The
/// programs run for every traced call, and nobody reads their records:
/// once the ring buffer is full the programs still capture everything but
/// drop the records instead of copying them (counted as lost). Returns the
/// helper's output; nstrace's wall time here includes the wait.
fn timed_stopped(
    argv: &[String],
    out: &Path,
    mode: &str,
    log: &Path,
) -> Result<(Duration, String)> {
    let _ = std::fs::remove_file(out);
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let pid = child.id() as libc::pid_t;
    let signal = |sig| {
        // SAFETY: a signal to our own child, which we have not reaped.
        unsafe { libc::kill(pid, sig) }
    };
    while std::fs::metadata(out).map_or(true, |m| m.len() == 0) {
        if start.elapsed() > Duration::from_secs(10) || child.try_wait()?.is_some() {
            signal(libc::SIGKILL);
            let _ = child.wait();
            bail!("nstrace did not start tracing; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(libc::SIGSTOP);
    let stdout = child.stdout.take().context("no stdout")?;
    // nstrace holds the pipe too: read up to the helper's line, not to EOF.
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        text.push_str(&line);
        text.push('\n');
        if line.starts_with(&format!("{mode} ")) {
            break;
        }
    }
    signal(libc::SIGCONT);
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see {}",
            argv.join(" "),
            log.display()
        );
    }
    Ok((start.elapsed(), text))
}

/// Per variant: the helper-reported times (ns), the wall times (s) and the
/// helper's line of each repetition (its fields after the mode).
type Samples = (Vec<f64>, Vec<f64>, Vec<Vec<u64>>);

/// Interleaved repetitions; per variant: the helper-reported times (ns) and wall times.
fn side_by_side(
    env: &Env,
    label: &str,
    variants: &[(String, Argv)],
    reps: usize,
    mode: &str,
    elapsed_field: usize,
) -> Result<Vec<Samples>> {
    let mut results = vec![(Vec::new(), Vec::new(), Vec::new()); variants.len()];
    for rep in 0..reps {
        for (i, (name, argv)) in variants.iter().enumerate() {
            let log = env
                .scratch
                .join(format!("{label}-{}.log", name.replace(' ', "_")));
            let (wall, stdout) = match trace_output(argv).filter(|_| name == STOPPED) {
                Some(out) => timed_stopped(argv, &out, mode, &log)?,
                None => timed(argv, &log)?,
            };
            let fields = helper_line(&stdout, mode)?;
            let elapsed = *fields.get(elapsed_field).context("no elapsed time")? as f64;
            results[i].0.push(elapsed);
            results[i].1.push(wall.as_secs_f64());
            results[i].2.push(fields);
        }
        eprint!("\r{label}: round {}/{reps}   ", rep + 1);
    }
    eprintln!();
    Ok(results)
}

/// Field `i` of the helper's line in the last repetition (0 if none).
fn last_field(samples: &Samples, i: usize) -> u64 {
    samples
        .2
        .last()
        .and_then(|f| f.get(i))
        .copied()
        .unwrap_or(0)
}

/// Median of the per-round ratios against variant 0.
fn ratio_to_first(results: &[Samples], i: usize, wall: bool) -> f64 {
    let pick = |r: &Samples| if wall { r.1.clone() } else { r.0.clone() };
    let base = pick(&results[0]);
    let mut ratios: Vec<f64> = pick(&results[i])
        .iter()
        .zip(&base)
        .map(|(x, b)| x / b)
        .collect();
    median(&mut ratios)
}

fn ns_workload(env: &Env, plan: &Plan) -> Result<Vec<Row>> {
    let workload = vec![s(&env.helper), "ns".into(), plan.ns_rounds.to_string()];
    let v = variants(
        env,
        &workload,
        &[
            "nstrace",
            "nstrace --poll-interval 2ms",
            "nstrace --poll-interval 100ms",
            STOPPED,
            "nstrace (raw_syscalls)",
            "strace -f",
            "bpftrace",
            "bpftrace, one idle syscall event",
        ],
    );
    let results = side_by_side(env, "1-ns", &v, plan.reps, "ns", 2)?;
    let bench = format!("1. ns workload ({} rounds)", plan.ns_rounds);
    let mut rows = Vec::new();
    for (i, (name, _)) in v.iter().enumerate() {
        let mut t = results[i].0.clone();
        let mut w = results[i].1.clone();
        let failed = last_field(&results[i], 1);
        let wall = if name == STOPPED {
            "wall: not comparable, nstrace waits".to_string()
        } else {
            format!("wall {:.0} ms", median(&mut w) * 1e3)
        };
        let mut value = format!(
            "{:.1} ms ({wall}){}",
            median(&mut t) / 1e6,
            if failed > 0 {
                format!(", {failed} rounds failed")
            } else {
                String::new()
            }
        );
        // What nstrace did with the new namespaces (last repetition): a
        // variant that is cheaper because it read fewer tables shows here.
        if let Some(out) = trace_output(&v[i].1) {
            let (own, flagged, total) = count_tables(&out)?;
            let _ = write!(
                value,
                "; tables: {own}/{total} the new namespace's own, {flagged} with the kernel's flags"
            );
        }
        let mut row = Row::new(&bench, name, value);
        if i > 0 {
            let r = ratio_to_first(&results, i, false);
            row = row.ratio(r);
            if name == "nstrace" {
                row = row.goal("<= 1.10x", r <= 1.10);
            }
        }
        rows.push(row);
    }
    rows.extend(ns_steps(&v, &results, plan));
    Ok(rows)
}

/// The steps of a round of `nstrace-bench ns`, in the order of the times
/// its line gives from field [`NS_STEPS_AT`] on.
const NS_STEPS: [&str; 6] = [
    "fork",
    "unshare",
    "mount private",
    "mount tmpfs",
    "umount2",
    "exit+reap",
];

/// Where the step times start in the helper's line (after N, FAILED and
/// ELAPSED_NS).
const NS_STEPS_AT: usize = 3;

/// Benchmark 1 step by step: the median (over repetitions) of each step's
/// mean time, untraced and under some tracers, with the difference: where
/// a tracer's cost lands. The traced calls' own steps carry the programs;
/// the steps that wait for another CPU (the child's first run, umount2's
/// and the exit's RCU grace periods, the parent's wakeup) also move with
/// what the other CPUs are doing, in either direction.
fn ns_steps(v: &[(String, Argv)], results: &[Samples], plan: &Plan) -> Vec<Row> {
    let bench = format!(
        "1b. ns workload, one round's steps in µs ({} rounds)",
        plan.ns_rounds
    );
    let step_medians = |r: &Samples| -> Vec<f64> {
        (0..NS_STEPS.len())
            .map(|k| {
                let mut x: Vec<f64> =
                    r.2.iter()
                        .filter_map(|f| f.get(NS_STEPS_AT + k))
                        .map(|&n| n as f64 / 1e3)
                        .collect();
                median(&mut x)
            })
            .collect()
    };
    let base = step_medians(&results[0]);
    let mut rows = Vec::new();
    for (i, (name, _)) in v.iter().enumerate() {
        if !["untraced", "nstrace", STOPPED, "strace -f", "bpftrace"].contains(&name.as_str()) {
            continue;
        }
        let steps = step_medians(&results[i]);
        let parts: Vec<String> = NS_STEPS
            .iter()
            .zip(steps.iter().zip(&base))
            .map(|(step, (t, b))| {
                if i == 0 {
                    format!("{step} {t:.1}")
                } else {
                    format!("{step} {t:.1} ({:+.1})", t - b)
                }
            })
            .collect();
        let total: f64 = steps.iter().sum();
        let btotal: f64 = base.iter().sum();
        let value = if i == 0 {
            format!("{}; round {total:.1}", parts.join(" · "))
        } else {
            format!(
                "{}; round {total:.1} ({:+.1})",
                parts.join(" · "),
                total - btotal
            )
        };
        rows.push(Row::new(&bench, name, value));
    }
    rows
}

/// Why this kernel refuses nstrace's fentry hook for syscalls (its
/// trampolines), as `nstrace doctor` says; `None` if it loads.
fn fentry_refusal(env: &Env) -> Result<Option<String>> {
    let out = Command::new(&env.nstrace)
        .args(["doctor", "--format", "ndjson"])
        .output()
        .context("cannot run nstrace doctor")?;
    if !out.status.success() {
        bail!(
            "nstrace doctor failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("nstrace doctor's JSON")?;
    let point = report["points"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["point"] == "syscalls"))
        .context("nstrace doctor reports no syscall hooks")?;
    let is_fentry = |v: &serde_json::Value| v.as_str().is_some_and(|h| h.starts_with("fentry"));
    let loads = is_fentry(&point["attached"])
        || point["also_loads"]
            .as_array()
            .is_some_and(|a| a.iter().any(is_fentry));
    if loads {
        return Ok(None);
    }
    Ok(Some(
        point["refused"]
            .as_array()
            .and_then(|r| r.iter().find(|r| is_fentry(&r["hook"])))
            .and_then(|r| r["error"].as_str())
            .unwrap_or("not tried")
            .to_string(),
    ))
}

fn unrelated_work(env: &Env, plan: &Plan) -> Result<Vec<Row>> {
    let workload = vec![
        s(&env.helper),
        "noise".into(),
        plan.noise_rounds.to_string(),
    ];
    // fentry where the kernel allows trampolines (stock kernels): other
    // syscalls then take no slower path at all.
    let refusal = fentry_refusal(env)?;
    let mut tracers = vec!["nstrace --all", "nstrace --all (raw_syscalls)"];
    if refusal.is_none() {
        tracers.push("nstrace --all (fentry)");
    }
    tracers.push("bpftrace, one idle syscall event");
    let v = variants(env, &workload, &tracers);
    let results = side_by_side(env, "2-noise", &v, plan.reps, "noise", 2)?;
    let calls = last_field(&results[0], 0);
    let forks = last_field(&results[0], 1);
    let bench = format!("2. unrelated work, {calls} syscalls + {forks} forks");
    let mut rows = Vec::new();
    for (i, (name, _)) in v.iter().enumerate() {
        let mut t = results[i].0.clone();
        let mut row = Row::new(&bench, name, format!("{:.1} ms", median(&mut t) / 1e6));
        if i > 0 {
            let r = ratio_to_first(&results, i, false);
            row = row.ratio(r);
            if name == "nstrace --all" {
                row = row.goal("<= 1.02x", r <= 1.02);
            }
        }
        rows.push(row);
    }
    if let Some(why) = refusal {
        rows.push(Row::new(
            &bench,
            "nstrace --all (fentry)",
            format!("not run: this kernel refuses trampolines ({why})"),
        ));
    }
    Ok(rows)
}

fn startup(env: &Env, plan: &Plan) -> Result<Vec<Row>> {
    let workload = vec!["/bin/true".to_string()];
    let v = variants(
        env,
        &workload,
        &["nstrace", "nstrace (raw_syscalls)", "strace -f", "bpftrace"],
    );
    let mut walls = vec![Vec::new(); v.len()];
    for rep in 0..plan.startup_reps {
        for (i, (name, argv)) in v.iter().enumerate() {
            let log = env
                .scratch
                .join(format!("3-startup-{}.log", name.replace(' ', "_")));
            let (wall, _) = timed(argv, &log)?;
            walls[i].push(wall.as_secs_f64());
        }
        eprint!("\r3-startup: round {}/{}   ", rep + 1, plan.startup_reps);
    }
    eprintln!();
    let base = median(&mut walls[0].clone());
    let mut rows = Vec::new();
    for (i, (name, _)) in v.iter().enumerate() {
        let m = median(&mut walls[i]);
        let label = if i == 0 { "untraced (`true`)" } else { name };
        let mut row = Row::new(
            "3. start-up, `TRACER -- true`",
            label,
            format!("{:.0} ms", m * 1e3),
        );
        if i > 0 {
            row = row.ratio(m / base);
        }
        if name == "nstrace" {
            row = row.goal("< 150 ms", m < 0.150);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Runs the criterion benchmark and reads its throughputs.
fn pipeline(plan: &Plan) -> Result<Vec<Row>> {
    println!("4-pipeline: cargo bench -p nstrace --bench pipeline");
    let secs = plan.criterion_secs.to_string();
    let mut child = cargo()
        .args(["bench", "-p", "nstrace", "--bench", "pipeline", "--"])
        .args([
            "--warm-up-time",
            "1",
            "--measurement-time",
            &secs,
            "--noplot",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo bench")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut current = String::new();
    let mut rows = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(name) = line
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_prefix("pipeline/"))
        {
            current = name.to_string();
        }
        if let Some(rest) = line.trim().strip_prefix("thrpt:") {
            // [low unit mid unit high unit]
            let parts: Vec<&str> = rest
                .trim_matches([' ', '[', ']'])
                .split_whitespace()
                .collect();
            let (Some(value), Some(unit)) = (parts.get(2), parts.get(3)) else {
                continue;
            };
            let scale = match *unit {
                "elem/s" => 1.0,
                "Kelem/s" => 1e3,
                "Melem/s" => 1e6,
                "Gelem/s" => 1e9,
                _ => continue,
            };
            let rate = value.parse::<f64>().context("criterion throughput")? * scale;
            rows.push(
                Row::new(
                    "4. pipeline (decode, model, explain, NDJSON), one core",
                    &current,
                    format!("{:.0} events/s", rate),
                )
                .goal(">= 1,000,000/s", rate >= 1e6),
            );
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo bench failed: {status}");
    }
    Ok(rows)
}

/// Waits for `pid`, returning its exit status and max RSS in KiB (its own
/// or that of a descendant it waited for: the helper's is a few MiB).
fn wait_rusage(pid: u32) -> Result<(i32, i64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; pid is our child.
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    Ok((status, ru.ru_maxrss))
}

fn memory(env: &Env, plan: &Plan) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // The kernel offsets are cached after the first run of a build (see
    // kernel_btf.rs); `cargo bench` may have just rebuilt nstrace. Warm the
    // cache, then measure every size warm, and 4M once more with an empty
    // cache: a first run also parses the kernel's BTF.
    let warm = Command::new(&env.nstrace)
        .args(["-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .status()
        .context("cannot run nstrace")?;
    if !warm.success() {
        bail!("nstrace -- true failed: {warm}");
    }
    let cold_cache = env.scratch.join("5-memory-empty-cache");
    let _ = std::fs::remove_dir_all(&cold_cache);
    let runs = plan
        .buffer_sizes
        .iter()
        .map(|size| (*size, None))
        .chain([("4M", Some(&cold_cache))]);
    for (size, cache) in runs {
        let out = env.scratch.join("5-memory.ndjson");
        let mut cmd = Command::new(&env.nstrace);
        if let Some(dir) = cache {
            cmd.env("NSTRACE_CACHE_DIR", dir);
        }
        let child = cmd
            .args(["--format", "ndjson", "--buffer-size", size, "-o"])
            .arg(&out)
            .arg("--")
            .arg(&env.helper)
            .args(["umount", &plan.mem_calls.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run nstrace")?;
        let (status, maxrss_kib) = wait_rusage(child.id())?;
        if status != 0 {
            bail!("nstrace for the memory benchmark failed: wait status {status}");
        }
        let (reported, lost) = count_trace(&out)?;
        let mib = maxrss_kib as f64 / 1024.0;
        let exact = reported + lost == plan.mem_calls;
        let value = format!(
            "max RSS {mib:.1} MiB; {reported} umount2 reported + {lost} lost{}",
            if exact { " (exact)" } else { " (NOT exact)" }
        );
        let variant = match cache {
            None => format!("nstrace --buffer-size {size}"),
            Some(_) => format!("nstrace --buffer-size {size}, first run (offsets not cached)"),
        };
        let mut row = Row::new(
            &format!("5. memory, {} traced calls", plan.mem_calls),
            &variant,
            value,
        );
        if size == "4M" {
            row = row.goal("< 50 MB", maxrss_kib * 1024 < 50_000_000);
        }
        rows.push(row);
        eprintln!("5-memory: {variant} done");
    }
    Ok(rows)
}

/// The NDJSON file an nstrace command line writes (`-o FILE`).
fn trace_output(argv: &[String]) -> Option<PathBuf> {
    let nstrace = argv.iter().position(|a| a.ends_with("/nstrace"))?;
    let rest = &argv[nstrace..];
    let o = rest.iter().position(|a| a == "-o")?;
    rest.get(o + 1).map(PathBuf::from)
}

/// Mount tables in a trace: the new namespace's own (listed by the kernel
/// as it was made, or read from it while it lived), those among them with
/// the kernel's own flags, and all (the others were read from the
/// namespace they were copied from).
fn count_tables(path: &Path) -> Result<(u64, u64, u64)> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let (mut own, mut flagged, mut total) = (0u64, 0u64, 0u64);
    for line in BufReader::new(file).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if v["type"] != "mounts" {
            continue;
        }
        total += 1;
        if v["read_from"] == "new" || v["read_from"] == "creation" {
            own += 1;
            let kernel = |m: &serde_json::Value| !m["kernel"].is_null();
            if v["mounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(kernel))
            {
                flagged += 1;
            }
        }
    }
    Ok((own, flagged, total))
}

fn count_trace(path: &Path) -> Result<(u64, u64)> {
    let file = std::fs::File::open(path)?;
    let (mut reported, mut lost, mut life) = (0u64, 0u64, 0u64);
    for line in BufReader::new(file).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        match v["type"].as_str() {
            Some("syscall") if v["syscall"] == "umount2" => reported += 1,
            Some("lost") => lost += v["count"].as_u64().unwrap_or(0),
            Some("fork" | "exec" | "exit") => life += 1,
            _ => {}
        }
    }
    // fork, exec and exit of the helper: those not reported were lost.
    Ok((reported, lost.saturating_sub(3 - life.min(3))))
}

fn render(rows: &[Row], plan: &Plan, quick: bool, took: Duration) -> String {
    let mut t = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        t,
        "nstrace benchmarks ({}; kernel {}, {cpus} CPUs; {} repetitions, medians; took {:.0} s)\n",
        if quick { "--quick" } else { "full" },
        kernel.trim(),
        plan.reps,
        took.as_secs_f64()
    );
    let _ = writeln!(t, "| benchmark | variant | median | ratio | goal | met |");
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} |",
            r.bench, r.variant, r.value, r.ratio, r.goal, met
        );
    }
    t
}
