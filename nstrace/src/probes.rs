//! Loading the BPF programs and attaching them to the kernel's hooks.

use std::path::Path;

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use nstrace_common::{names, ArgSpec, Config, Offsets};
use thiserror::Error;

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
    /// The object lacks something it should have.
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}")]
    Tracefs(std::io::Error),
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
}

/// The loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    /// One line per optional hook that could not be attached.
    pub notes: Vec<String>,
}

impl Probes {
    /// Loads the programs and attaches them. Optional hooks that fail become
    /// [`Probes::notes`]; required ones are errors.
    pub fn start(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        let mut notes = Vec::new();
        if let Some(note) = ensure_tracefs()? {
            notes.push(note);
        }
        let config = Config {
            trace_all: u32::from(opts.trace_all),
            launcher_pid: opts.launcher_pid,
            offsets: opts.offsets,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
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
        let mut probes = Self { ebpf, notes };
        probes.attach()?;
        Ok(probes)
    }

    fn attach(&mut self) -> Result<(), ProbeError> {
        // Process life first, so that no fork of a tracked process is missed
        // once syscalls are traced.
        for (prog, tp) in [
            (names::PROG_FORK, "sched_process_fork"),
            (names::PROG_EXIT, "sched_process_exit"),
        ] {
            let p: &mut RawTracePoint = program(&mut self.ebpf, prog)?;
            p.load().map_err(|e| prog_err(format!("load {prog}"), e))?;
            p.attach(tp)
                .map_err(|e| prog_err(format!("attach raw tracepoint {tp}"), e))?;
        }
        let exec: &mut TracePoint = program(&mut self.ebpf, names::PROG_EXEC)?;
        exec.load()
            .map_err(|e| prog_err("load sched_process_exec".into(), e))?;
        exec.attach("sched", "sched_process_exec")
            .map_err(|e| prog_err("attach sched:sched_process_exec".into(), e))?;

        for (prog, dir) in [
            (names::PROG_SYS_ENTER, "sys_enter"),
            (names::PROG_SYS_EXIT, "sys_exit"),
        ] {
            let p: &mut TracePoint = program(&mut self.ebpf, prog)?;
            p.load().map_err(|e| prog_err(format!("load {prog}"), e))?;
            for def in SYSCALLS {
                let name = format!("{dir}_{}", def.tracepoint);
                if let Err(e) = p.attach("syscalls", &name) {
                    if def.optional {
                        self.notes.push(format!(
                            "{} is not traced: this kernel has no syscalls:{name} ({e})",
                            def.name
                        ));
                    } else {
                        return Err(prog_err(format!("attach syscalls:{name}"), e));
                    }
                }
            }
        }
        self.notes.sort();
        self.notes.dedup();
        Ok(())
    }

    /// Takes the ring buffer to read records from (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(ProbeError::Missing("EVENTS map"))?;
        RingBuf::try_from(map).map_err(|e| map_err(names::EVENTS, e))
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

    /// How many processes are tracked and alive (the kernel forgets a process when it exits).
    pub fn tracked_count(&mut self) -> Result<usize, ProbeError> {
        Ok(self.tracked()?.keys().filter(|k| k.is_ok()).count())
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

/// Mounts tracefs at /sys/kernel/tracing if no tracefs is reachable: the
/// syscall tracepoints are found through it. Returns a note when it mounted.
fn ensure_tracefs() -> Result<Option<String>, ProbeError> {
    let has_entries = |p: &str| {
        std::fs::read_dir(p)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    };
    if has_entries("/sys/kernel/tracing") || has_entries("/sys/kernel/debug/tracing") {
        return Ok(None);
    }
    let target = Path::new("/sys/kernel/tracing");
    let c = |s: &str| std::ffi::CString::new(s).map_err(|e| ProbeError::Tracefs(e.into()));
    let (src, tgt, fstype) = (c("tracefs")?, c("/sys/kernel/tracing")?, c("tracefs")?);
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs(std::io::Error::last_os_error()));
    }
    Ok(Some(format!(
        "mounted tracefs at {} (it was not mounted)",
        target.display()
    )))
}
