//! The subcommands that read a recorded trace (`explain`, `tree`). They
//! rebuild the model from the file alone, so a file gives the same output on
//! any machine. Input is untrusted: a bad line is reported with its number
//! and skipped; the rest is still used.

use std::io::{self, BufRead, Write};

use crate::cli::Format;
use crate::event::EventKind;
use crate::explain::{Explainer, Hooks};
use crate::model::Model;
use crate::output::json::{key, Obj};
use crate::output::ndjson::{write_explanation, FORMAT_VERSION};
use crate::output::text::TextSink;
use crate::output::Sink;
use crate::replay::{parse_line, Line};

/// What a replay went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Lines read.
    pub lines: u64,
    /// Lines that could not be used.
    pub bad: u64,
    /// Failed calls explained.
    pub failures: u64,
    /// Of those, how many as `unknown`.
    pub unknown: u64,
}

impl ReplayStats {
    /// Exit status: 0 if every line was usable, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.bad > 0)
    }
}

/// Reads lines as bytes (a trace may hold anything) and hands each, with its
/// number, to `f`; a line that is not UTF-8 is reported as bad.
fn for_each_line(
    mut input: impl BufRead,
    name: &str,
    err: &mut dyn Write,
    stats: &mut ReplayStats,
    mut f: impl FnMut(u64, Line) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        stats.lines += 1;
        let n = stats.lines;
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim_end_matches(['\n', '\r']),
            Err(_) => {
                stats.bad += 1;
                writeln!(err, "nstrace: {name}:{n}: not UTF-8")?;
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(line) => f(n, line)?,
            Err(e) => {
                stats.bad += 1;
                writeln!(err, "nstrace: {name}:{n}: {e}")?;
            }
        }
    }
}

