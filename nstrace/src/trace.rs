//! A trace session, end to end: load the probes, start or attach to the
//! target, then move every kernel record through decode -> model -> output
//! until the target is gone.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::cli::Format;
use crate::decode::Decoder;
use crate::event::{Event, EventKind};
use crate::explain::Explainer;
use crate::kernel_btf::{BtfError, VMLINUX_BTF};
use crate::model::Model;
use crate::output::{ndjson::NdjsonSink, text::TextSink, Sink, Summary};
use crate::probes::{ProbeError, ProbeOptions, Probes};
use crate::scope::{LaunchError, Launched, Scope};

/// Exit status when the output went away (as a shell reports a writer killed by SIGPIPE).
pub const EXIT_BROKEN_PIPE: i32 = 128 + libc::SIGPIPE;
/// Exit status when nstrace itself failed.
pub const EXIT_NSTRACE_FAILED: i32 = 125;

/// Everything a session needs to know.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// What to trace.
    pub scope: Scope,
    /// Output format.
    pub format: Format,
    /// Output file (standard output if `None`).
    pub output: Option<PathBuf>,
    /// Colour the text timeline.
    pub color: bool,
    /// Ring buffer bytes.
    pub ring_bytes: u32,
    /// How often the reader reads the ring buffer while it polls (after a
    /// wakeup, until records stop coming).
    pub poll_every: Duration,
    /// BTF file to use instead of the kernel's.
    pub btf: Option<PathBuf>,
    /// Follow the containers started for traced engine clients.
    pub follow_runtimes: bool,
    /// Replace secret mount options (passwords, keys) in every output.
    pub redact: bool,
    /// Run the command as this user (nstrace keeps its privileges).
    pub run_as: Option<crate::scope::RunAs>,
    /// The one way to observe syscalls, by name (`--syscall-hook`).
    pub syscall_hook: Option<&'static str>,
}

/// Why a session could not run.
#[derive(Debug, Error)]
pub enum TraceError {
    /// Not enough privilege to load BPF programs.
    #[error(
        "nstrace needs root: loading its BPF programs requires CAP_BPF and CAP_PERFMON \
         (or CAP_SYS_ADMIN); try: sudo nstrace ..."
    )]
    NotPrivileged,
    /// No usable BTF for the mode asked for.
    #[error("{0}; without it nstrace cannot follow child processes or read namespace ids (use --btf FILE, or --all for a reduced trace)")]
    NoBtf(BtfError),
    /// The probes failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The command could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The process given with -p does not exist.
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    /// The output file could not be opened.
    #[error("cannot write to {path}: {source}")]
    OutputFile {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Anything else in the event loop.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl TraceError {
    /// nstrace's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Launch(e) => e.exit_code(),
            _ => EXIT_NSTRACE_FAILED,
        }
    }
}

/// Capability bits in `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether this process may load and attach tracing programs.
pub fn has_bpf_privileges() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The thread-group id of `pid` (which may be a thread id), if it exists.
fn thread_group_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `nstrace doctor`: loads the programs as a trace would, trying every
/// hook, and reports what this kernel allows.
pub fn doctor(btf: Option<PathBuf>, json: bool) -> Result<(), TraceError> {
    if !has_bpf_privileges() {
        return Err(TraceError::NotPrivileged);
    }
    let btf_path = btf.unwrap_or_else(|| VMLINUX_BTF.into());
    let (offsets, missing) =
        crate::kernel_btf::offsets_cached(&btf_path).map_err(TraceError::NoBtf)?;
    let probes = Probes::start(&ProbeOptions {
        trace_all: false,
        launcher_pid: 0,
        ring_bytes: 1 << 16,
        offsets,
        follow_runtimes: false,
        btf_path,
        try_every_hook: true,
        syscall_hook: None,
    })?;
    for note in &probes.notes {
        eprintln!("nstrace: {note}");
    }
    let mut out = io::stdout().lock();
    crate::doctor::report(
        &kernel_release(),
        &probes.reports,
        &probes.hooks(),
        json,
        &mut out,
    )?;
    if !json {
        if !missing.is_empty() {
            writeln!(out, "BTF lacks (read as 0): {}", missing.join(", "))?;
        }
        writeln!(
            out,
            "verifier cost (instructions processed at load; the limit is 1,000,000):"
        )?;
        for (name, count) in probes.verifier_costs() {
            let count = count.map_or_else(|| "?".to_string(), |c| c.to_string());
            writeln!(out, "  {name:<24} {count}")?;
        }
    }
    probes.detach();
    Ok(())
}

