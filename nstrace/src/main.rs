//! The `nstrace` command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use nstrace::cli::{Cli, Color, Command, ScopeArg, SyscallHook};
use nstrace::scope::Scope;
use nstrace::trace::{self, TraceOptions, EXIT_NSTRACE_FAILED};

/// Opens FILE, or standard input for `-`.
fn open_input(path: &std::path::Path) -> std::io::Result<Box<dyn std::io::BufRead>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(std::io::stdin().lock()))
    } else {
        Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
            path,
        )?)))
    }
}

/// Runs `explain` or `tree` and returns the exit status (2 if the input
/// cannot be read at all).
fn replay(command: Command) -> i32 {
    let file = match &command {
        Command::Explain { file, .. } | Command::Tree { file, .. } => file.clone(),
        Command::Doctor { format, btf } => {
            let json = *format == nstrace::cli::Format::Ndjson;
            return match trace::doctor(btf.clone(), json) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("nstrace: {e}");
                    e.exit_code()
                }
            };
        }
    };
    let name = file.display().to_string();
    let input = match open_input(&file) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("nstrace: cannot read {name}: {e}");
            return 2;
        }
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let result = match command {
        Command::Explain { format, .. } => {
            nstrace::commands::explain(input, &name, format, &mut out, &mut err)
        }
        Command::Tree { format, .. } => {
            nstrace::commands::tree(input, &name, format, &mut out, &mut err)
        }
        Command::Doctor { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(stats) => stats.exit_code(),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("nstrace: {e}");
            2
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(command) = cli.command_mode.take() {
        return ExitCode::from(u8::try_from(replay(command)).unwrap_or(2));
    }
    let cli = cli.trace;
    if let Err(msg) = cli.validate() {
        eprintln!("nstrace: {msg}");
        return ExitCode::from(2);
    }
    let scope = match (&cli.pid, cli.all_processes()) {
        (Some(pid), _) => Scope::Attach(*pid),
        (None, true) => Scope::All((!cli.command.is_empty()).then(|| cli.command.clone())),
        (None, false) => Scope::Launch(cli.command.clone()),
    };
    let run_as = match cli.user.as_deref().map(nstrace::scope::RunAs::lookup) {
        None => None,
        Some(Ok(who)) => Some(who),
        Some(Err(e)) => {
            eprintln!("nstrace: -u: {e}");
            return ExitCode::from(2);
        }
    };
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            cli.output.is_none()
                && std::env::var_os("NO_COLOR").is_none()
                && std::io::stdout().is_terminal()
        }
    };
    let opts = TraceOptions {
        scope,
        format: cli.format,
        output: cli.output,
        color,
        ring_bytes: cli.buffer_size,
        poll_every: cli.poll_interval,
        btf: cli.btf,
        follow_runtimes: cli.scope == ScopeArg::Containers,
        redact: !cli.no_redact,
        run_as,
        syscall_hook: cli.syscall_hook.map(SyscallHook::name),
    };
    let code = match trace::run(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nstrace: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_NSTRACE_FAILED as u8))
}
