//! Loading the BPF programs and attaching them to the kernel's hooks.

use aya::{
    maps::{HashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        fentry::FEntryLinkId, fexit::FExitLinkId, kprobe::KProbeLinkId,
        raw_trace_point::RawTracePointLinkId, FEntry, FExit, KProbe, RawTracePoint, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use nstrace_common::{
    names, ArgSpec, Config, MountProbe, MountWalk, Offsets, WalkedMount, MAX_SYSCALL_NR,
    WALK_MOUNTS, WALK_REQUEST,
};
use std::os::fd::AsFd;

use thiserror::Error;

use crate::syscall_events::{self, SyscallEvents};
use crate::syscalls::SYSCALLS;

/// The compiled BPF object (built by `build.rs` from `nstrace-ebpf`).
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nstrace"));

/// Failure to load or attach the tracer.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// The object could not be loaded (verifier, permissions, kernel too old).
    #[error("cannot load the BPF programs: {source}{hint}")]
    Load {
        /// The loader's error.
        source: Box<aya::EbpfError>,
        /// An extra sentence when the cause is clear.
        hint: &'static str,
    },
    /// A program the tracer cannot work without failed.
    #[error("cannot {what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is missing or has the wrong type.
    #[error("BPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        source: Box<aya::maps::MapError>,
    },
    /// A map could not be mapped into nstrace's memory.
    #[error("cannot map BPF map {name} into memory: {source}")]
    MapMemory {
        /// Map name.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The object lacks something it should have.
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    /// Neither way of observing syscalls works on this kernel.
    #[error("cannot observe syscalls: {0}")]
    NoSyscallHook(String),
}

/// How the programs are set up.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Trace every process instead of the tracked ones.
    pub trace_all: bool,
    /// Children of this process become tracked (nstrace's own pid when it launches the command).
    pub launcher_pid: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Kernel structure offsets.
    pub offsets: Offsets,
    /// Follow container runtimes started while a tracked engine client runs.
    pub follow_runtimes: bool,
    /// Where the kernel's BTF is (fexit programs are loaded against it).
    pub btf_path: std::path::PathBuf,
    /// Also try the hooks not chosen (for `nstrace doctor`), and report
    /// whether each would load.
    pub try_every_hook: bool,
    /// The one way to observe syscalls (`--syscall-hook`), by its
    /// [`SyscallMethod::name`]; `None`: the per-syscall events, else the
    /// raw tracepoints. `NSTRACE_SYSCALL_HOOK` in the environment wins.
    pub syscall_hook: Option<String>,
}

/// Names `--syscall-hook` takes, as the start line's `hooks.syscalls_via`
/// says them.
pub const SYSCALL_HOOK_NAMES: [&str; 3] = ["syscall_events", "raw_syscalls", "fentry"];

/// The prefix of a syscall's function in the kernel (its
/// `SYSCALL_DEFINE` name follows), which the fentry stubs attach to.
#[cfg(target_arch = "x86_64")]
const SYSCALL_FN_PREFIX: &str = "__x64_sys_";
#[cfg(target_arch = "aarch64")]
const SYSCALL_FN_PREFIX: &str = "__arm64_sys_";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALL_FN_PREFIX: &str = "__sys_unknown_arch_";

/// Ways to observe capability decisions, richest first.
const CAP_METHODS: [CapMethod; 3] = [CapMethod::Tracepoint, CapMethod::Fexit, CapMethod::Kprobe];

/// A way to observe capability decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CapMethod {
    /// The `capability:cap_capable` tracepoint (6.18 and later).
    Tracepoint,
    /// fexit on `cap_capable` (BPF trampolines).
    Fexit,
    /// kprobe and kretprobe on `cap_capable`.
    Kprobe,
}

impl CapMethod {
    /// Short name, as in the `start` line's `hooks.cap_via`.
    fn name(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::Fexit => "fexit",
            Self::Kprobe => "kprobe",
        }
    }

    /// What is attached, in words.
    fn what(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint capability:cap_capable",
            Self::Fexit => "fexit cap_capable",
            Self::Kprobe => "kprobe + kretprobe cap_capable",
        }
    }
}

/// How one decision point is observed on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReport {
    /// The decision point (`capability checks`, `kernel log lines`).
    pub point: &'static str,
    /// The hook in use, if any.
    pub attached: Option<&'static str>,
    /// Hooks tried and refused, each with the kernel's reason.
    pub refused: Vec<(&'static str, String)>,
    /// Hooks that would also load but are not used (`try_every_hook`).
    pub also_loads: Vec<&'static str>,
    /// What the hook in use does not cover on this kernel.
    pub gaps: Vec<String>,
    /// Another choice the user may want, and its price.
    pub hints: Vec<String>,
}

/// An attached hook.
enum Link {
    Raw(RawTracePointLinkId),
    Fentry(FEntryLinkId),
    Fexit(FExitLinkId),
    Kprobe(KProbeLinkId),
}

/// The raw tracepoints of process life and the program attached to each.
/// They come first, so that no fork of a tracked process is missed once
/// syscalls are traced.
const HOOKS: [(&str, &str); 3] = [
    (names::PROG_FORK, "sched_process_fork"),
    (names::PROG_EXIT, "sched_process_exit"),
    (names::PROG_EXEC, "sched_process_exec"),
];

/// The raw tracepoints every syscall passes, and their programs: the
/// fallback where per-syscall trace events are missing.
const RAW_SYSCALL_HOOKS: [(&str, &str); 2] = [
    (names::PROG_SYS_ENTER, "sys_enter"),
    (names::PROG_SYS_EXIT, "sys_exit"),
];

/// How syscalls are observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyscallMethod {
    /// `syscalls:sys_enter_NAME`/`sys_exit_NAME` of each traced syscall:
    /// other syscalls run no program.
    Events,
    /// `raw_syscalls:sys_enter`/`sys_exit`: a program runs for every
    /// syscall of the system and drops the untraced ones.
    Raw,
    /// fentry/fexit (BPF trampolines) on each traced syscall's function:
    /// other syscalls run nothing and take no slower path, but calls that
    /// seccomp refuses never reach the function and are not seen. Only
    /// when asked for (`--syscall-hook fentry`).
    Fentry,
}

impl SyscallMethod {
    /// Short name, as in the `start` line's `hooks.syscalls_via`.
    fn name(self) -> &'static str {
        match self {
            Self::Events => "syscall_events",
            Self::Raw => "raw_syscalls",
            Self::Fentry => "fentry",
        }
    }

    /// What is attached, in words.
    fn what(self) -> &'static str {
        match self {
            Self::Events => "tracepoints syscalls:sys_{enter,exit}_NAME of each traced syscall",
            Self::Raw => "raw tracepoints sys_enter and sys_exit (every syscall runs a program)",
            Self::Fentry => {
                "fentry/fexit on each traced syscall's function (calls seccomp refuses are not seen)"
            }
        }
    }
}