/// Runs a whole session and returns nstrace's exit status.
pub fn run(opts: TraceOptions) -> Result<i32, TraceError> {
    if !has_bpf_privileges() {
        return Err(TraceError::NotPrivileged);
    }
    let trace_all = matches!(opts.scope, Scope::All(_));
    let btf_path = opts.btf.clone().unwrap_or_else(|| VMLINUX_BTF.into());
    let offsets = match crate::kernel_btf::offsets_cached(&btf_path) {
        Ok((offsets, missing)) => {
            if !missing.is_empty() {
                eprintln!(
                    "nstrace: this kernel's BTF lacks {}; the matching fields are reported as 0",
                    missing.join(", ")
                );
            }
            offsets
        }
        Err(e) if trace_all => {
            eprintln!(
                "nstrace: {e}; namespace ids and parents are reported as 0, new processes as exec only"
            );
            let mut offsets = nstrace_common::Offsets::UNRESOLVED;
            (offsets.regs_arg, offsets.regs_nr) = crate::kernel_btf::abi_syscall_regs();
            offsets
        }
        Err(e) => return Err(TraceError::NoBtf(e)),
    };

    let attach_pid = match opts.scope {
        Scope::Attach(pid) => Some(thread_group_of(pid).ok_or(TraceError::NoSuchProcess(pid))?),
        _ => None,
    };

    let sink: Box<dyn Sink> = {
        let out: Box<dyn Write> = match &opts.output {
            Some(path) => Box::new(io::BufWriter::new(std::fs::File::create(path).map_err(
                |source| TraceError::OutputFile {
                    path: path.clone(),
                    source,
                },
            )?)),
            // Buffered: the pipeline flushes after each batch of records
            // (a line-buffered stdout would cost a write(2) per event).
            None => Box::new(io::BufWriter::with_capacity(64 * 1024, io::stdout())),
        };
        match opts.format {
            Format::Text => Box::new(TextSink::new(out, opts.color)),
            Format::Ndjson => Box::new(NdjsonSink::new(out)),
        }
    };

    // Signals are caught from here on; the command starts with default handlers.
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])?;
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("nstrace-signals".into())
        .spawn(move || {
            for origin in signals.forever() {
                let from_terminal = matches!(origin.cause, Cause::Kernel);
                if sig_tx.send((origin.signal, from_terminal)).is_err() {
                    break;
                }
            }
        })?;

    let launcher_pid = if opts.scope.command().is_some() && !trace_all {
        std::process::id()
    } else {
        0
    };
    let mut probes = Probes::start(&ProbeOptions {
        trace_all,
        launcher_pid,
        ring_bytes: opts.ring_bytes,
        offsets,
        follow_runtimes: opts.follow_runtimes,
        btf_path: btf_path.clone(),
        try_every_hook: false,
        syscall_hook: opts.syscall_hook.map(str::to_string),
    })?;
    for note in &probes.notes {
        eprintln!("nstrace: {note}");
    }
    if let Some(pid) = attach_pid {
        probes.track(pid)?;
        eprintln!("nstrace: attached to process {pid}");
    }
    let ring = probes.take_events()?;
    let hooks = probes.hooks();
    let prober = match probes.take_mount_prober() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("nstrace: mount flags will not be checked with the kernel: {e}");
            None
        }
    };
    let mut decoder = Decoder::new();
    let mut sink = sink;
    let start = crate::output::StartInfo {
        seq: decoder.take_seq(),
        ts_ns: monotonic_ns(),
        hooks,
        kernel: kernel_release(),
    };
    if let Err(e) = sink.start(&start) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("nstrace: cannot write the trace: {e}");
        }
        return Ok(EXIT_BROKEN_PIPE);
    }
    let launched = match opts.scope.command() {
        Some(argv) => Some(Launched::spawn(argv, opts.run_as.as_ref())?),
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let session = Session {
        probes,
        launched,
        scope: opts.scope,
        poll_every: opts.poll_every,
        ring_bytes: opts.ring_bytes as usize,
        pipeline: Pipeline {
            prober,
            decoder,
            model: Model::new(),
            explainer: Explainer::new(hooks),
            sink,
            batch: Vec::new(),
            broken: false,
            write_error: None,
            redact: opts.redact,
            urgent: 0,
            own_source: None,
            new_ns_walks: std::collections::VecDeque::new(),
            own_table: crate::mounts::mnt_ns_of(std::process::id()).and_then(|ns| {
                crate::mounts::OwnTable::open()
                    .inspect_err(|e| eprintln!("nstrace: cannot read its own mount table: {e}"))
                    .ok()
                    .map(|t| (ns, t))
            }),
        },
    };
    let result = runtime.block_on(session.run(ring, sig_rx));
    signal_handle.close();
    result
}