/// Where `explain` writes.
enum ExplainOut<'a> {
    Text(TextSink<&'a mut dyn Write>),
    Json(&'a mut dyn Write),
}

/// `nstrace explain`: every failed call of the trace with its explanation.
pub fn explain(
    input: impl BufRead,
    name: &str,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let mut model = Model::new();
    let mut explainer = Explainer::new(Hooks::default());
    let mut w = match format {
        Format::Text => ExplainOut::Text(TextSink::new(out, false)),
        Format::Ndjson => ExplainOut::Json(out),
    };
    let mut failures = (0u64, 0u64);
    let mut buf = Vec::new();
    for_each_line(input, name, err, &mut stats, |_, line| {
        let ev = match line {
            Line::Start { hooks } => {
                explainer = Explainer::new(hooks);
                return Ok(());
            }
            Line::Summary => return Ok(()),
            Line::Event(ev) => ev,
        };
        let mut ann = model.apply(*ev);
        ann.explanation = explainer.observe(&ann, &model);
        if let Some(e) = &ann.explanation {
            failures.0 += 1;
            failures.1 += u64::from(e.cause == crate::explain::Cause::Unknown);
        }
        match &mut w {
            // The timeline shows a failed call's decisions under it.
            ExplainOut::Text(sink) => match &ann.event.kind {
                EventKind::Cap(_) | EventKind::Klog { .. } => sink.event(&ann),
                EventKind::Syscall(_) if ann.explanation.is_some() => sink.event(&ann),
                _ => Ok(()),
            },
            ExplainOut::Json(out) => match (&ann.event.kind, &ann.explanation) {
                (EventKind::Syscall(sc), Some(e)) => {
                    let ev = &ann.event;
                    buf.clear();
                    let mut m = Obj::new(&mut buf);
                    m.field(key!("v"), &FORMAT_VERSION)?;
                    m.field(key!("seq"), &ev.seq)?;
                    m.field(key!("type"), "explanation")?;
                    m.field(key!("ts_ns"), &ev.ts_ns)?;
                    m.field(key!("pid"), &ev.pid)?;
                    m.field(key!("tid"), &ev.tid)?;
                    m.field(key!("comm"), &ev.comm)?;
                    m.field(key!("syscall"), &sc.name)?;
                    m.field(
                        key!("errno"),
                        &sc.errno().and_then(crate::errnos::errno_name),
                    )?;
                    write_explanation(m.key(key!("explanation")), e)?;
                    m.end();
                    buf.push(b'\n');
                    out.write_all(&buf)
                }
                _ => Ok(()),
            },
        }
    })?;
    (stats.failures, stats.unknown) = failures;
    match w {
        ExplainOut::Text(sink) => {
            let out = sink.into_inner();
            writeln!(
                out,
                "--- nstrace explain: {} failed call(s) explained ({} unknown); {} line(s) read, {} bad ---",
                stats.failures, stats.unknown, stats.lines, stats.bad
            )?;
            out.flush()?;
        }
        ExplainOut::Json(out) => out.flush()?,
    }
    Ok(stats)
}

/// `nstrace tree`: the namespace hierarchy of the trace.
pub fn tree(
    input: impl BufRead,
    name: &str,
    format: crate::cli::TreeFormat,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let mut tree = crate::tree::Tree::default();
    // The model tells a namespace made under a reused id from the one that
    // had the id before.
    let mut model = crate::model::Model::new();
    for_each_line(input, name, err, &mut stats, |_, line| {
        if let Line::Event(ev) = line {
            let ann = model.apply(*ev);
            tree.add(&ann.event, &ann.ns_changes);
        }
        Ok(())
    })?;
    tree.finish();
    let text = match format {
        crate::cli::TreeFormat::Text => tree.to_text(),
        crate::cli::TreeFormat::Dot => tree.to_dot(),
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_and_the_rest_is_used() {
        let input = "{\"v\":1,\"seq\":1,\"type\":\"start\",\"ts_ns\":0,\"pid\":0,\"tid\":0,\"comm\":\"\",\"hooks\":{\"cap\":true,\"klog\":true}}\n\
                     not json\n\
                     \n\
                     {\"v\":1,\"type\":\"exit\"}\n\
                     {\"v\":1,\"seq\":3,\"type\":\"cap\",\"ts_ns\":5,\"pid\":9,\"tid\":9,\"comm\":\"mount\",\"cap\":\"CAP_SYS_ADMIN\",\"allowed\":false,\"user_ns\":{\"inum\":1,\"level\":0,\"owner\":0,\"parent\":0},\"cred_user_ns\":{\"inum\":2,\"level\":1,\"owner\":0,\"parent\":1},\"euid\":0}\n\
                     {\"v\":1,\"seq\":4,\"type\":\"syscall\",\"ts_ns\":4,\"pid\":9,\"tid\":9,\"comm\":\"mount\",\"syscall\":\"mount\",\"args\":{\"source\":\"none\",\"target\":\"/mnt\",\"fstype\":\"ext4\",\"flags\":[],\"data\":null},\"ret\":-1,\"errno\":\"EPERM\",\"ns\":{\"user\":2,\"mnt\":7,\"pid\":3,\"net\":3,\"uts\":3,\"ipc\":3,\"cgroup\":3,\"time\":3},\"duration_ns\":1,\"state\":{\"user_ns\":{\"inum\":2,\"level\":1,\"owner\":0,\"parent\":1},\"euid\":0,\"threads\":1,\"seccomp_mode\":0,\"pidns_level\":0,\"owners\":{\"mnt\":2,\"pid\":1,\"net\":1}}}\n\
                     {\"v\":1,\"seq\":5,\"type\":\"sysc";
        let mut out = Vec::new();
        let mut err = Vec::new();
        let stats = explain(
            input.as_bytes(),
            "t.ndjson",
            Format::Ndjson,
            &mut out,
            &mut err,
        )
        .unwrap();
        let err = String::from_utf8(err).unwrap();
        assert_eq!(stats.bad, 3, "{err}");
        assert!(err.contains("t.ndjson:2: not JSON"), "{err}");
        assert!(err.contains("t.ndjson:4: field \"ppid\""), "{err}");
        assert!(err.contains("t.ndjson:7: not JSON"), "{err}");
        assert_eq!(stats.exit_code(), 1);
        let out = String::from_utf8(out).unwrap();
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["type"], "explanation");
        assert_eq!(line["seq"], 4);
        assert_eq!(line["explanation"]["cause"], "fs_type_not_userns_mountable");
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 6] = [
            b"\xff\xfe\n",
            b"{}\n",
            b"{\"v\":1}\n",
            b"{\"v\":1,\"type\":\"syscall\",\"seq\":1,\"ts_ns\":1,\"pid\":1,\"tid\":1,\"comm\":\"x\",\"syscall\":\"mount\",\"args\":{\"flags\":{\"x\":[1,{}]}},\"ret\":-1,\"errno\":\"EBOGUS\"}\n",
            b"{\"v\":1,\"type\":\"mounts\",\"seq\":1,\"ts_ns\":1,\"pid\":1,\"tid\":1,\"comm\":\"x\",\"mnt_ns\":1,\"user_ns\":1,\"locked\":true,\"created_by\":1,\"mounts\":[{}]}\n",
            b"[1,2,3]\nnull\n\"s\"\n",
        ];
        for input in inputs {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let stats = explain(input, "x", Format::Text, &mut out, &mut err).unwrap();
            assert!(stats.bad > 0, "{:?}", String::from_utf8_lossy(input));
            let (mut out, mut err) = (Vec::new(), Vec::new());
            tree(input, "x", crate::cli::TreeFormat::Dot, &mut out, &mut err).unwrap();
        }
    }
}
