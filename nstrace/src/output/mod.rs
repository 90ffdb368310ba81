//! Output: the human timeline ([`text`]) and NDJSON ([`ndjson`], written
//! with [`json`]).

pub mod json;
pub mod ndjson;
pub mod text;

use std::io;

use crate::model::{Annotated, Counts};

/// The end-of-trace summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sequence number of the summary line (one past the last event).
    pub seq: u64,
    /// Totals from the model.
    pub counts: Counts,
    /// CLOCK_MONOTONIC time the summary was made.
    pub ts_ns: u64,
    /// How the launched command ended (shell-style code), if there was one.
    pub exit_code: Option<i32>,
}

/// What the first line of a trace says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInfo {
    /// Sequence number (1).
    pub seq: u64,
    /// CLOCK_MONOTONIC time tracing started.
    pub ts_ns: u64,
    /// Which decision hooks are attached (what `explain` may rely on).
    pub hooks: crate::explain::Hooks,
    /// The running kernel's release.
    pub kernel: String,
}

/// Where events go.
pub trait Sink {
    /// Writes the start of the trace (NDJSON only; the timeline has no header).
    fn start(&mut self, _info: &StartInfo) -> io::Result<()> {
        Ok(())
    }
    /// Writes one event. An error (such as a closed pipe) ends the trace.
    fn event(&mut self, ev: &Annotated) -> io::Result<()>;
    /// Pushes what is buffered to the output (at the end of each batch of
    /// kernel records, so that a reader sees events without delay).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Writes the summary and flushes.
    fn summary(&mut self, summary: &Summary) -> io::Result<()>;
}