/// Decode -> model -> output, for one record at a time.
struct Pipeline {
    /// Reads the kernel's own mount flags.
    prober: Option<crate::probes::MountProber>,
    decoder: Decoder,
    model: Model,
    explainer: Explainer,
    sink: Box<dyn Sink>,
    batch: Vec<Event>,
    /// The output failed (closed pipe, full disk): stop writing.
    broken: bool,
    /// The first write error other than a closed pipe.
    write_error: Option<io::Error>,
    /// Redact secrets before anything sees the event.
    redact: bool,
    /// nstrace's own mount namespace and its table.
    own_table: Option<(u32, crate::mounts::OwnTable)>,
    /// nstrace's own mount namespace as copies of it are paired with (its
    /// walk and table), and the generation of the own table it was made
    /// with; `None` inside when it has two mounts alike.
    own_source: Option<(u64, Option<crate::mounts::CopySource>)>,
    /// Walks of new mount namespaces (they come ahead of the unshare that
    /// made them), until that call's event takes its own.
    new_ns_walks: std::collections::VecDeque<crate::decode::NewNsWalk>,
    /// Urgent records fed since the last [`Pipeline::drain`] began.
    urgent: usize,
}

/// What one read of the ring buffer found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Drained {
    /// Of them, those the programs wake a sleeping reader for (a failed
    /// call, a namespace change, an exec): what polling is for.
    urgent: usize,
    /// Their bytes.
    bytes: usize,
}

/// How often to read records that wake nobody, found `bytes` of them
/// `elapsed` after the previous read: often enough that at this rate a
/// quarter of the `ring_bytes` ring buffer fills between reads, but not
/// more often than `floor` (`--poll-interval`); `None` if the 100 ms tick
/// is often enough. Polling every `--poll-interval` for such records (a
/// storm of forks, a namespace benchmark's rounds) woke the reader 4,000
/// times a second, each wakeup taking the other CPU from the traced work;
/// polling on any of them (a fork or an exit anywhere, with `--all`) kept
/// it waking for as long as any process forked every 20 ms.
fn fill_interval(
    bytes: usize,
    elapsed: Duration,
    ring_bytes: usize,
    floor: Duration,
) -> Option<Duration> {
    let quarter = ring_bytes as f64 / 4.0;
    let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6);
    if rate * TICK.as_secs_f64() < quarter {
        return None;
    }
    Some(Duration::from_secs_f64(quarter / rate).clamp(floor, TICK))
}

/// What the reader does between reads of the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Sleeps until an urgent record wakes it, or the tick.
    Asleep,
    /// Polls every `--poll-interval` after an urgent record (the programs
    /// wake nobody meanwhile); the last `idle` polls found none.
    Polling { idle: u32 },
    /// Records that wake nobody come fast: reads them every `every` (see
    /// [`fill_interval`]) and sleeps in between, urgent records waking it.
    Filling { every: Duration },
}

/// Whether the programs wake a sleeping reader for `ev` (mirrors their
/// `wake_flag` and `wake_if_asleep`): an exec, a failed call, or one that
/// changed the caller's namespaces, unless `listed` says the kernel sent
/// the complete list of the mount namespace the call made, a copy of
/// nstrace's own (SYSCALL_NS_WALKED).
fn is_urgent(ev: &Event, listed: impl FnOnce(&crate::event::Syscall) -> bool) -> bool {
    match &ev.kind {
        EventKind::Exec { .. } => true,
        EventKind::Syscall(sc) => {
            sc.ret < 0 || (sc.ns_before.is_some_and(|b| b != sc.ns) && !listed(sc))
        }
        _ => false,
    }
}

