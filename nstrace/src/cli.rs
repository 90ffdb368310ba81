//! Command-line interface.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human timeline.
    Text,
    /// One JSON object per line (see docs/ndjson.schema.json).
    Ndjson,
}

/// When to colour the text timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Only when writing to a terminal and NO_COLOR is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Traces namespace and mount syscalls of a command and everything it starts.
#[derive(Debug, Parser)]
#[command(
    name = "nstrace",
    version,
    args_conflicts_with_subcommands = true,
    about = "Trace namespace and mount syscalls (unshare, setns, clone, mount, pivot_root, fsmount, ...) \
             of a command and its descendants, with eBPF.",
    after_help = "Examples:\n  sudo nstrace -- unshare -Ur mount -t proc proc /proc\n  \
                  sudo nstrace --format ndjson -o trace.ndjson -- docker run --rm busybox true\n  \
                  sudo nstrace -p 1234\n\n\
                  Exit status: the command's (128+N if it died of signal N); 125 if nstrace itself \
                  failed, 126 if the command could not be executed, 127 if it was not found."
)]
pub struct Cli {
    /// Work on a recorded trace instead of tracing.
    #[command(subcommand)]
    pub command_mode: Option<Command>,

    /// Tracing options.
    #[command(flatten)]
    pub trace: TraceArgs,
}

/// Subcommands that read a recorded trace.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Explain every failed call of a recorded NDJSON trace (FILE, or - for
    /// standard input), re-derived from the recorded events alone.
    Explain {
        /// Output: the failures in plain words, or NDJSON explanation records.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// The trace (`nstrace --format ndjson -o FILE ...`), or - for stdin.
        file: PathBuf,
    },
    /// What this kernel lets nstrace see: which hooks load for each
    /// decision point (every alternative is tried), which are refused and
    /// why, and which explanations are therefore direct, inferred or
    /// unavailable. Needs root.
    Doctor {
        /// Output: text, or one JSON object.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Kernel type information, instead of /sys/kernel/btf/vmlinux.
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
    },
    /// The namespace hierarchy of a recorded trace: user namespaces, the
    /// namespaces each owns, and the processes in them.
    Tree {
        /// Output: an indented tree, or Graphviz dot.
        #[arg(long, value_enum, default_value_t = TreeFormat::Text)]
        format: TreeFormat,
        /// The trace, or - for stdin.
        file: PathBuf,
    },
}

/// Output of `nstrace tree`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TreeFormat {
    /// Indented text.
    Text,
    /// Graphviz dot.
    Dot,
}

/// `--scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// The command's (or -p PID's) descendants only.
    Tree,
    /// Descendants, and the containers started for traced engine clients.
    Containers,
    /// Every process on the system.
    All,
}

/// `--syscall-hook`: the names the start line's `hooks.syscalls_via` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyscallHook {
    /// `syscalls:sys_enter_NAME`/`sys_exit_NAME` of each traced syscall.
    #[value(name = "syscall_events")]
    SyscallEvents,
    /// `raw_syscalls:sys_enter`/`sys_exit`.
    #[value(name = "raw_syscalls")]
    RawSyscalls,
    /// fentry/fexit on each traced syscall's function.
    #[value(name = "fentry")]
    Fentry,
}

impl SyscallHook {
    /// The name, as `hooks.syscalls_via` says it.
    pub fn name(self) -> &'static str {
        match self {
            Self::SyscallEvents => "syscall_events",
            Self::RawSyscalls => "raw_syscalls",
            Self::Fentry => "fentry",
        }
    }
}

/// What to trace and how to write it.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace this running process and the children it starts from now on.
    #[arg(short = 'p', long = "pid", value_name = "PID", conflicts_with = "all")]
    pub pid: Option<u32>,

    /// Trace every process on the system (with a command: until it exits);
    /// the same as --scope all.
    #[arg(long)]
    pub all: bool,

    /// Which processes: `containers` (the default) is the command's
    /// descendants plus the containers whose runtime a daemon starts while a
    /// traced engine client (docker, nerdctl, ctr, crictl, podman) runs;
    /// `tree` only the descendants; `all` every process.
    #[arg(long, value_enum, default_value_t = ScopeArg::Containers)]
    pub scope: ScopeArg,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the trace to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Colour in the text timeline.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// Size of the kernel ring buffer (bytes; K and M suffixes accepted; rounded up to a power of two).
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    pub buffer_size: u32,

    /// How often nstrace reads the ring buffer after a failed call, a new
    /// namespace or an exec woke it, until its polls find nothing for 20 ms
    /// (or one poll finds nothing, if longer) (`250us`, `2ms`; 50us to 100ms);
    /// also the shortest interval at which records that wake nobody but
    /// come fast are read (often enough to keep the ring buffer under a
    /// quarter full). Shorter catches a namespace whose
    /// processes live only briefly, so its mount table is read from it and
    /// not from the namespace it was copied from; longer costs the traced
    /// tasks less (each poll is a timer interrupt, which in a VM is a trip
    /// to the hypervisor). See Performance in the README.
    #[arg(long, value_name = "DURATION", default_value = "250us", value_parser = parse_interval)]
    pub poll_interval: std::time::Duration,

    /// How to observe syscalls: `syscall_events` (each traced syscall's
    /// trace events; the default, else `raw_syscalls`), `raw_syscalls`
    /// (a program on every syscall of the system), or `fentry` (BPF
    /// trampolines on each traced syscall's function, on kernels that
    /// allow them: other syscalls pay nothing, as any syscall trace event
    /// makes every syscall of the system take a slower path; but calls that
    /// seccomp refuses are not seen). See Performance in the README.
    #[arg(long, value_name = "HOOK", value_enum)]
    pub syscall_hook: Option<SyscallHook>,

    /// Run the command as USER (a name or uid), with its primary group and
    /// supplementary groups; nstrace itself keeps its privileges.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Show secret mount options (cifs password=, ecryptfs key=, ...) as
    /// they are; by default their values are replaced by <redacted>.
    #[arg(long)]
    pub no_redact: bool,

    /// Read kernel type information from FILE instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// The command to run and trace.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

