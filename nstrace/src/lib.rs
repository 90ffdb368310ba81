//! nstrace: traces the namespace and mount syscalls of a command and
//! everything it starts, with eBPF.
//!
//! Data flows one way: kernel record ([`probes`]) -> decoded event
//! ([`decode`], [`event`]) -> model ([`model`]) -> explanation ([`explain`])
//! -> output ([`output`]).
//! [`trace`] runs a session; [`scope`] decides and launches what is traced.

pub mod cli;
pub mod commands;
pub mod containers;
pub mod decode;
pub mod doctor;
pub mod errnos;
pub mod event;
pub mod explain;
pub mod flags;
pub mod idhash;
pub mod kernel_btf;
pub mod model;
pub mod mounts;
pub mod output;
pub mod probes;
pub mod procfs;
pub mod redact;
pub mod replay;
pub mod scope;
pub mod syscall_events;
pub mod syscalls;
pub mod timer;
pub mod trace;
pub mod tree;