impl Pipeline {
    fn feed(&mut self, record: &[u8]) {
        match crate::decode::new_ns_walk(record) {
            Ok(Some(walk)) => {
                if self.new_ns_walks.len() == MAX_PENDING_WALKS {
                    // Its call's record was lost, or never had a table to make.
                    self.new_ns_walks.pop_front();
                }
                self.new_ns_walks.push_back(walk);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("nstrace: skipped a malformed kernel record: {e}");
                return;
            }
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        match self.decoder.decode(record, &mut batch) {
            Ok(()) => {
                for ev in batch.drain(..) {
                    self.emit(ev);
                }
            }
            Err(e) => eprintln!("nstrace: skipped a malformed kernel record: {e}"),
        }
        self.batch = batch;
    }

    fn emit(&mut self, mut ev: Event) {
        let own_mnt_ns = self.own_table.as_ref().map(|(ns, _)| *ns);
        let walks = &self.new_ns_walks;
        self.urgent += usize::from(is_urgent(&ev, |sc| {
            let mnt = nstrace_common::ns::MNT;
            own_mnt_ns.is_some_and(|own| sc.ns_before.is_some_and(|b| b.inum[mnt] == own))
                && walks
                    .iter()
                    .any(|w| w.complete && w.pid == ev.pid && w.mnt_ns == sc.ns.inum[mnt])
        }));
        if self.redact {
            crate::redact::event(&mut ev);
        }
        if let EventKind::Syscall(sc) = &mut ev.kind {
            self.probe_targets(ev.pid, sc);
        }
        let mut ann = self.model.apply(ev);
        ann.explanation = self.explainer.observe(&ann, &self.model);
        if !self.broken {
            if let Err(e) = self.sink.event(&ann) {
                self.output_failed(&e);
            }
        }
        // A container whose init is not known yet: the runtime records it in
        // its state file once the container is created.
        if matches!(
            ann.event.kind,
            EventKind::Exec { .. } | EventKind::Exit { .. }
        ) {
            if let Some(ev) = self.container_init(&ann.event) {
                self.emit(ev);
            }
        }
        // A new mount namespace: record its table now, while a process in it
        // lives (the locks it got are the lineage later explanations cite).
        if let Some(req) = crate::mounts::snapshot_request(&ann) {
            use crate::mounts::ReadFrom;
            // The kernel listed the copy as it was made: paired with its
            // source, nothing needs to be read from its processes.
            let walked = self
                .take_new_ns_walk(req.pid, req.mnt_ns)
                .and_then(|walk| self.creation_table(&walk, req.source_mnt))
                .map(|m| (m, ReadFrom::Creation));
            let table = walked.or_else(|| {
                crate::mounts::LiveTable::open(req.pid, req.mnt_ns).and_then(|mut live| {
                    let mut mounts = live.mounts()?;
                    self.kernel_view(&live, req.mnt_ns, &mut mounts);
                    Some((mounts.into(), ReadFrom::New))
                })
            });
            // Every process of the new namespace may be gone already (a
            // short-lived command, a backlog under load): the copy began as a
            // replica of its source, which usually outlives it.
            let table = table.or_else(|| {
                self.read_source(req.source_mnt)
                    .map(|m| (m, ReadFrom::Source))
            });
            if let Some((mounts, read_from)) = table {
                let ev = self.decoder.synthetic(
                    monotonic_ns(),
                    req.pid,
                    ann.event.comm.clone(),
                    EventKind::Mounts {
                        mnt_ns: req.mnt_ns,
                        user_ns: req.user_ns,
                        locked: req.locked,
                        created_by: req.created_by,
                        read_from,
                        mounts,
                    },
                );
                self.emit(ev);
            }
        }
    }

    /// A `container` event with the init pid of the container of `ev`'s
    /// process, when the model lacks it and the runtime's state file has it.
    fn container_init(&mut self, ev: &Event) -> Option<Event> {
        let (id, root) = self.model.init_unknown(ev.pid)?;
        let init = [ev.pid, std::process::id()]
            .into_iter()
            .find_map(|via| crate::containers::init_pid_from_state(via, root, id))?;
        let mut c = self.model.container_of(ev.pid)?.clone();
        c.init_pid = Some(init);
        Some(self.decoder.synthetic(
            monotonic_ns(),
            ev.pid,
            ev.comm.clone(),
            EventKind::Container(c),
        ))
    }

    /// Resolves the path arguments of a failed call to the mounts they
    /// name, as the caller sees them (through its parent, in the same mount
    /// namespace, when the caller is gone), and reads each mount's state
    /// through the kernel.
    fn probe_targets(&mut self, pid: u32, sc: &mut crate::event::Syscall) {
        let paths = crate::mounts::target_paths(sc);
        let Some(prober) = self.prober.as_mut().filter(|_| !paths.is_empty()) else {
            return;
        };
        let mnt_ns = sc.ns.inum[nstrace_common::ns::MNT];
        let parent = self.model.process(pid).and_then(|p| p.ppid);
        let candidates: Vec<u32> = std::iter::once(pid)
            .chain(parent)
            .filter(|p| crate::mounts::mnt_ns_of(*p) == Some(mnt_ns))
            .collect();
        for (arg, path) in paths {
            // The caller may exit between the check and the open: then its
            // parent (in the same mount namespace) resolves the path.
            let Some((via, fd)) = candidates
                .iter()
                .find_map(|v| Some((*v, crate::mounts::open_as(*v, &path)?)))
            else {
                continue;
            };
            if let Some(p) = prober.probe(fd) {
                sc.targets.push(crate::event::TargetMount {
                    arg: arg.into(),
                    path,
                    mnt_id: p.mnt_id,
                    parent_id: p.parent_id,
                    mnt_ns: p.mnt_ns,
                    mount_root: p.at_mount_root != 0,
                    shared: p.shared != 0,
                    parent_shared: p.parent_shared != 0,
                    flags: p.flags,
                    via_pid: via,
                });
            }
        }
    }

    /// The walk the kernel made of new mount namespace `mnt_ns` for `pid`'s
    /// unshare, if it came.
    fn take_new_ns_walk(&mut self, pid: u32, mnt_ns: u32) -> Option<crate::decode::NewNsWalk> {
        let i = self
            .new_ns_walks
            .iter()
            .position(|w| w.pid == pid && w.mnt_ns == mnt_ns)?;
        self.new_ns_walks.remove(i)
    }

    /// The table of a copy of nstrace's own mount namespace from the
    /// kernel's walk of it ([`crate::mounts::CopySource::table_of`]): paired with a
    /// walk of the own namespace made along with the own table's current
    /// reading (again after the namespace changed). `None` for a copy of
    /// another namespace, an incomplete walk, or mounts that do not pair.
    fn creation_table(
        &mut self,
        walk: &crate::decode::NewNsWalk,
        source_mnt: u32,
    ) -> Option<std::sync::Arc<[crate::mounts::Mount]>> {
        use std::os::fd::AsFd;
        if !walk.complete {
            return None;
        }
        let prober = self.prober.as_mut()?;
        let (own_ns, own) = self
            .own_table
            .as_mut()
            .filter(|(ns, _)| *ns == source_mnt)?;
        let table = own.current().ok()?;
        let generation = own.generation();
        if self
            .own_source
            .as_ref()
            .is_none_or(|(g, _)| *g != generation)
        {
            let w = prober
                .walk(own.ns.as_fd())
                .filter(|w| w.complete && w.mnt_ns == *own_ns)?;
            // The walk and the reading must be of the same tree.
            own.current().ok()?;
            if own.generation() != generation {
                return None;
            }
            let source = crate::mounts::CopySource::new(&w.mounts, &table);
            self.own_source = Some((generation, source));
        }
        let (_, source) = self.own_source.as_ref()?;
        source.as_ref()?.table_of(&walk.mounts).map(Into::into)
    }

    /// The mount table of mount namespace `mnt_ns`, through a live process
    /// in it (nstrace itself, or one the model knows).
    fn read_source(&mut self, mnt_ns: u32) -> Option<std::sync::Arc<[crate::mounts::Mount]>> {
        if let Some((_, own)) = self.own_table.as_mut().filter(|(ns, _)| *ns == mnt_ns) {
            match own.current() {
                Ok(mounts) => return Some(mounts),
                Err(e) => eprintln!("nstrace: cannot read its own mount table: {e}"),
            }
        }
        self.model
            .pids_in_mnt_ns(mnt_ns)
            .into_iter()
            .filter(|pid| crate::mounts::mnt_ns_of(*pid) == Some(mnt_ns))
            .find_map(crate::mounts::read_mountinfo)
            .map(Into::into)
    }

    /// Adds the kernel's own flags to the mounts of namespace `mnt_ns`:
    /// every mount, by id, from one walk of the namespace's tree. Where the
    /// walk is unavailable or stopped early (more mounts than it lists),
    /// the rest are asked one by one: the top mount at each mount point,
    /// resolved under the process's root, the first 256 of them.
    fn kernel_view(
        &mut self,
        live: &crate::mounts::LiveTable,
        mnt_ns: u32,
        mounts: &mut [crate::mounts::Mount],
    ) {
        use std::os::fd::AsFd;
        let Some(prober) = self.prober.as_mut() else {
            return;
        };
        let walked = prober.walk(live.ns.as_fd()).filter(|w| w.mnt_ns == mnt_ns);
        if let Some(mut w) = walked {
            crate::mounts::add_kernel_flags(mounts, &mut w.mounts);
            if w.complete {
                // A mount the walk did not find was unmounted since the
                // table was read.
                return;
            }
        }
        let Some(root) = live.root() else {
            return;
        };
        for m in mounts.iter_mut().filter(|m| m.kernel.is_none()).take(256) {
            let Some(fd) = crate::mounts::open_under(&root, &m.mountpoint) else {
                continue;
            };
            if let Some(p) = prober.probe(fd) {
                if p.mnt_id == m.id {
                    m.kernel = Some(crate::mounts::KernelMount { flags: p.flags });
                }
            }
        }
    }

    fn output_failed(&mut self, e: &io::Error) {
        self.broken = true;
        if e.kind() != io::ErrorKind::BrokenPipe && self.write_error.is_none() {
            eprintln!("nstrace: cannot write the trace: {e}");
            self.write_error = Some(io::Error::new(e.kind(), e.to_string()));
        }
    }

    /// Feeds every record in `ring`; says what there was.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Drained {
        let mut d = Drained::default();
        self.urgent = 0;
        while let Some(item) = ring.next() {
            d.bytes += item.len();
            self.feed(&item);
        }
        d.urgent = std::mem::take(&mut self.urgent);
        // One flush per batch, not per event: a reader (a pipe, `tail -f`)
        // still sees every event as soon as the batch that holds it is done.
        if !self.broken {
            if let Err(e) = self.sink.flush() {
                self.output_failed(&e);
            }
        }
        d
    }
}