/// The loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    links: Vec<(&'static str, Link)>,
    /// One line per optional hook that could not be attached.
    pub notes: Vec<String>,
    /// How each optional decision point is observed.
    pub reports: Vec<HookReport>,
    /// The method capability checks are observed with.
    cap_via: Option<CapMethod>,
    /// The method syscalls are observed with.
    syscalls_via: Option<SyscallMethod>,
    /// The per-syscall events, when they are the method.
    syscall_events: SyscallEvents,
    /// The settings the programs run with.
    config: Config,
}

impl Probes {
    /// Loads the programs and attaches them.
    pub fn start(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        let notes = Vec::new();
        let mut syscalls = [0u64; (MAX_SYSCALL_NR / 64) as usize];
        for def in SYSCALLS {
            syscalls[(def.nr / 64) as usize] |= 1 << (def.nr % 64);
        }
        let config = Config {
            trace_all: u32::from(opts.trace_all),
            launcher_pid: opts.launcher_pid,
            self_pid: std::process::id(),
            probe_nr: libc::SYS_syncfs as u32,
            follow_runtimes: u32::from(opts.follow_runtimes),
            reader_polling: 0,
            own_mnt_ns: crate::mounts::mnt_ns_of(std::process::id()).unwrap_or(0),
            _pad: 0,
            syscalls,
            offsets: opts.offsets,
        };
        let mut ebpf = EbpfLoader::new()
            // The programs use no CO-RE relocations (offsets come in the
            // CONFIG map), so aya need not parse the kernel's BTF again.
            .btf(None)
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .load(BPF_OBJECT)
            .map_err(|e| {
                let hint = if e.to_string().contains("Operation not permitted") {
                    " (are you root? nstrace needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)"
                } else {
                    ""
                };
                ProbeError::Load {
                    source: Box::new(e),
                    hint,
                }
            })?;
        fill_arg_specs(&mut ebpf)?;
        fill_programs(&mut ebpf)?;
        fill_config(&mut ebpf, config)?;
        let mut probes = Self {
            ebpf,
            links: Vec::new(),
            notes,
            reports: Vec::new(),
            cap_via: None,
            syscalls_via: None,
            syscall_events: SyscallEvents::default(),
            config,
        };
        probes.attach(opts)?;
        Ok(probes)
    }

    fn attach(&mut self, opts: &ProbeOptions) -> Result<(), ProbeError> {
        // NSTRACE_SYSCALL_HOOK=raw_syscalls|syscall_events keeps only that
        // way of observing syscalls (a knob for tests and benchmarks that
        // compare the two).
        let forced = std::env::var("NSTRACE_SYSCALL_HOOK")
            .ok()
            .or_else(|| opts.syscall_hook.clone());
        if let Some(f) = forced.as_deref() {
            if !SYSCALL_HOOK_NAMES.contains(&f) {
                return Err(ProbeError::NoSyscallHook(format!(
                    "unknown syscall hook {f:?} (known: {})",
                    SYSCALL_HOOK_NAMES.join(", ")
                )));
            }
        }
        // The trampolines only when asked for (or by `nstrace doctor`):
        // they miss the calls seccomp refuses.
        let wants = |m: SyscallMethod| match forced.as_deref() {
            Some(f) => f == m.name(),
            None => m != SyscallMethod::Fentry || opts.try_every_hook,
        };
        let first = [
            SyscallMethod::Events,
            SyscallMethod::Raw,
            SyscallMethod::Fentry,
        ]
        .into_iter()
        .find(|&m| wants(m));
        preload(&mut self.ebpf, first);
        for (prog, tp) in HOOKS {
            let p: &mut RawTracePoint = program(&mut self.ebpf, prog)?;
            load_once(p).map_err(|e| prog_err(format!("load {prog}"), e))?;
            let id = p
                .attach(tp)
                .map_err(|e| prog_err(format!("attach raw tracepoint {tp}"), e))?;
            self.links.push((prog, Link::Raw(id)));
        }
        let syscalls = self.attach_syscalls(opts, wants)?;
        self.reports.push(syscalls);
        let cap = self.attach_cap(opts);
        let klog = {
            let mut r = HookReport {
                point: "kernel log lines",
                attached: None,
                refused: Vec::new(),
                also_loads: Vec::new(),
                gaps: Vec::new(),
                hints: Vec::new(),
            };
            match self.attach_raw(names::PROG_KLOG, "console") {
                Ok(()) => r.attached = Some("tracepoint printk:console"),
                Err(e) => r.refused.push(("tracepoint printk:console", e)),
            }
            r
        };
        for r in [cap, klog] {
            if r.attached.is_none() {
                let why: Vec<String> = r.refused.iter().map(|(h, e)| format!("{h}: {e}")).collect();
                self.notes.push(format!(
                    "no hook for {} on this kernel ({}): explanations that need them will say unknown",
                    r.point,
                    why.join("; ")
                ));
            }
            self.reports.push(r);
        }
        Ok(())
    }

