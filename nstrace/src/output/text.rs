//! The human timeline: one line per event, strace-like calls, failures
//! highlighted (colour only when writing to a terminal). Everything that came
//! from a traced process is escaped, so it can never drive the terminal.

use std::collections::HashMap;
use std::io::{self, Write};

use super::{Sink, Summary};
use crate::errnos::{capability_name, errno_message, errno_name, signal_name};
use crate::event::{ArgValue, CapCheck, EventKind, ExitStatus, Syscall};
use crate::explain::Evidence;
use crate::model::Annotated;
use crate::syscalls::RetKind;

/// ANSI styles used when colour is on.
struct Style {
    fail: &'static str,
    ns: &'static str,
    warn: &'static str,
    dim: &'static str,
    reset: &'static str,
}

const COLOR: Style = Style {
    fail: "\x1b[1;31m",
    ns: "\x1b[36m",
    warn: "\x1b[1;33m",
    dim: "\x1b[2m",
    reset: "\x1b[0m",
};
const PLAIN: Style = Style {
    fail: "",
    ns: "",
    warn: "",
    dim: "",
    reset: "",
};

/// Writes the timeline.
pub struct TextSink<W: Write> {
    out: W,
    style: &'static Style,
    start_ns: Option<u64>,
    /// The kernel's decisions during each thread's call in flight, shown
    /// under the call if it fails (a successful call's checks are noise,
    /// such as fork's memory-accounting check).
    decisions: HashMap<u32, Vec<(u64, String)>>,
}

impl<W: Write> TextSink<W> {
    /// A sink writing to `out`, with colour if `color`.
    pub fn new(out: W, color: bool) -> Self {
        Self {
            out,
            style: if color { &COLOR } else { &PLAIN },
            start_ns: None,
            decisions: HashMap::new(),
        }
    }
}