/// Walks of new namespaces kept for their calls' events: a few batches'
/// worth (a walk whose call's record was lost is dropped in the end).
const MAX_PENDING_WALKS: usize = 64;

/// How long the polls in a row find nothing urgent before the reader
/// sleeps again.
const IDLE_BEFORE_SLEEP: Duration = Duration::from_millis(20);

/// How often a sleeping reader reads the records that woke nobody.
const TICK: Duration = Duration::from_millis(100);

struct Session {
    probes: Probes,
    launched: Option<Launched>,
    scope: Scope,
    pipeline: Pipeline,
    /// How often to poll once woken (`--poll-interval`).
    poll_every: Duration,
    /// The ring buffer's size.
    ring_bytes: usize,
}

/// How the event loop ended.
enum End {
    /// The target is gone (command exited and no tracked process is left, or
    /// the attached process tree ended).
    TargetGone,
    /// Stopped by a signal to nstrace.
    Interrupted(i32),
    /// The output went away.
    OutputBroken,
}

impl Session {
    async fn run(
        mut self,
        ring: RingBuf<MapData>,
        mut signals: mpsc::UnboundedReceiver<(i32, bool)>,
    ) -> Result<i32, TraceError> {
        // SAFETY: the ring buffer's fd stays open for as long as the AsyncFd owns it.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let pidfd: Option<AsyncFd<OwnedFd>> = match &self.launched {
            Some(l) => {
                let fd = l.pidfd().try_clone()?;
                // SAFETY: we own the cloned descriptor.
                Some(
                    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                        .map_err(io::Error::from)?,
                )
            }
            None => None,
        };
        let mut tick = tokio::time::interval(TICK);
        let mut forwarded: Option<i32> = None;
        let mut last_check = Instant::now();
        // An urgent record (a failure, a namespace change, an exec) wakes a
        // sleeping reader, which then polls every `poll_every` until urgent
        // records stop coming (or records stop coming fast enough to fill
        // the ring buffer by the next tick); meanwhile the programs do not
        // wake it. A burst costs the traced tasks one wakeup (a self-IPI),
        // not one per record.
        // The default (250 us) is well under the few milliseconds a
        // short-lived command lives after creating a namespace, whose table
        // is read while it lives.
        let polls_before_sleep =
            u32::try_from(IDLE_BEFORE_SLEEP.as_micros() / self.poll_every.as_micros().max(1))
                .unwrap_or(u32::MAX)
                .max(1);
        let timer = crate::timer::TimerFd::new()?;
        // SAFETY: the AsyncFd owns the timer, and so its descriptor.
        let poll = unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let mut reader = Reader::Asleep;
        let mut last_read = Instant::now();