    /// The per-syscall events, else the raw syscall tracepoints (which
    /// must load: without syscalls there is nothing to trace). With
    /// `try_every_hook`, the raw ones are tried too.
    fn attach_syscalls(
        &mut self,
        opts: &ProbeOptions,
        wants: impl Fn(SyscallMethod) -> bool,
    ) -> Result<HookReport, ProbeError> {
        let mut report = HookReport {
            point: "syscalls",
            attached: None,
            refused: Vec::new(),
            also_loads: Vec::new(),
            gaps: Vec::new(),
            hints: Vec::new(),
        };
        if wants(SyscallMethod::Events) {
            match self.attach_syscall_events() {
                Ok(absent) => {
                    self.syscalls_via = Some(SyscallMethod::Events);
                    report.attached = Some(SyscallMethod::Events.what());
                    if !absent.is_empty() {
                        // A syscall newer than the kernel (open_tree_attr
                        // before 6.15): calls to it fail with ENOSYS.
                        report.gaps.push(format!(
                            "no trace events for {}: the kernel has no such syscall, and calls \
                             to it (ENOSYS) are not traced",
                            absent.join(", ")
                        ));
                    }
                }
                Err(e) => {
                    // Closed here, slowly: a releasing child forked now
                    // would be tracked as nstrace's own child.
                    drop(std::mem::take(&mut self.syscall_events));
                    report.refused.push((SyscallMethod::Events.what(), e));
                }
            }
        }
        if wants(SyscallMethod::Raw) && (self.syscalls_via.is_none() || opts.try_every_hook) {
            let before = self.links.len();
            let mut attached = Ok(());
            for (prog, tp) in RAW_SYSCALL_HOOKS {
                attached = attached.and_then(|()| self.attach_raw(prog, tp));
            }
            match attached {
                Ok(()) if self.syscalls_via.is_none() => {
                    self.syscalls_via = Some(SyscallMethod::Raw);
                    report.attached = Some(SyscallMethod::Raw.what());
                    // sys_enter hands nstrace's walk requests to it.
                    let walk = self.load_mount_walk::<RawTracePoint>(
                        names::PROG_MOUNT_WALK_RAW,
                        names::WALK_PROGS_RAW,
                    );
                    self.note_mount_walk(walk);
                    if let Some((_, why)) = report.refused.first() {
                        self.notes.push(format!(
                            "syscall events refused ({why}): on the raw syscall tracepoints \
                             instead, every syscall of the system runs a program"
                        ));
                    }
                }
                Ok(()) => {
                    for (prog, link) in self.links.split_off(before) {
                        self.detach_link(prog, link);
                    }
                    report.also_loads.push(SyscallMethod::Raw.what());
                }
                Err(e) => {
                    for (prog, link) in self.links.split_off(before) {
                        self.detach_link(prog, link);
                    }
                    report.refused.push((SyscallMethod::Raw.what(), e));
                }
            }
        }
        if wants(SyscallMethod::Fentry) && (self.syscalls_via.is_none() || opts.try_every_hook) {
            let before = self.links.len();
            match self.attach_syscall_fentry(opts) {
                Ok(absent) if self.syscalls_via.is_none() => {
                    self.syscalls_via = Some(SyscallMethod::Fentry);
                    report.attached = Some(SyscallMethod::Fentry.what());
                    report.gaps.push(
                        "calls that seccomp refuses never reach the syscall's function: they \
                         are not traced (the syscall events see them)"
                            .to_string(),
                    );
                    if !absent.is_empty() {
                        report.gaps.push(format!(
                            "no function for {}: the kernel has no such syscall, and calls to \
                             it (ENOSYS) are not traced",
                            absent.join(", ")
                        ));
                    }
                }
                Ok(_) => {
                    for (prog, link) in self.links.split_off(before) {
                        self.detach_link(prog, link);
                    }
                    report.also_loads.push(SyscallMethod::Fentry.what());
                    report.hints.push(
                        "--syscall-hook fentry: the syscalls nstrace does not trace no longer \
                         take the kernel's slower path (what --all costs the rest of a busy \
                         host); calls seccomp refuses are then not seen"
                            .to_string(),
                    );
                }
                Err(e) => {
                    for (prog, link) in self.links.split_off(before) {
                        self.detach_link(prog, link);
                    }
                    report.refused.push((SyscallMethod::Fentry.what(), e));
                }
            }
        }
        if self.syscalls_via.is_none() {
            let why: Vec<String> = report
                .refused
                .iter()
                .map(|(h, e)| format!("{h}: {e}"))
                .collect();
            return Err(ProbeError::NoSyscallHook(why.join("; ")));
        }
        Ok(report)
    }