impl<W: Write> TextSink<W> {
    /// Keeps a decision line until the call of `ev.tid` returns.
    fn hold(&mut self, ev: &crate::event::Event, line: String) -> io::Result<()> {
        self.decisions
            .entry(ev.tid)
            .or_default()
            .push((ev.ts_ns, line));
        Ok(())
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, ann: &Annotated) -> io::Result<()> {
        let ev = &ann.event;
        let start = *self.start_ns.get_or_insert(ev.ts_ns);
        let rel = ev.ts_ns.saturating_sub(start) as f64 / 1e9;
        let st = self.style;
        let body = match &ev.kind {
            EventKind::Syscall(sc) => syscall_line(sc, st),
            EventKind::Fork { ppid, .. } => format!("{}fork{} from {ppid}", st.dim, st.reset),
            EventKind::Exec {
                filename,
                argv,
                argv_truncated,
                adopted,
                ..
            } => {
                let mut args: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                if *argv_truncated {
                    args.push("...".into());
                }
                format!(
                    "{}exec{} {} [{}]{}",
                    st.dim,
                    st.reset,
                    quote(filename),
                    args.join(", "),
                    if *adopted {
                        " (container runtime started for the traced client: followed)"
                    } else {
                        ""
                    }
                )
            }
            EventKind::Exit { status, .. } => match *status {
                ExitStatus::Exited(0) => format!("{}exit 0{}", st.dim, st.reset),
                ExitStatus::Exited(c) => format!("{}exit {c}{}", st.fail, st.reset),
                ExitStatus::Signaled {
                    signal,
                    core_dumped,
                } => format!(
                    "{}killed by {}{}{}",
                    st.fail,
                    signal_name(signal),
                    if core_dumped { " (core dumped)" } else { "" },
                    st.reset
                ),
            },
            EventKind::Cap(CapCheck {
                cap,
                allowed,
                target,
                ..
            }) => {
                let (style, verdict) = if *allowed {
                    (st.dim, "granted")
                } else {
                    (st.fail, "denied")
                };
                let line = format!(
                    "{style}#{} capability {} in user ns {} (level {}, owner uid {}): {verdict}{}",
                    ev.seq,
                    capability_name(*cap),
                    target.inum,
                    target.level,
                    target.owner,
                    st.reset
                );
                return self.hold(ev, line);
            }
            EventKind::Klog { text } => {
                let line = format!(
                    "{}#{} kernel: {}{}",
                    st.warn,
                    ev.seq,
                    sanitize(text),
                    st.reset
                );
                return self.hold(ev, line);
            }
            EventKind::Mounts {
                mnt_ns,
                user_ns,
                locked,
                mounts,
                read_from: crate::mounts::ReadFrom::Source,
                ..
            } => format!(
                "{}mount namespace {mnt_ns}: {} mounts copied into user namespace {user_ns}{} (read from the namespace it was copied from: its processes were gone){}",
                if *locked { st.ns } else { st.dim },
                mounts.len(),
                if *locked { "; all but its root are now locked" } else { "" },
                st.reset
            ),
            EventKind::Mounts {
                mnt_ns,
                user_ns,
                locked,
                mounts,
                ..
            } => {
                let checked: Vec<bool> = mounts
                    .iter()
                    .filter_map(|m| m.kernel.map(|k| k.locked()))
                    .collect();
                if !checked.is_empty() {
                    format!(
                        "{}mount namespace {mnt_ns}: {} mounts copied into user namespace {user_ns}; {} of {} checked are locked (the kernel's mnt_flags){}",
                        if *locked { st.ns } else { st.dim },
                        mounts.len(),
                        checked.iter().filter(|l| **l).count(),
                        checked.len(),
                        st.reset
                    )
                } else if *locked {
                    format!(
                        "{}mount namespace {mnt_ns}: {} mounts copied into user namespace {user_ns}; all but its root are now locked{}",
                        st.ns,
                        mounts.len(),
                        st.reset
                    )
                } else {
                    format!(
                        "{}mount namespace {mnt_ns}: {} mounts copied{}",
                        st.dim,
                        mounts.len(),
                        st.reset
                    )
                }
            }
            EventKind::Container(c) => format!(
                "{}container {} ({}{}){}{}",
                st.dim,
                sanitize(&c.id),
                sanitize(&c.runtime),
                c.engine
                    .as_deref()
                    .map(|e| format!(", {}", sanitize(e)))
                    .unwrap_or_default(),
                c.init_pid
                    .map(|p| format!(": init pid {p}"))
                    .unwrap_or_default(),
                st.reset
            ),
            EventKind::Lost { count } => {
                writeln!(
                    self.out,
                    "{rel:>11.6} {}!!! {count} event(s) lost: the ring buffer was full (try a larger --buffer-size){}",
                    st.warn, st.reset
                )?;
                return Ok(());
            }
        };
        // Events of a container carry its short id.
        let tag = match &ann.container {
            Some(c) if !matches!(ev.kind, EventKind::Container(_)) => format!(
                "{}[{}]{} ",
                st.ns,
                sanitize(&c.id.chars().take(12).collect::<String>()),
                st.reset
            ),
            _ => String::new(),
        };
        let mut line = format!(
            "{rel:>11.6} {:>7} {:<15} {tag}{body}",
            ev.pid,
            sanitize(&ev.comm)
        );
        if !ann.ns_changes.is_empty() {
            let parts: Vec<String> = ann
                .ns_changes
                .iter()
                .map(|c| {
                    format!(
                        "{}{} {}",
                        if c.first_seen { "new " } else { "" },
                        c.kind,
                        c.to
                    )
                })
                .collect();
            line.push_str(&format!("  {}[{}]{}", st.ns, parts.join(", "), st.reset));
        }
        line.push('\n');
        let pad = " ".repeat(36);
        let decisions = self.decisions.remove(&ev.tid).unwrap_or_default();
        match &ev.kind {
            EventKind::Syscall(sc) if sc.errno().is_some() => {
                // Only what happened since the call was entered belongs to it.
                for (_, d) in decisions.iter().filter(|(ts, _)| *ts >= ev.ts_ns) {
                    line.push_str(&format!("{pad}{d}\n"));
                }
                if sc.cap_repeats > 0 {
                    line.push_str(&format!(
                        "{pad}{}(and {} capability checks repeating the one before them){}\n",
                        st.dim, sc.cap_repeats, st.reset
                    ));
                }
            }
            _ => {}
        }
        if let Some(e) = &ann.explanation {
            line.push_str(&format!(
                "{pad}{}why: {}{} ({})\n",
                st.fail,
                sanitize(&e.text),
                st.reset,
                e.cause.code()
            ));
            for ev in &e.evidence {
                let item = match ev {
                    Evidence::Event { seq, what } => format!("#{seq} {what}"),
                    Evidence::Fact(f) => f.to_string(),
                };
                line.push_str(&format!("{pad}  because: {}\n", sanitize(&item)));
            }
            if let Some(h) = &e.hint {
                line.push_str(&format!(
                    "{pad}  {}hint:{} {}\n",
                    st.ns,
                    st.reset,
                    sanitize(h)
                ));
            }
        }
        self.out.write_all(line.as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let st = self.style;
        let c = &s.counts;
        let lost = if c.lost > 0 {
            format!("{}{} lost{}", st.warn, c.lost, st.reset)
        } else {
            "0 lost".to_string()
        };
        let failed = if c.failed > 0 {
            format!("{}{} failed{}", st.fail, c.failed, st.reset)
        } else {
            "0 failed".to_string()
        };
        writeln!(
            self.out,
            "--- nstrace: {} events, {} syscalls ({failed}), {} processes, {lost}{} ---",
            c.events,
            c.syscalls,
            c.processes,
            match s.exit_code {
                Some(code) => format!(", command exited with {code}"),
                None => String::new(),
            }
        )?;
        self.out.flush()
    }
}

fn syscall_line(sc: &Syscall, st: &Style) -> String {
    let args = if sc.no_entry {
        "<entry not seen>".to_string()
    } else {
        sc.args
            .iter()
            .map(|(name, v)| match (*name, sc.fd_ns) {
                // strace -y style: the fd with what it refers to.
                ("fd", Some(ns)) => format!(
                    "{}<{}ns {}{}>",
                    arg_text(v),
                    ns.kind.map(|k| format!("{k} ")).unwrap_or_default(),
                    ns.inum,
                    ns.level.map(|l| format!(", level {l}")).unwrap_or_default()
                ),
                _ => arg_text(v),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let result = match sc.errno() {
        Some(e) => format!(
            "{}= -1 {} ({}){}",
            st.fail,
            errno_name(e).map_or_else(|| e.to_string(), String::from),
            errno_message(e).unwrap_or("unknown error"),
            st.reset
        ),
        None => match sc.ret_kind {
            RetKind::Fd => format!("= {} (fd)", sc.ret),
            RetKind::ChildPid => format!("= {} (child)", sc.ret),
            RetKind::Status => format!("= {}", sc.ret),
        },
    };
    format!("{}({args}) {result}", sc.name)
}

fn arg_text(v: &ArgValue) -> String {
    match v {
        ArgValue::Str { text, truncated } => {
            format!("{}{}", quote(text), if *truncated { "..." } else { "" })
        }
        ArgValue::Null => "NULL".into(),
        ArgValue::Unreadable { addr, error } => format!("{addr:#x} <{error}>"),
        ArgValue::Int(i) => i.to_string(),
        ArgValue::Name(n) => sanitize(n),
        ArgValue::Flags(f) if f.is_empty() => "0".into(),
        ArgValue::Flags(f) => f.join("|"),
        ArgValue::Ptr(p) => format!("{p:#x}"),
        ArgValue::Struct(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{k}={}", arg_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ArgValue::Bytes(n) => format!("<{n} bytes>"),
    }
}

/// Quotes a string for the terminal, C-style: control characters (including
/// escape sequences and C1 controls) are shown as escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Makes an unquoted string (a command name) safe for the terminal.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::model::NsChange;
    use nstrace_common::NsIds;

    fn line(ann: &Annotated, color: bool) -> String {
        let mut buf = Vec::new();
        TextSink::new(&mut buf, color).event(ann).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn unshare_failed() -> Annotated {
        Annotated {
            event: Event {
                seq: 1,
                ts_ns: 5,
                pid: 77,
                tid: 77,
                comm: "unshare\x1b[2J".into(),
                kind: EventKind::Syscall(Syscall {
                    name: "unshare".into(),
                    nr: 272,
                    args: vec![(
                        "flags",
                        ArgValue::Flags(vec!["CLONE_NEWNS".into(), "CLONE_NEWUSER".into()]),
                    )],
                    ret: -22,
                    ns: NsIds::default(),
                    ns_before: Some(NsIds::default()),
                    duration_ns: 1,
                    no_entry: false,
                    cap_repeats: 0,
                    ret_kind: RetKind::Status,
                    state: nstrace_common::TaskState::default(),
                    fd_ns: None,
                    targets: Vec::new(),
                }),
            },
            ns_changes: vec![],
            explanation: None,
            container: None,
        }
    }

    #[test]
    fn failed_call_reads_like_strace() {
        let l = line(&unshare_failed(), false);
        assert!(
            l.contains("unshare(CLONE_NEWNS|CLONE_NEWUSER) = -1 EINVAL (Invalid argument)"),
            "{l}"
        );
        assert!(!l.contains('\x1b'), "no colour and no raw escape: {l:?}");
    }

    #[test]
    fn colour_marks_failures_only_when_asked() {
        let l = line(&unshare_failed(), true);
        assert!(l.contains("\x1b[1;31m= -1 EINVAL"));
        // The comm's escape sequence is neutralised even with colour on.
        assert!(!l.contains("\x1b[2J"));
    }

    #[test]
    fn namespace_changes_are_listed() {
        let mut ann = unshare_failed();
        ann.ns_changes = vec![NsChange {
            kind: "user",
            from: 1,
            to: 4026532000,
            first_seen: true,
        }];
        let l = line(&ann, false);
        assert!(l.ends_with("[new user 4026532000]\n"), "{l}");
    }

    #[test]
    fn decisions_show_under_failed_calls_only() {
        let mut buf = Vec::new();
        let mut sink = TextSink::new(&mut buf, false);
        // A decision at time `ts`; the failed call below entered at 5.
        let cap = |seq, ts_ns| Annotated {
            event: Event {
                seq,
                ts_ns,
                pid: 77,
                tid: 77,
                comm: "x".into(),
                kind: EventKind::Cap(CapCheck {
                    cap: 21,
                    allowed: false,
                    target: Default::default(),
                    cred_ns: Default::default(),
                    euid: 0,
                }),
            },
            ns_changes: vec![],
            explanation: None,
            container: None,
        };
        sink.event(&cap(1, 1)).unwrap();
        let mut ok = unshare_failed();
        if let EventKind::Syscall(sc) = &mut ok.event.kind {
            sc.ret = 0;
        }
        sink.event(&ok).unwrap();
        sink.event(&cap(2, 2)).unwrap();
        sink.event(&cap(3, 6)).unwrap();
        sink.event(&unshare_failed()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.contains("#1 capability"), "{text}");
        assert!(
            !text.contains("#2 capability"),
            "before the call's entry: {text}"
        );
        assert!(text.contains("#3 capability CAP_SYS_ADMIN"), "{text}");
        let call = text.find("= -1 EINVAL").unwrap();
        assert!(
            text.find("#3 capability").unwrap() > call,
            "shown under the call"
        );
    }

    #[test]
    fn quoting_escapes_controls() {
        assert_eq!(quote("a\"b\n\x1b"), "\"a\\\"b\\n\\u{1b}\"");
        assert_eq!(sanitize("x\x07y"), "x?y");
    }
}
