//! The `nstrace` command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use nstrace::cli::{Cli, Color};
use nstrace::scope::Scope;
use nstrace::trace::{self, TraceOptions, EXIT_NSTRACE_FAILED};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(msg) = cli.validate() {
        eprintln!("nstrace: {msg}");
        return ExitCode::from(2);
    }
    let scope = match (&cli.pid, cli.all) {
        (Some(pid), _) => Scope::Attach(*pid),
        (None, true) => Scope::All((!cli.command.is_empty()).then(|| cli.command.clone())),
        (None, false) => Scope::Launch(cli.command.clone()),
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
        btf: cli.btf,
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