    /// Attaches the event programs to each traced syscall's events, and
    /// the entry program to syncfs's (nstrace's mount probe). Returns the
    /// traced syscalls the kernel has no events for.
    fn attach_syscall_events(&mut self) -> Result<Vec<&'static str>, String> {
        let (dir, mounted) = syscall_events::find_or_mount_events_dir()?;
        if mounted {
            self.notes.push(format!(
                "tracefs was not mounted: mounted it on {} for the syscall events (it stays \
                 mounted)",
                syscall_events::TRACEFS_MOUNT_POINT.to_string_lossy()
            ));
        }
        syscall_events::check_layout(&dir)?;
        let mut fds = Vec::new();
        for name in [names::PROG_SYSCALL_ENTER, names::PROG_SYSCALL_EXIT] {
            let p: &mut TracePoint = program(&mut self.ebpf, name).map_err(|e| e.to_string())?;
            load_once(p).map_err(|e| first_line(&e))?;
            let fd = p.fd().map_err(|e| first_line(&e))?;
            fds.push(fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())?);
        }
        let (enter, exit) = (fds[0].as_fd(), fds[1].as_fd());
        // Before the exit program on unshare's exit event, so that the new
        // namespace's walk reaches the ring ahead of the call's record.
        if syscall_events::has_event(&dir, "unshare") {
            let walk = self
                .load_mount_walk::<TracePoint>(names::PROG_NEW_NS_WALK, names::NEW_NS_WALK_PROGS)
                .and_then(|fd| {
                    self.syscall_events
                        .attach(&dir, "sys_exit_unshare", fd.as_fd())
                });
            if let Err(e) = walk {
                self.notes.push(format!(
                    "the walk of a new mount namespace at unshare's exit did not load ({e}):                      each new namespace's table is read from its processes"
                ));
            }
        }
        let mut absent = Vec::new();
        for def in SYSCALLS {
            let event = syscall_events::event_name(def.name);
            if !syscall_events::has_event(&dir, event) {
                absent.push(def.name);
                continue;
            }
            self.syscall_events
                .attach(&dir, &format!("sys_enter_{event}"), enter)?;
            self.syscall_events
                .attach(&dir, &format!("sys_exit_{event}"), exit)?;
        }
        self.syscall_events
            .attach(&dir, "sys_enter_syncfs", enter)?;
        // Attached to syncfs's entry event, where only nstrace's requests
        // run it past its first test.
        let walk = self
            .load_mount_walk::<TracePoint>(names::PROG_MOUNT_WALK, names::WALK_PROGS)
            .and_then(|fd| {
                self.syscall_events
                    .attach(&dir, "sys_enter_syncfs", fd.as_fd())
            });
        self.note_mount_walk(walk);
        Ok(absent)
    }

    /// Loads the fentry/fexit bodies, puts them where the stubs tail-call
    /// them, and loads and attaches a stub pair on each traced syscall's
    /// function, and an entry stub (nstrace's mount probe) and the walk on
    /// syncfs's. Returns the traced syscalls the kernel has no function
    /// for.
    fn attach_syscall_fentry(&mut self, opts: &ProbeOptions) -> Result<Vec<&'static str>, String> {
        let btf = aya::Btf::parse_file(&opts.btf_path, aya::Endianness::default())
            .map_err(|e| format!("kernel BTF: {}", first_line(&e)))?;
        // One stub pair per traced syscall, and one entry stub for syncfs:
        // nstrace's mount probe goes through the entry body, as it does
        // on the events.
        let probe_slot = SYSCALLS.len();
        if probe_slot >= names::SYSCALL_TRAMPOLINES {
            return Err(format!(
                "the BPF object has {} syscall stubs for {} syscalls and syncfs",
                names::SYSCALL_TRAMPOLINES,
                SYSCALLS.len()
            ));
        }
        let syncfs = format!("{SYSCALL_FN_PREFIX}syncfs");
        // The functions, by stub. The bodies are loaded against syncfs's,
        // which every kernel has (any has the same prototype, which the
        // kernel requires of programs that tail-call each other).
        let functions: Vec<(usize, &'static str, String)> = SYSCALLS
            .iter()
            .enumerate()
            .map(|(i, def)| {
                let f = format!(
                    "{SYSCALL_FN_PREFIX}{}",
                    syscall_events::event_name(def.name)
                );
                (i, def.name, f)
            })
            .collect();
        let mut loads: Vec<(&'static str, &str)> = vec![
            (names::PROG_SYS_FENTRY_BODY, &syncfs),
            (names::PROG_SYS_FEXIT_BODY, &syncfs),
        ];
        for (i, _, f) in &functions {
            loads.push((names::SYS_FENTRY_STUBS[*i], f));
            loads.push((names::SYS_FEXIT_STUBS[*i], f));
        }
        let probe = names::SYS_FENTRY_STUBS[probe_slot];
        loads.push((probe, &syncfs));
        let results = load_trampolines(&mut self.ebpf, &loads, &btf);
        // Whether `name` loaded (false: the kernel has no such function).
        let loaded = |name: &str| -> Result<bool, String> {
            results
                .get(name)
                .cloned()
                .unwrap_or_else(|| Err(format!("the BPF object has no {name}")))
        };
        for prog in [
            probe,
            names::PROG_SYS_FENTRY_BODY,
            names::PROG_SYS_FEXIT_BODY,
        ] {
            if !loaded(prog)? {
                return Err(format!("the kernel has no function {syncfs}"));
            }
        }
        let mut absent = Vec::new();
        for (i, name, _) in &functions {
            let (enter, exit) = (names::SYS_FENTRY_STUBS[*i], names::SYS_FEXIT_STUBS[*i]);
            if !(loaded(enter)? && loaded(exit)?) {
                absent.push(*name);
            }
        }
        for (body, array) in [
            (names::PROG_SYS_FENTRY_BODY, names::SYS_FENTRY_BODY),
            (names::PROG_SYS_FEXIT_BODY, names::SYS_FEXIT_BODY),
        ] {
            let fd = program_fd_of(&mut self.ebpf, body)?;
            let map = self
                .ebpf
                .map_mut(array)
                .ok_or_else(|| format!("the BPF object has no {array}"))?;
            ProgramArray::try_from(map)
                .and_then(|mut a| a.set(0, &fd, 0))
                .map_err(|e| first_line(&e))?;
        }
        for (i, name, _) in &functions {
            if absent.contains(name) {
                continue;
            }
            let (enter, exit) = (names::SYS_FENTRY_STUBS[*i], names::SYS_FEXIT_STUBS[*i]);
            let p: &mut FEntry = program(&mut self.ebpf, enter).map_err(|e| e.to_string())?;
            let id = p.attach().map_err(|e| first_line(&e))?;
            self.links.push((enter, Link::Fentry(id)));
            let p: &mut FExit = program(&mut self.ebpf, exit).map_err(|e| e.to_string())?;
            let id = p.attach().map_err(|e| first_line(&e))?;
            self.links.push((exit, Link::Fexit(id)));
        }
        let p: &mut FEntry = program(&mut self.ebpf, probe).map_err(|e| e.to_string())?;
        let id = p.attach().map_err(|e| first_line(&e))?;
        self.links.push((probe, Link::Fentry(id)));
        let walk = self.attach_mount_walk_fentry(&btf);
        self.note_mount_walk(walk);
        Ok(absent)
    }

    /// The walk on the trampolines: fentry of syncfs's function, which
    /// carries itself on by tail calls.
    fn attach_mount_walk_fentry(&mut self, btf: &aya::Btf) -> Result<(), String> {
        let prog = names::PROG_MOUNT_WALK_FENTRY;
        let p: &mut FEntry = program(&mut self.ebpf, prog).map_err(|e| e.to_string())?;
        if p.fd().is_err() {
            p.load(&format!("{SYSCALL_FN_PREFIX}syncfs"), btf)
                .map_err(|e| first_line(&e))?;
        }
        let fd = p
            .fd()
            .and_then(|fd| Ok(fd.try_clone()?))
            .map_err(|e| first_line(&e))?;
        let map = self
            .ebpf
            .map_mut(names::WALK_PROGS_FENTRY)
            .ok_or_else(|| format!("the BPF object has no {}", names::WALK_PROGS_FENTRY))?;
        ProgramArray::try_from(map)
            .and_then(|mut a| a.set(0, &fd, 0))
            .map_err(|e| first_line(&e))?;
        let p: &mut FEntry = program(&mut self.ebpf, prog).map_err(|e| e.to_string())?;
        let id = p.attach().map_err(|e| first_line(&e))?;
        self.links.push((prog, Link::Fentry(id)));
        Ok(())
    }

    /// Loads mount-tree walk program `prog` ([`MountProber::walk`]) and
    /// puts it in slot 0 of program array `progs`, where its own tail calls
    /// (and, on the raw syscall tracepoints, `sys_enter`'s) find it.
    fn load_mount_walk<P: Loadable>(
        &mut self,
        prog: &'static str,
        progs: &'static str,
    ) -> Result<aya::programs::ProgramFd, String>
    where
        for<'a> &'a mut P:
            TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let p: &mut P = program(&mut self.ebpf, prog).map_err(|e| e.to_string())?;
        load_once(p).map_err(|e| first_line(&e))?;
        let fd = p.program_fd().map_err(|e| first_line(&e))?;
        let map = self
            .ebpf
            .map_mut(progs)
            .ok_or_else(|| format!("the BPF object has no {progs}"))?;
        ProgramArray::try_from(map)
            .and_then(|mut array| array.set(0, &fd, 0))
            .map_err(|e| first_line(&e))?;
        Ok(fd)
    }

    /// Says so when the mount-tree walk is not available.
    fn note_mount_walk<T>(&mut self, walk: Result<T, String>) {
        if let Err(e) = walk {
            self.notes.push(format!(
                "the mount-tree walk did not load ({e}): the kernel's flags of a new \
                 namespace's mounts are read mount by mount"
            ));
        }
    }

    /// Loads and attaches raw tracepoint program `prog` to `tp`; the first
    /// line of the error otherwise.
    fn attach_raw(&mut self, prog: &'static str, tp: &str) -> Result<(), String> {
        let p: &mut RawTracePoint = program(&mut self.ebpf, prog).map_err(|e| e.to_string())?;
        let id = load_once(p)
            .and_then(|()| p.attach(tp))
            .map_err(|e| first_line(&e))?;
        self.links.push((prog, Link::Raw(id)));
        Ok(())
    }

    /// The richest capability hook that loads: the tracepoint, else fexit,
    /// else kprobe + kretprobe. With `try_every_hook`, the others are tried
    /// too (and detached again) so that the report says what would load.
    fn attach_cap(&mut self, opts: &ProbeOptions) -> HookReport {
        let mut report = HookReport {
            point: "capability checks",
            attached: None,
            refused: Vec::new(),
            also_loads: Vec::new(),
            gaps: Vec::new(),
            hints: Vec::new(),
        };
        // NSTRACE_CAP_HOOK=tracepoint|fexit|kprobe keeps only that method:
        // a test knob, so that each path can be proven on a kernel that
        // would otherwise pick a richer one.
        let forced = std::env::var("NSTRACE_CAP_HOOK").ok();
        let methods = CAP_METHODS
            .into_iter()
            .filter(|m| forced.as_deref().is_none_or(|f| f == m.name()));
        for method in methods {
            if self.cap_via.is_some() && !opts.try_every_hook {
                break;
            }
            let before = self.links.len();
            match self.attach_cap_with(method, opts) {
                Ok(()) if self.cap_via.is_none() => {
                    self.cap_via = Some(method);
                    report.attached = Some(method.what());
                }
                Ok(()) => {
                    // Only trying: take it off again.
                    for (prog, link) in self.links.split_off(before) {
                        self.detach_link(prog, link);
                    }
                    report.also_loads.push(method.what());
                }
                Err(e) => report.refused.push((method.what(), e)),
            }
        }
        report
    }

    fn attach_cap_with(&mut self, method: CapMethod, opts: &ProbeOptions) -> Result<(), String> {
        match method {
            CapMethod::Tracepoint => self.attach_raw(names::PROG_CAP, "cap_capable"),
            CapMethod::Fexit => {
                let btf = aya::Btf::parse_file(&opts.btf_path, aya::Endianness::default())
                    .map_err(|e| format!("kernel BTF: {}", first_line(&e)))?;
                let p: &mut FExit =
                    program(&mut self.ebpf, names::PROG_CAP_FEXIT).map_err(|e| e.to_string())?;
                let id = p
                    .load("cap_capable", &btf)
                    .and_then(|()| p.attach())
                    .map_err(|e| first_line(&e))?;
                self.links.push((names::PROG_CAP_FEXIT, Link::Fexit(id)));
                Ok(())
            }
            CapMethod::Kprobe => {
                let mut ids = Vec::new();
                for prog in [names::PROG_CAP_KRETPROBE, names::PROG_CAP_KPROBE] {
                    let p: &mut KProbe =
                        program(&mut self.ebpf, prog).map_err(|e| e.to_string())?;
                    match p.load().and_then(|()| p.attach("cap_capable", 0)) {
                        Ok(id) => ids.push((prog, Link::Kprobe(id))),
                        Err(e) => {
                            for (prog, link) in ids {
                                self.detach_link(prog, link);
                            }
                            return Err(first_line(&e));
                        }
                    }
                }
                self.links.extend(ids);
                Ok(())
            }
        }
    }

    fn detach_link(&mut self, prog: &'static str, link: Link) {
        match link {
            Link::Raw(id) => {
                if let Ok(p) = program::<RawTracePoint>(&mut self.ebpf, prog) {
                    let _ = p.detach(id);
                }
            }
            Link::Fentry(id) => {
                if let Ok(p) = program::<FEntry>(&mut self.ebpf, prog) {
                    let _ = p.detach(id);
                }
            }
            Link::Fexit(id) => {
                if let Ok(p) = program::<FExit>(&mut self.ebpf, prog) {
                    let _ = p.detach(id);
                }
            }
            Link::Kprobe(id) => {
                if let Ok(p) = program::<KProbe>(&mut self.ebpf, prog) {
                    let _ = p.detach(id);
                }
            }
        }
    }

    /// Each loaded program with the number of instructions the verifier
    /// processed for it (its cost at load, which older verifiers cap at a
    /// million), when the kernel says.
    pub fn verifier_costs(&self) -> Vec<(String, Option<u32>)> {
        let mut v: Vec<(String, Option<u32>)> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_string(), info.verified_instruction_count()))
            })
            .collect();
        v.sort();
        v
    }

    /// Which decision hooks are attached.
    pub fn hooks(&self) -> crate::explain::Hooks {
        crate::explain::Hooks {
            cap: self.cap_via.is_some(),
            klog: self.links.iter().any(|(p, _)| *p == names::PROG_KLOG),
            cap_via: self.cap_via.map(CapMethod::name),
            syscalls_via: self.syscalls_via.map(SyscallMethod::name),
        }
    }

    /// Takes the ring buffer to read records from (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(ProbeError::Missing("EVENTS map"))?;
        RingBuf::try_from(map).map_err(|e| map_err(names::EVENTS, e))
    }

    /// Takes the mount prober (once).
    pub fn take_mount_prober(&mut self) -> Result<MountProber, ProbeError> {
        Ok(MountProber {
            slots: self.take_mapped(names::MOUNT_PROBE, nstrace_common::MOUNT_PROBE_SLOTS)?,
            walk: self.take_mapped(names::MOUNT_WALK, 1)?,
        })
    }

    /// Takes the mappable array `name` of `len` elements and maps it.
    fn take_mapped<T>(&mut self, name: &'static str, len: u32) -> Result<Mapped<T>, ProbeError> {
        let map = self.ebpf.take_map(name).ok_or(ProbeError::Missing(name))?;
        let aya::maps::Map::Array(data) = map else {
            return Err(ProbeError::Missing(name));
        };
        Mapped::new(data, len as usize).map_err(|source| ProbeError::MapMemory { name, source })
    }

    fn tracked(&mut self) -> Result<HashMap<&mut MapData, u32, u8>, ProbeError> {
        let map = self
            .ebpf
            .map_mut(names::TRACKED)
            .ok_or(ProbeError::Missing("TRACKED map"))?;
        HashMap::try_from(map).map_err(|e| map_err(names::TRACKED, e))
    }

    /// Starts tracing process `pid` and, from now on, its new children.
    pub fn track(&mut self, pid: u32) -> Result<(), ProbeError> {
        self.tracked()?
            .insert(pid, 1, 0)
            .map_err(|e| map_err(names::TRACKED, e))
    }

    /// How many tracked processes are alive. The kernel forgets a process
    /// when it exits; a pid registered from userspace after its process
    /// already ended (`-p` racing with the exit) is pruned here.
    pub fn tracked_count(&mut self) -> Result<usize, ProbeError> {
        let mut tracked = self.tracked()?;
        let pids: Vec<(u32, u8)> = tracked.iter().filter_map(Result::ok).collect();
        let mut alive = 0;
        let mut clients_gone = 0;
        for (pid, what) in pids {
            if process_alive(pid) {
                alive += 1;
            } else if tracked.remove(&pid).is_ok() && what == nstrace_common::tracked::CLIENT {
                clients_gone += 1;
            }
        }
        if clients_gone > 0 {
            self.forget_clients(clients_gone)?;
        }
        Ok(alive)
    }

    /// Tells the programs whether the reader polls the ring buffer: while it
    /// does, urgent records do not wake it (a wakeup interrupts the traced
    /// task); while it sleeps, they do.
    pub fn set_reader_polling(&mut self, polling: bool) -> Result<(), ProbeError> {
        // The whole entry is rewritten; every other field keeps its bytes,
        // so a program reading it meanwhile sees no other change.
        self.config.reader_polling = u32::from(polling);
        fill_config(&mut self.ebpf, self.config)
    }

    /// Takes `n` pruned clients off the kernel's count of live ones.
    fn forget_clients(&mut self, n: i64) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .map_mut(names::CLIENTS)
            .ok_or(ProbeError::Missing("CLIENTS map"))?;
        let mut clients: aya::maps::Array<&mut MapData, i64> =
            aya::maps::Array::try_from(map).map_err(|e| map_err(names::CLIENTS, e))?;
        // Not atomic with the kernel's updates; a prune is already the rare
        // path of a process whose exit the kernel side did not see.
        let now = clients.get(&0, 0).map_err(|e| map_err(names::CLIENTS, e))?;
        clients
            .set(0, (now - n).max(0), 0)
            .map_err(|e| map_err(names::CLIENTS, e))
    }

    /// Records dropped in the kernel and not yet reported in a later record.
    pub fn unreported_losses(&self) -> Result<u64, ProbeError> {
        let map = self
            .ebpf
            .map(names::LOST)
            .ok_or(ProbeError::Missing("LOST map"))?;
        let lost: PerCpuArray<&MapData, u32> =
            PerCpuArray::try_from(map).map_err(|e| map_err(names::LOST, e))?;
        let values = lost.get(&0, 0).map_err(|e| map_err(names::LOST, e))?;
        Ok(values.iter().map(|&v| u64::from(v)).sum())
    }
}