        let end = loop {
            let command_running = self.launched.as_ref().is_some_and(|l| l.status().is_none());
            tokio::select! {
                guard = ring.readable_mut() => {
                    // Woken by an urgent record: poll.
                    let mut guard = guard?;
                    self.pipeline.drain(guard.get_inner_mut());
                    last_read = Instant::now();
                    guard.clear_ready();
                    if !matches!(reader, Reader::Polling { .. }) {
                        self.probes.set_reader_polling(true)?;
                        poll.get_ref().set(Some(self.poll_every))?;
                    }
                    reader = Reader::Polling { idle: 0 };
                }
                guard = poll.readable(), if reader != Reader::Asleep => {
                    let mut guard = guard?;
                    guard.get_inner().take()?;
                    guard.clear_ready();
                    let (found, fill) = self.read_at_rate(ring.get_mut(), &mut last_read);
                    let next = match reader {
                        _ if found.urgent > 0 => Reader::Polling { idle: 0 },
                        Reader::Polling { idle } if idle + 1 < polls_before_sleep => {
                            Reader::Polling { idle: idle + 1 }
                        }
                        _ => fill.map_or(Reader::Asleep, |every| Reader::Filling { every }),
                    };
                    if next != reader {
                        self.switch_reader(reader, next, &poll, ring.get_mut())?;
                        reader = next;
                    }
                }
                Some((sig, from_terminal)) = signals.recv() => {
                    match (&self.launched, forwarded) {
                        (Some(l), None) if l.status().is_none() => {
                            // A terminal's signal reached the command too (same
                            // process group); anything else is passed on.
                            if !from_terminal {
                                l.signal(sig)?;
                            }
                            forwarded = Some(sig);
                        }
                        _ => break End::Interrupted(sig),
                    }
                }
                ready = exited(pidfd.as_ref()), if command_running => {
                    ready?;
                    if let Some(l) = self.launched.as_mut() {
                        l.try_reap()?;
                    }
                    last_check = Instant::now() - Duration::from_secs(1);
                }
                _ = tick.tick() => {
                    // Records submitted without a wakeup (capability checks,
                    // forks) whose follower has not come yet; polling, if
                    // they come fast enough to fill the ring buffer.
                    let (_, fill) = self.read_at_rate(ring.get_mut(), &mut last_read);
                    if let (Reader::Asleep, Some(every)) = (reader, fill) {
                        let next = Reader::Filling { every };
                        self.switch_reader(reader, next, &poll, ring.get_mut())?;
                        reader = next;
                    }
                }
            }
            if self.pipeline.broken {
                break End::OutputBroken;
            }
            if last_check.elapsed() >= Duration::from_millis(50) {
                last_check = Instant::now();
                if self.target_gone()? {
                    break End::TargetGone;
                }
            }
        };
        // Everything the kernel emitted before this point is in the buffer.
        self.pipeline.drain(ring.get_mut());
        self.finish(end)
    }

    /// Feeds every record in `ring` (read last at `last_read`, now), and
    /// says what there was and how often records at this rate must be read
    /// ([`fill_interval`]).
    fn read_at_rate(
        &mut self,
        ring: &mut RingBuf<MapData>,
        last_read: &mut Instant,
    ) -> (Drained, Option<Duration>) {
        let found = self.pipeline.drain(ring);
        let fill = fill_interval(
            found.bytes,
            last_read.elapsed(),
            self.ring_bytes,
            self.poll_every,
        );
        *last_read = Instant::now();
        (found, fill)
    }

    /// Moves the reader from `from` to `to`: the poll timer's period, and
    /// whether the programs wake it for urgent records (only while it does
    /// not poll every `--poll-interval`).
    fn switch_reader(
        &mut self,
        from: Reader,
        to: Reader,
        poll: &AsyncFd<crate::timer::TimerFd>,
        ring: &mut RingBuf<MapData>,
    ) -> Result<(), TraceError> {
        let period = |r: Reader| match r {
            Reader::Asleep => None,
            Reader::Polling { .. } => Some(self.poll_every),
            Reader::Filling { every } => Some(every),
        };
        // Another idle poll in a row keeps the timer (and its phase).
        if period(from) != period(to) {
            poll.get_ref().set(period(to))?;
        }
        let was_polling = matches!(from, Reader::Polling { .. });
        let polls = matches!(to, Reader::Polling { .. });
        if was_polling != polls {
            self.probes.set_reader_polling(polls)?;
        }
        if was_polling && !polls {
            // A record submitted before the programs saw the change woke
            // nobody: read it now. (One whose program read "polling" just
            // before the change but submitted after this read waits for
            // the next read.)
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.pipeline.drain(ring);
        }
        Ok(())
    }

    fn target_gone(&mut self) -> Result<bool, TraceError> {
        let command_done = self.launched.as_ref().map(|l| l.status().is_some());
        Ok(match &self.scope {
            Scope::Launch(_) => command_done == Some(true) && self.probes.tracked_count()? == 0,
            Scope::Attach(_) => self.probes.tracked_count()? == 0,
            Scope::All(Some(_)) => command_done == Some(true),
            Scope::All(None) => false,
        })
    }

    fn finish(mut self, end: End) -> Result<i32, TraceError> {
        let unreported = self.probes.unreported_losses()?;
        if unreported > 0 {
            let ev = self
                .pipeline
                .decoder
                .trailing_loss(unreported, monotonic_ns());
            self.pipeline.emit(ev);
        }
        let write_error = self.pipeline.write_error.is_some();
        let exit_code = match (&end, self.launched.as_mut()) {
            // A full disk or a failing file: the trace is lost, not the
            // command's work; it runs to its end, and nstrace says it failed.
            (End::OutputBroken, Some(l)) if write_error => {
                eprintln!("nstrace: the command goes on untraced");
                self.probes.detach_syscalls();
                l.wait()?.shell_code()
            }
            (End::OutputBroken, Some(l)) => {
                terminate(l)?;
                EXIT_BROKEN_PIPE
            }
            (End::OutputBroken, None) => EXIT_BROKEN_PIPE,
            (End::Interrupted(sig), Some(l)) if l.status().is_none() => {
                eprintln!(
                    "nstrace: detached; the command (pid {}) keeps running",
                    l.pid()
                );
                128 + sig
            }
            (End::Interrupted(_), None) => 0,
            (_, Some(l)) => l.wait()?.shell_code(),
            (End::TargetGone, None) => 0,
        };
        if !self.pipeline.broken {
            let summary = Summary {
                seq: self.pipeline.decoder.last_seq() + 1,
                counts: self.pipeline.model.counts.clone(),
                ts_ns: monotonic_ns(),
                exit_code: self
                    .launched
                    .as_ref()
                    .and_then(|l| l.status())
                    .map(|s| s.shell_code()),
            };
            if let Err(e) = self.pipeline.sink.summary(&summary) {
                self.pipeline.output_failed(&e);
            }
        }
        self.probes.detach();
        if self.pipeline.write_error.is_some() {
            // The trace is incomplete: nstrace failed, whatever the command did.
            if let Some(code) = self.launched.as_ref().and_then(|l| l.status()) {
                eprintln!(
                    "nstrace: the trace is incomplete; the command exited with {}",
                    code.shell_code()
                );
            }
            return Ok(EXIT_NSTRACE_FAILED);
        }
        Ok(exit_code)
    }
}