impl TraceArgs {
    /// Whether every process is traced (--all or --scope all).
    pub fn all_processes(&self) -> bool {
        self.all || self.scope == ScopeArg::All
    }

    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.scope == ScopeArg::All && self.pid.is_some() {
            return Err("--scope all cannot be combined with -p PID".into());
        }
        if self.command.is_empty() && self.pid.is_none() && !self.all_processes() {
            return Err("nothing to trace: give a command after --, -p PID or --all".into());
        }
        if self.user.is_some() && self.command.is_empty() {
            return Err("-u USER needs a command to run".into());
        }
        if !self.command.is_empty() && self.pid.is_some() {
            return Err("-p PID cannot be combined with a command".into());
        }
        Ok(())
    }
}

/// Parses `4096`, `64K`, `4M` into a power-of-two byte count of at least one page.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1u64 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 65536, 256K, 16M)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))?
        .max(4096)
        .next_power_of_two();
    if bytes > 1 << 30 {
        return Err(format!("'{s}' is too large (at most 1G)"));
    }
    Ok(bytes as u32)
}

/// Parses `250us`, `2ms` into a poll interval between 50 us and 100 ms.
pub fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, micros_per) = if let Some(n) = s.strip_suffix("us") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1000)
    } else {
        return Err(format!(
            "'{s}' needs a unit: us or ms (examples: 250us, 2ms)"
        ));
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 250us, 2ms)"))?;
    let micros = n.saturating_mul(micros_per);
    if !(50..=100_000).contains(&micros) {
        return Err(format!("'{s}' is out of range (50us to 100ms)"));
    }
    Ok(std::time::Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        use std::time::Duration;
        assert_eq!(parse_interval("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_interval("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(parse_interval("100ms"), Ok(Duration::from_millis(100)));
        for bad in [
            "250",
            "2s",
            "ms",
            "-1ms",
            "49us",
            "101ms",
            "1.5ms",
            "99999999999999ms",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad} accepted");
        }
        let cli = Cli::try_parse_from(["nstrace", "true"]).unwrap();
        assert_eq!(cli.trace.poll_interval, Duration::from_micros(250));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("100"), Ok(4096));
        assert_eq!(parse_size("300K"), Ok(512 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2G").is_err());
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli = Cli::try_parse_from([
            "nstrace", "--format", "ndjson", "--", "unshare", "-Ur", "-p",
        ])
        .unwrap();
        assert_eq!(cli.trace.format, Format::Ndjson);
        assert_eq!(cli.trace.command, ["unshare", "-Ur", "-p"]);
        assert!(cli.trace.validate().is_ok());
        // A command named like a subcommand runs after --.
        let cli = Cli::try_parse_from(["nstrace", "--", "explain", "x"]).unwrap();
        assert!(cli.command_mode.is_none());
        assert_eq!(cli.trace.command, ["explain", "x"]);
        // Without --, a command that is not a subcommand still runs.
        let cli = Cli::try_parse_from(["nstrace", "true"]).unwrap();
        assert_eq!(cli.trace.command, ["true"]);
    }

    #[test]
    fn needs_something_to_trace() {
        let cli = Cli::try_parse_from(["nstrace"]).unwrap();
        assert!(cli.trace.validate().is_err());
        assert!(Cli::try_parse_from(["nstrace", "-p", "1", "--all"]).is_err());
        assert!(Cli::try_parse_from(["nstrace", "--format", "xml", "true"]).is_err());
    }

    #[test]
    fn subcommands() {
        let cli =
            Cli::try_parse_from(["nstrace", "explain", "--format", "ndjson", "t.ndjson"]).unwrap();
        assert!(matches!(
            cli.command_mode,
            Some(Command::Explain {
                format: Format::Ndjson,
                ..
            })
        ));
        let cli = Cli::try_parse_from(["nstrace", "tree", "--format", "dot", "-"]).unwrap();
        assert!(matches!(
            cli.command_mode,
            Some(Command::Tree {
                format: TreeFormat::Dot,
                ..
            })
        ));
    }

    #[test]
    fn syscall_hook_names_are_the_ones_probes_take() {
        use clap::ValueEnum;
        let names: Vec<&str> = SyscallHook::value_variants()
            .iter()
            .map(|h| h.name())
            .collect();
        assert_eq!(names, crate::probes::SYSCALL_HOOK_NAMES);
        for h in SyscallHook::value_variants() {
            let v = h.to_possible_value().unwrap();
            assert_eq!(v.get_name(), h.name());
        }
    }
}