impl Probes {
    /// Detaches every hook, the syscall hooks first.
    pub fn detach(mut self) {
        self.detach_syscalls();
        for (prog, link) in std::mem::take(&mut self.links).into_iter().rev() {
            self.detach_link(prog, link);
        }
    }

    /// Detaches the syscall hooks (the rest stays until [`Probes::detach`]),
    /// so that a command that goes on untraced pays nothing for them. The
    /// programs stop first (their syscall table is emptied): per-syscall
    /// events are freed in the background and may run a moment longer.
    pub fn detach_syscalls(&mut self) {
        // Nothing new is tracked either: the child that releases the events
        // is nstrace's own.
        let mut quiet = self.config;
        quiet.syscalls = [0; (MAX_SYSCALL_NR / 64) as usize];
        quiet.probe_nr = 0;
        quiet.launcher_pid = 0;
        quiet.trace_all = 0;
        quiet.follow_runtimes = 0;
        // Kept as the current entry: a later rewrite (the reader's polling
        // flag) must not bring the syscalls back.
        self.config = quiet;
        let _ = fill_config(&mut self.ebpf, quiet);
        // The trampolines' links are released with the events, in the
        // background: the kernel takes each trampoline out on its own and
        // waits for tasks to leave it (2.2 s for 30 of them in an emulated
        // 6.12 guest). Copies are taken first, so that aya's own
        // descriptors close without that wait, and handed over after, so
        // that the closer holds the last ones.
        let copies = self.syscall_trampoline_links();
        let syscalls = [
            names::PROG_SYS_ENTER,
            names::PROG_SYS_EXIT,
            names::PROG_MOUNT_WALK_FENTRY,
        ];
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.links)
                .into_iter()
                .partition(|(prog, _)| {
                    syscalls.contains(prog)
                        || names::SYS_FENTRY_STUBS.contains(prog)
                        || names::SYS_FEXIT_STUBS.contains(prog)
                });
        self.links = kept;
        for (prog, link) in gone.into_iter().rev() {
            self.detach_link(prog, link);
        }
        for fd in copies {
            self.syscall_events.adopt(fd);
        }
        std::mem::take(&mut self.syscall_events).release();
    }
}