/// Resolves when the command's pidfd becomes readable (it exited); never
/// without a command.
async fn exited(pidfd: Option<&AsyncFd<OwnedFd>>) -> io::Result<()> {
    match pidfd {
        Some(fd) => fd.readable().await.map(|mut guard| guard.retain_ready()),
        None => std::future::pending().await,
    }
}

/// Ends the command after the output went away: SIGTERM, then SIGKILL after
/// two seconds, and reaps it so it is not left orphaned.
fn terminate(l: &mut Launched) -> io::Result<()> {
    l.signal(libc::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if l.try_reap()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    l.signal(libc::SIGKILL)?;
    l.wait().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::{fill_interval, is_urgent, TICK};
    use crate::event::{Event, EventKind, Syscall};
    use nstrace_common::NsIds;
    use std::time::Duration;

    #[test]
    fn records_that_wake_nobody_are_read_before_a_quarter_of_the_ring_fills() {
        let ring = 4 << 20;
        let floor = Duration::from_micros(250);
        let ms = Duration::from_millis;
        // A few forks and exits of other processes: the tick is enough.
        assert_eq!(fill_interval(600, ms(100), ring, floor), None);
        assert_eq!(fill_interval(0, ms(1), ring, floor), None);
        // The namespace benchmark: 9 KB every 260 us, 35 MB/s: read every
        // 30 ms, not every 250 us.
        let every = fill_interval(9_000, Duration::from_micros(260), ring, floor).unwrap();
        assert!(every > ms(25) && every < ms(35), "{every:?}");
        // Just enough to fill a quarter by the tick: read at the tick's pace.
        assert_eq!(fill_interval(ring / 4, TICK, ring, floor), Some(TICK));
        // A storm: never more often than --poll-interval.
        assert_eq!(fill_interval(ring, ms(1), ring, floor), Some(floor));
        // A read right after another (no time passed) counts as a
        // microsecond: no division by zero.
        let every = fill_interval(1000, Duration::ZERO, ring, floor).unwrap();
        assert!(every >= floor && every <= TICK, "{every:?}");
    }

    #[test]
    fn urgent_records_are_those_the_programs_wake_the_reader_for() {
        let ev = |kind: EventKind| Event {
            seq: 1,
            ts_ns: 0,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            kind,
        };
        let ns = NsIds { inum: [7; 10] };
        let mut other = ns;
        other.inum[1] = 9;
        let call = |name: &'static str, ret: i64, ns_before: Option<NsIds>| {
            ev(EventKind::Syscall(Syscall {
                name: name.into(),
                nr: 0,
                args: Vec::new(),
                ret,
                ns,
                ns_before,
                duration_ns: 0,
                no_entry: false,
                cap_repeats: 0,
                ret_kind: crate::syscalls::RetKind::Status,
                state: Default::default(),
                fd_ns: None,
                targets: Vec::new(),
            }))
        };
        let unlisted = |_: &crate::event::Syscall| false;
        assert!(!is_urgent(&call("mount", 0, None), unlisted));
        assert!(is_urgent(&call("mount", -1, None), unlisted));
        assert!(!is_urgent(&call("unshare", 0, Some(ns)), unlisted));
        assert!(is_urgent(&call("unshare", 0, Some(other)), unlisted));
        // A copy of nstrace's namespace the kernel listed: no wakeup.
        assert!(!is_urgent(&call("unshare", 0, Some(other)), |_| true));
        assert!(is_urgent(&call("unshare", -1, Some(other)), |_| true));
        assert!(is_urgent(
            &ev(EventKind::Exec {
                ppid: 0,
                filename: "/bin/true".into(),
                argv: Vec::new(),
                argv_truncated: false,
                ns,
                adopted: false,
            }),
            unlisted
        ));
        assert!(!is_urgent(&ev(EventKind::Fork { ppid: 0, ns }), unlisted));
    }
}