impl Probes {
    /// Copies (dup'ed descriptors) of the BPF links of the syscall
    /// trampolines (stubs and walk), found among nstrace's descriptors by
    /// the program each link holds (aya keeps a link's descriptor to
    /// itself). Empty unless syscalls are on fentry, or if /proc cannot be
    /// read (the links are then closed the slow way).
    fn syscall_trampoline_links(&self) -> Vec<std::os::fd::OwnedFd> {
        if self.syscalls_via != Some(SyscallMethod::Fentry) {
            return Vec::new();
        }
        let ids: Vec<u32> = self
            .ebpf
            .programs()
            .filter(|(name, _)| {
                *name == names::PROG_MOUNT_WALK_FENTRY
                    || names::SYS_FENTRY_STUBS.contains(name)
                    || names::SYS_FEXIT_STUBS.contains(name)
            })
            .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
            .collect();
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return Vec::new();
        };
        // Listed before any copy is made (a copy would be listed too).
        let fds: Vec<i32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        let mut links = Vec::new();
        for fd in fds {
            let is_link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link");
            if !is_link {
                continue;
            }
            let prog = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .ok()
                .and_then(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse::<u32>().ok())
                });
            if !prog.is_some_and(|id| ids.contains(&id)) {
                continue;
            }
            // SAFETY: `fd` is open (just listed) and stays open until the
            // caller has aya close the link, after this; the copy is a new
            // descriptor.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if copy >= 0 {
                // SAFETY: the new descriptor is ours alone.
                links.push(unsafe {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy)
                });
            }
        }
        links
    }
}

/// A BPF array the kernel lets userspace map (`BPF_F_MMAPABLE`), mapped.
struct Mapped<T> {
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
    /// The first element.
    ptr: std::ptr::NonNull<T>,
    /// Elements mapped.
    len: usize,
}

impl<T> Mapped<T> {
    /// Maps the array's `len` elements into memory.
    fn new(map: MapData, len: usize) -> std::io::Result<Self> {
        let bytes = len * std::mem::size_of::<T>();
        // SAFETY: maps the array's own memory (the map was created mappable),
        // shared with the kernel; nothing else aliases it in this process.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd()),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<T>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self {
            _map: map,
            ptr,
            len,
        })
    }

    /// Element `i`, if mapped.
    fn element(&mut self, i: usize) -> Option<*mut T> {
        // SAFETY: `i` is below the number of elements mapped.
        (i < self.len).then(|| unsafe { self.ptr.as_ptr().add(i) })
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.len * std::mem::size_of::<T>(),
            )
        };
    }
}

/// Reads the kernel's own state of mounts: one mount nstrace holds an fd
/// to, or every mount of a mount namespace nstrace holds an nsfs fd to.
///
/// The answers land in BPF arrays nstrace maps into its memory: a request
/// costs one syscall (`syncfs`, which the sys_enter program answers for
/// nstrace's pid) and nothing else.
pub struct MountProber {
    /// One slot per fd number.
    slots: Mapped<MountProbe>,
    /// The last walk.
    walk: Mapped<MountWalk>,
}

/// What a walk of a mount namespace found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedNamespace {
    /// The namespace walked (inode number).
    pub mnt_ns: u32,
    /// Its mounts, in the kernel's depth-first order.
    pub mounts: Vec<WalkedMount>,
    /// Whether every mount is listed (the walk came back to the root).
    pub complete: bool,
}

impl MountProber {
    /// The mount of `fd` (which must be nstrace's own, ideally O_PATH) as the
    /// kernel sees it: `syncfs(fd)` is the request the sys_enter program
    /// answers for nstrace's pid (on an O_PATH fd it fails with EBADF and
    /// does nothing else), writing the fd's slot before the call returns.
    ///
    /// The descriptor is closed as soon as the request is made, before the
    /// answer is read: while nstrace holds it, the mount has one more
    /// reference, and a umount of it (without MNT_DETACH) by the traced
    /// program fails with EBUSY. The slot is zeroed before each request, so
    /// an answer is never one left from an earlier descriptor.
    pub fn probe(&mut self, fd: std::os::fd::OwnedFd) -> Option<MountProbe> {
        use std::os::fd::AsRawFd;
        let raw = usize::try_from(fd.as_raw_fd()).ok()?;
        let slot = self.slots.element(raw)?;
        // SAFETY: the kernel writes the slot only during the syncfs below,
        // made by this thread (`&mut self`), so the accesses do not overlap.
        unsafe { std::ptr::write_volatile(slot, MountProbe::default()) };
        // SAFETY: syncfs on a descriptor we own; its result is irrelevant.
        let _ = unsafe { libc::syncfs(fd.as_raw_fd()) };
        drop(fd);
        // SAFETY: as above; the program's write happened before syncfs
        // returned.
        let got = unsafe { std::ptr::read_volatile(slot) };
        (got.answered != 0).then_some(got)
    }

    /// Every mount of the mount namespace of `ns` (an nsfs fd, as opened
    /// from `/proc/PID/ns/mnt`), with the kernel's flags: one `syncfs` with
    /// [`WALK_REQUEST`] set in the fd number, which no descriptor has, so
    /// the kernel fails the call with EBADF after the program answered.
    /// The nsfs fd holds the namespace, not any of its mounts: unlike
    /// [`MountProber::probe`], this cannot make the traced program's umount
    /// fail with EBUSY. `None` if the program did not answer (offsets this
    /// kernel lacks, an fd that is not nsfs).
    pub fn walk(&mut self, ns: std::os::fd::BorrowedFd<'_>) -> Option<WalkedNamespace> {
        use std::os::fd::AsRawFd;
        let raw = u64::try_from(ns.as_raw_fd()).ok()?;
        let request = libc::c_int::try_from(raw | WALK_REQUEST).ok()?;
        let out = self.walk.element(0)?;
        // SAFETY: the kernel writes the element only during the syncfs
        // below, made by this thread (`&mut self`); the header is zeroed
        // first so that an earlier answer is never taken for this one.
        unsafe {
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*out).answered), 0);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*out).mnt_ns), 0);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*out).count), 0);
        }
        // SAFETY: syncfs on a number that is no descriptor; it only fails.
        let _ = unsafe { libc::syncfs(request) };
        // SAFETY: as above; the program's writes happened before syncfs
        // returned, and `count` is bounded before it is used.
        unsafe {
            if std::ptr::read_volatile(std::ptr::addr_of!((*out).answered)) == 0 {
                return None;
            }
            let count = std::ptr::read_volatile(std::ptr::addr_of!((*out).count));
            let count = (count as usize).min(WALK_MOUNTS as usize);
            let first = std::ptr::addr_of!((*out).mounts).cast::<WalkedMount>();
            Some(WalkedNamespace {
                mnt_ns: std::ptr::read_volatile(std::ptr::addr_of!((*out).mnt_ns)),
                mounts: (0..count)
                    .map(|i| std::ptr::read_volatile(first.add(i)))
                    .collect(),
                complete: std::ptr::read_volatile(std::ptr::addr_of!((*out).complete)) != 0,
            })
        }
    }
}

/// Whether `pid` exists and has not exited (zombies have).
fn process_alive(pid: u32) -> bool {
    // The state follows the command name, which is in parentheses.
    crate::procfs::with_text(&format!("/proc/{pid}/stat"), |stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
    .unwrap_or(false)
}

/// A program that attaches without a target at load time.
trait Loadable {
    fn is_loaded(&self) -> bool;
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError>;
    /// A descriptor of the loaded program (for a program array).
    fn program_fd(&self) -> Result<aya::programs::ProgramFd, aya::programs::ProgramError>;
}

impl Loadable for RawTracePoint {
    fn is_loaded(&self) -> bool {
        self.fd().is_ok()
    }
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
    fn program_fd(&self) -> Result<aya::programs::ProgramFd, aya::programs::ProgramError> {
        Ok(self.fd()?.try_clone()?)
    }
}

impl Loadable for TracePoint {
    fn is_loaded(&self) -> bool {
        self.fd().is_ok()
    }
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
    fn program_fd(&self) -> Result<aya::programs::ProgramFd, aya::programs::ProgramError> {
        Ok(self.fd()?.try_clone()?)
    }
}

/// Loads `p` unless [`preload`] already did.
fn load_once<P: Loadable>(p: &mut P) -> Result<(), aya::programs::ProgramError> {
    if p.is_loaded() {
        Ok(())
    } else {
        p.load_it()
    }
}

/// Loads each of `loads` (program, the kernel function it is for), each on
/// a thread of its own (the verifier and aya's search of the kernel's BTF
/// for the function run in the loading thread). A program loaded before
/// is left as it is. Each result: loaded, not loaded because the kernel
/// has no such function (a syscall newer than it), or the kernel's reason.
fn load_trampolines(
    ebpf: &mut Ebpf,
    loads: &[(&'static str, &str)],
    btf: &aya::Btf,
) -> std::collections::HashMap<&'static str, Result<bool, String>> {
    use aya::programs::Program;
    let load = |r: Result<(), aya::programs::ProgramError>| match r {
        Err(aya::programs::ProgramError::Btf(aya::BtfError::UnknownBtfTypeName { .. })) => {
            Ok(false)
        }
        Err(e) => Err(first_line(&e)),
        Ok(()) => Ok(true),
    };
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (name, prog) in ebpf.programs_mut() {
            let Some(&(name, function)) = loads.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            handles.push(scope.spawn(move || {
                let r = match prog {
                    Program::FEntry(p) if p.fd().is_ok() => Ok(true),
                    Program::FExit(p) if p.fd().is_ok() => Ok(true),
                    Program::FEntry(p) => load(p.load(function, btf)),
                    Program::FExit(p) => load(p.load(function, btf)),
                    _ => Err(format!("{name} is no fentry or fexit program")),
                };
                (name, r)
            }));
        }
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// A new descriptor of loaded fentry or fexit program `name`.
fn program_fd_of(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::programs::ProgramFd, String> {
    use aya::programs::Program;
    let fd = match ebpf.program_mut(name) {
        Some(Program::FEntry(p)) => p.fd(),
        Some(Program::FExit(p)) => p.fd(),
        _ => return Err(format!("the BPF object has no trampoline program {name}")),
    };
    fd.and_then(|fd| Ok(fd.try_clone()?))
        .map_err(|e| first_line(&e))
}

/// Loads, each on a thread of its own, the programs a trace attaches on
/// most kernels: the verifier takes most of nstrace's start-up (about 60 ms
/// for the two syscall programs here), and it runs in the loading thread,
/// so two cores halve it. A program that fails here is loaded again where
/// it is attached, which reports the error (or takes another hook).
/// `syscall_events`: the per-syscall event programs, else the raw ones.
fn preload(ebpf: &mut Ebpf, syscalls: Option<SyscallMethod>) {
    use aya::programs::Program;
    let syscalls: &[&str] = match syscalls {
        Some(SyscallMethod::Events) => &[
            names::PROG_SYSCALL_ENTER,
            names::PROG_SYSCALL_EXIT,
            names::PROG_MOUNT_WALK,
        ],
        Some(SyscallMethod::Raw) => &[
            names::PROG_SYS_ENTER,
            names::PROG_SYS_EXIT,
            names::PROG_MOUNT_WALK_RAW,
        ],
        // Loaded against their functions where they are attached.
        Some(SyscallMethod::Fentry) | None => &[],
    };
    let wanted: Vec<&str> = HOOKS
        .iter()
        .map(|(p, _)| *p)
        .chain(syscalls.iter().copied())
        .chain([names::PROG_CAP, names::PROG_KLOG])
        .collect();
    std::thread::scope(|scope| {
        for (name, prog) in ebpf.programs_mut() {
            if !wanted.contains(&name) {
                continue;
            }
            scope.spawn(move || match prog {
                Program::RawTracePoint(p) => {
                    let _ = load_once(p);
                }
                Program::TracePoint(p) => {
                    let _ = load_once(p);
                }
                _ => {}
            });
        }
    });
}

fn fill_arg_specs(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(names::ARG_SPECS)
        .ok_or(ProbeError::Missing("ARG_SPECS map"))?;
    let mut specs: aya::maps::Array<&mut MapData, ArgSpec> =
        aya::maps::Array::try_from(map).map_err(|e| map_err(names::ARG_SPECS, e))?;
    for def in SYSCALLS {
        specs
            .set(def.nr, def.arg_spec(), 0)
            .map_err(|e| map_err(names::ARG_SPECS, e))?;
    }
    Ok(())
}

fn fill_programs(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(names::PROGRAMS)
        .ok_or(ProbeError::Missing("PROGRAMS map"))?;
    let mut programs: HashMap<&mut MapData, [u8; 16], u8> =
        HashMap::try_from(map).map_err(|e| map_err(names::PROGRAMS, e))?;
    for (comm, role) in crate::containers::PROGRAMS {
        programs
            .insert(crate::containers::comm_key(comm), role, 0)
            .map_err(|e| map_err(names::PROGRAMS, e))?;
    }
    Ok(())
}

fn fill_config(ebpf: &mut Ebpf, config: Config) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(names::CONFIG)
        .ok_or(ProbeError::Missing("CONFIG map"))?;
    let mut array: aya::maps::Array<&mut MapData, Config> =
        aya::maps::Array::try_from(map).map_err(|e| map_err(names::CONFIG, e))?;
    array
        .set(0, config, 0)
        .map_err(|e| map_err(names::CONFIG, e))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(ProbeError::Missing("program"))?;
    prog.try_into()
        .map_err(|e| prog_err(format!("use program {name}"), e))
}

/// An error with its causes, first lines only (aya's include the whole
/// verifier log: of that, the line that says why the program was refused).
fn first_line(e: &dyn std::error::Error) -> String {
    let line = |e: &dyn std::error::Error| {
        let text = e.to_string();
        let (head, log) = match text.split_once("Verifier output:") {
            Some((head, log)) => (head, Some(log)),
            None => (text.lines().next().unwrap_or_default(), None),
        };
        let head = head.trim_end().trim_end_matches('.').to_string();
        match log.and_then(verifier_reason) {
            Some(why) => format!("{head}; the verifier says: {why}"),
            None => head,
        }
    };
    let mut parts = vec![line(e)];
    let mut cause = e.source();
    while let Some(c) = cause {
        let l = line(c);
        if !parts.iter().any(|p| p.contains(&l)) {
            parts.push(l);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// The last line of a verifier log that is not a statistic: where the
/// verifier stopped, and why.
fn verifier_reason(log: &str) -> Option<&str> {
    const STATS: [&str; 3] = ["processed ", "verification time", "stack depth"];
    log.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !STATS.iter().any(|s| l.starts_with(s)))
}

fn prog_err(what: String, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Program {
        what,
        source: Box::new(e),
    }
}

fn map_err(name: &'static str, e: aya::maps::MapError) -> ProbeError {
    ProbeError::Map {
        name,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::verifier_reason;

    #[test]
    fn the_reason_is_the_last_line_before_the_statistics() {
        let log = " 0: R1=ctx() R10=fp0\n1998: (79) r2 = *(u64 *)(r1 -8)\n\
                   invalid variable-offset read from stack R1\n\
                   verification time 26802 usec\nstack depth 288\n\
                   processed 2412 insns (limit 1000000)\n";
        assert_eq!(
            verifier_reason(log),
            Some("invalid variable-offset read from stack R1")
        );
        assert_eq!(verifier_reason("\n"), None);
    }

    /// A program that calls a function of its own (memset, say, for a
    /// zeroed 40-byte value) loads on recent kernels, but 6.1's verifier
    /// then counts both frames' stack rounded up and gives up precision
    /// tracking: it refused syscall_enter once for that. Caught here, on
    /// any host, rather than only in the 6.1 guest.
    #[test]
    fn no_program_calls_a_function_of_its_own() {
        use object::{Object, ObjectSection, SectionKind};
        /// `BPF_JMP | BPF_CALL`; a source register of 1 is BPF_PSEUDO_CALL.
        const CALL: u8 = 0x85;
        let file = object::File::parse(super::BPF_OBJECT).unwrap();
        let mut programs = 0;
        for section in file.sections() {
            let name = section.name().unwrap();
            if section.kind() != SectionKind::Text || name == ".text" {
                continue;
            }
            programs += 1;
            for (i, insn) in section.data().unwrap().chunks_exact(8).enumerate() {
                let pseudo_call = insn[0] == CALL && insn[1] >> 4 == 1;
                assert!(!pseudo_call, "{name}: instruction {i} calls a function");
            }
        }
        assert!(programs >= 10, "only {programs} program sections");
    }

    /// Each traced syscall has its stub pair in the object, in the section
    /// of its kind, and so do the bodies they tail-call.
    #[test]
    fn every_traced_syscall_has_a_trampoline_stub_pair() {
        use nstrace_common::names;
        use object::{Object, ObjectSection, ObjectSymbol};
        // A pair per traced syscall, and syncfs's entry stub.
        assert!(super::SYSCALLS.len() < names::SYSCALL_TRAMPOLINES);
        let file = object::File::parse(super::BPF_OBJECT).unwrap();
        let section_of = |name: &str| {
            let sym = file
                .symbol_by_name(name)
                .unwrap_or_else(|| panic!("no program {name}"));
            let index = sym.section_index().unwrap();
            file.section_by_index(index)
                .unwrap()
                .name()
                .unwrap()
                .to_string()
        };
        let stubs = names::SYS_FENTRY_STUBS.iter().zip(names::SYS_FEXIT_STUBS);
        for (enter, exit) in stubs.take(super::SYSCALLS.len() + 1) {
            assert_eq!(section_of(enter), "fentry");
            assert_eq!(section_of(exit), "fexit");
        }
        assert_eq!(section_of(names::PROG_SYS_FENTRY_BODY), "fentry");
        assert_eq!(section_of(names::PROG_SYS_FEXIT_BODY), "fexit");
        assert_eq!(section_of(names::PROG_MOUNT_WALK_FENTRY), "fentry");
    }
}
