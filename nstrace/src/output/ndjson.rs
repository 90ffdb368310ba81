//! NDJSON output: one JSON object per line, flushed after each batch of
//! kernel records ([`Sink::flush`]), after the first line and at the end. The
//! contract is `docs/ndjson.schema.json` (version `"v": 1`).

use std::io::{self, Write};

use super::json::{write_hex, Obj, ToJson};
use super::{Sink, StartInfo, Summary};
use crate::containers::Container;
use crate::errnos::{capability_name, errno_name, signal_name};
use crate::event::{ArgValue, CapCheck, Event, EventKind, ExitStatus, TargetMount, NS_NAMES};
use crate::explain::{Evidence, Explanation};
use crate::model::Annotated;
use nstrace_common::{NsIds, TaskState, UserNsInfo};

/// Version of the line format.
pub const FORMAT_VERSION: u64 = 1;

/// Writes NDJSON to any writer.
pub struct NdjsonSink<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> NdjsonSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(4096),
        }
    }

    /// Writes the line in `self.line` with its newline.
    fn write_line(&mut self) -> io::Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

impl<W: Write> Sink for NdjsonSink<W> {
    fn start(&mut self, info: &StartInfo) -> io::Result<()> {
        self.line.clear();
        let mut m = Obj::new(&mut self.line);
        m.field("v", &FORMAT_VERSION)?;
        m.field("seq", &info.seq)?;
        m.field("type", "start")?;
        m.field("ts_ns", &info.ts_ns)?;
        m.field("pid", &0u32)?;
        m.field("tid", &0u32)?;
        m.field("comm", "")?;
        m.field("nstrace", env!("CARGO_PKG_VERSION"))?;
        m.field("kernel", &info.kernel)?;
        let mut h = Obj::new(m.key("hooks"));
        h.field("cap", &info.hooks.cap)?;
        h.field("klog", &info.hooks.klog)?;
        h.field("cap_via", &info.hooks.cap_via)?;
        h.end();
        m.end();
        self.write_line()?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn event(&mut self, ev: &Annotated) -> io::Result<()> {
        self.line.clear();
        write_event(
            &mut self.line,
            &ev.event,
            ev.container.as_ref(),
            ev.explanation.as_ref(),
        )?;
        self.write_line()
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.line.clear();
        let mut m = Obj::new(&mut self.line);
        m.field("v", &FORMAT_VERSION)?;
        m.field("seq", &s.seq)?;
        m.field("type", "summary")?;
        m.field("ts_ns", &s.ts_ns)?;
        m.field("pid", &0u32)?;
        m.field("tid", &0u32)?;
        m.field("comm", "")?;
        m.field("events", &s.counts.events)?;
        m.field("syscalls", &s.counts.syscalls)?;
        m.field("failed", &s.counts.failed)?;
        m.field("processes", &s.counts.processes)?;
        m.field("lost", &s.counts.lost)?;
        m.field("exit_code", &s.exit_code)?;
        m.end();
        self.write_line()?;
        self.out.flush()
    }
}

/// The line type of an event.
fn type_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Syscall(_) => "syscall",
        EventKind::Fork { .. } => "fork",
        EventKind::Exec { .. } => "exec",
        EventKind::Exit { .. } => "exit",
        EventKind::Lost { .. } => "lost",
        EventKind::Cap(_) => "cap",
        EventKind::Klog { .. } => "klog",
        EventKind::Mounts { .. } => "mounts",
        EventKind::Container(_) => "container",
    }
}

/// Appends the JSON object of one event (without a newline) to `out`, with
/// the container the process belongs to and the explanation of a failed
/// call. For a `container` event, `container` (when given) is what its
/// `container` member shows.
pub fn write_event(
    out: &mut Vec<u8>,
    ev: &Event,
    container: Option<&Container>,
    explanation: Option<&Explanation>,
) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field("v", &FORMAT_VERSION)?;
    m.field("seq", &ev.seq)?;
    m.field("type", type_name(&ev.kind))?;
    m.field("ts_ns", &ev.ts_ns)?;
    m.field("pid", &ev.pid)?;
    m.field("tid", &ev.tid)?;
    m.field("comm", &ev.comm)?;
    // A container event shows its container in the place of the member
    // every other event has at the end.
    let mut trailing_container = container;
    match &ev.kind {
        EventKind::Container(c) => {
            write_container(m.key("container"), container.unwrap_or(c))?;
            trailing_container = None;
        }
        EventKind::Syscall(sc) => {
            m.field("syscall", &sc.name)?;
            let mut args = Obj::new(m.key("args"));
            for (name, value) in &sc.args {
                write_arg(args.key(name), value)?;
            }
            args.end();
            m.field("ret", &sc.user_ret())?;
            let errno = m.key("errno");
            match sc.errno() {
                Some(e) => match errno_name(e) {
                    Some(name) => name.write_json(errno)?,
                    None => e.to_string().write_json(errno)?,
                },
                None => None::<u32>.write_json(errno)?,
            }
            write_ns(m.key("ns"), &sc.ns)?;
            if let Some(before) = &sc.ns_before {
                write_ns(m.key("ns_before"), before)?;
            }
            m.field("duration_ns", &sc.duration_ns)?;
            write_state(m.key("state"), &sc.state)?;
            if let Some(ns) = sc.fd_ns {
                m.field("fd_ns", &ns.inum)?;
                if let Some(kind) = ns.kind {
                    m.field("fd_ns_type", kind)?;
                }
                if let Some(level) = ns.level {
                    m.field("fd_ns_level", &level)?;
                }
            }
            if !sc.targets.is_empty() {
                let list = m.key("targets");
                list.push(b'[');
                for (i, t) in sc.targets.iter().enumerate() {
                    if i > 0 {
                        list.push(b',');
                    }
                    write_target(list, t)?;
                }
                list.push(b']');
            }
            if sc.no_entry {
                m.field("no_entry", &true)?;
            }
            let mut truncated = sc.args.iter().filter(|(_, v)| {
                matches!(
                    v,
                    ArgValue::Str {
                        truncated: true,
                        ..
                    }
                )
            });
            if let Some((first, _)) = truncated.next() {
                let list = m.key("truncated");
                list.push(b'[');
                first.write_json(list)?;
                for (name, _) in truncated {
                    list.push(b',');
                    name.write_json(list)?;
                }
                list.push(b']');
            }
        }
        EventKind::Fork { ppid, ns } => {
            m.field("ppid", ppid)?;
            write_ns(m.key("ns"), ns)?;
        }
        EventKind::Exec {
            ppid,
            filename,
            argv,
            argv_truncated,
            ns,
            adopted,
        } => {
            m.field("ppid", ppid)?;
            m.field("filename", filename)?;
            m.field("argv", argv)?;
            if *argv_truncated {
                m.field("argv_truncated", &true)?;
            }
            write_ns(m.key("ns"), ns)?;
            if *adopted {
                m.field("adopted", &true)?;
            }
        }
        EventKind::Exit { ppid, status } => {
            m.field("ppid", ppid)?;
            match *status {
                ExitStatus::Exited(c) => {
                    m.field("exit_code", &c)?;
                    m.field("signal", &None::<u32>)?;
                    m.field("core_dumped", &false)?;
                }
                ExitStatus::Signaled {
                    signal,
                    core_dumped,
                } => {
                    m.field("exit_code", &None::<u32>)?;
                    m.field("signal", &signal_name(signal))?;
                    m.field("core_dumped", &core_dumped)?;
                }
            }
        }
        EventKind::Lost { count } => {
            m.field("count", count)?;
        }
        EventKind::Cap(CapCheck {
            cap,
            allowed,
            target,
            cred_ns,
            euid,
        }) => {
            m.field("cap", &capability_name(*cap))?;
            m.field("allowed", allowed)?;
            write_userns(m.key("user_ns"), target)?;
            write_userns(m.key("cred_user_ns"), cred_ns)?;
            m.field("euid", euid)?;
        }
        EventKind::Klog { text } => {
            m.field("text", text)?;
        }
        EventKind::Mounts {
            mnt_ns,
            user_ns,
            locked,
            created_by,
            from_source,
            mounts,
        } => {
            m.field("read_from", if *from_source { "source" } else { "new" })?;
            m.field("mnt_ns", mnt_ns)?;
            m.field("user_ns", user_ns)?;
            m.field("locked", locked)?;
            m.field("created_by", created_by)?;
            let list = m.key("mounts");
            list.push(b'[');
            for (i, mt) in mounts.iter().enumerate() {
                if i > 0 {
                    list.push(b',');
                }
                let mut o = Obj::new(list);
                o.field("id", &mt.id)?;
                o.field("parent", &mt.parent)?;
                o.field("root", &mt.root)?;
                o.field("mountpoint", &mt.mountpoint)?;
                o.field("options", &mt.options)?;
                o.field("fstype", &mt.fstype)?;
                o.field("source", &mt.source)?;
                match mt.kernel {
                    Some(k) => {
                        let mut ko = Obj::new(o.key("kernel"));
                        ko.field("flags", &k.flags)?;
                        ko.field("locked", &k.locked())?;
                        ko.field("locks", &k.locks())?;
                        ko.end();
                    }
                    None => o.field("kernel", &None::<u32>)?,
                }
                o.end();
            }
            list.push(b']');
        }
    }
    if let Some(c) = trailing_container {
        write_container(m.key("container"), c)?;
    }
    if let Some(e) = explanation {
        write_explanation(m.key("explanation"), e)?;
    }
    m.end();
    Ok(())
}

/// `{"inum": N, "level": N, "owner": UID, "parent": N}`.
fn write_userns(out: &mut Vec<u8>, u: &UserNsInfo) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field("inum", &u.inum)?;
    m.field("level", &u.level)?;
    m.field("owner", &u.owner)?;
    m.field("parent", &u.parent)?;
    m.end();
    Ok(())
}

/// `{"id", "runtime", "engine"?, "init_pid"?}`.
fn write_container(out: &mut Vec<u8>, c: &Container) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field("id", &c.id)?;
    m.field("runtime", &c.runtime)?;
    if let Some(e) = &c.engine {
        m.field("engine", e)?;
    }
    if let Some(p) = c.init_pid {
        m.field("init_pid", &p)?;
    }
    m.end();
    Ok(())
}

/// A path argument of a failed call resolved to its mount.
fn write_target(out: &mut Vec<u8>, t: &TargetMount) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field("arg", &t.arg)?;
    m.field("path", &t.path)?;
    m.field("mnt_id", &t.mnt_id)?;
    m.field("parent_id", &t.parent_id)?;
    m.field("mnt_ns", &t.mnt_ns)?;
    m.field("mount_root", &t.mount_root)?;
    m.field("shared", &t.shared)?;
    m.field("parent_shared", &t.parent_shared)?;
    write_hex(m.key("mnt_flags"), u64::from(t.flags))?;
    m.field("via_pid", &t.via_pid)?;
    m.end();
    Ok(())
}

/// The caller's state recorded with a syscall.
fn write_state(out: &mut Vec<u8>, st: &TaskState) -> io::Result<()> {
    let mut m = Obj::new(out);
    write_userns(m.key("user_ns"), &st.user_ns)?;
    m.field("euid", &st.euid)?;
    m.field("threads", &st.nr_threads)?;
    m.field("seccomp_mode", &st.seccomp_mode)?;
    m.field("pidns_level", &st.pidns_level)?;
    let mut owners = Obj::new(m.key("owners"));
    owners.field("mnt", &st.mntns_owner)?;
    owners.field("pid", &st.pidns_owner)?;
    owners.field("net", &st.netns_owner)?;
    owners.end();
    m.field("egid", &st.egid)?;
    let mut mapped = Obj::new(m.key("ids_mapped"));
    mapped.field("uid", &st.uid_map.maps(st.euid))?;
    mapped.field("gid", &st.gid_map.maps(st.egid))?;
    mapped.end();
    m.field("chrooted", &st.root.chrooted())?;
    m.end();
    Ok(())
}

/// Appends the `explanation` object of a failed call to `out`.
pub fn write_explanation(out: &mut Vec<u8>, e: &Explanation) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field("cause", e.cause.code())?;
    m.field("text", &e.text)?;
    let list = m.key("evidence");
    list.push(b'[');
    for (i, ev) in e.evidence.iter().enumerate() {
        if i > 0 {
            list.push(b',');
        }
        let mut o = Obj::new(list);
        match ev {
            Evidence::Event { seq, what } => {
                o.field("seq", seq)?;
                o.field("what", what)?;
            }
            Evidence::Fact(f) => o.field("fact", f)?,
        }
        o.end();
    }
    list.push(b']');
    m.field("hint", &e.hint)?;
    if let Some(cap) = &e.capability {
        m.field("capability", cap)?;
    }
    if !e.mounts.is_empty() {
        m.field("mounts", &e.mounts)?;
    }
    if !e.flags.is_empty() {
        m.field("flags", &e.flags)?;
    }
    if let Some(u) = &e.user_ns {
        let mut o = Obj::new(m.key("user_ns"));
        o.field("inum", &u.inum)?;
        o.field("level", &u.level)?;
        o.field("owner", &u.owner)?;
        o.end();
    }
    m.end();
    Ok(())
}

/// `{"user": N, ...}` with every namespace slot.
fn write_ns(out: &mut Vec<u8>, ids: &NsIds) -> io::Result<()> {
    let mut m = Obj::new(out);
    for (name, inum) in NS_NAMES.iter().zip(ids.inum.iter()) {
        m.field(name, inum)?;
    }
    m.end();
    Ok(())
}

fn write_arg(out: &mut Vec<u8>, v: &ArgValue) -> io::Result<()> {
    match v {
        ArgValue::Str { text, .. } => text.write_json(out),
        ArgValue::Null => None::<u32>.write_json(out),
        ArgValue::Unreadable { addr, error } => {
            let mut m = Obj::new(out);
            write_hex(m.key("addr"), *addr)?;
            m.field("error", error)?;
            m.end();
            Ok(())
        }
        ArgValue::Int(i) => i.write_json(out),
        ArgValue::Name(n) => n.write_json(out),
        ArgValue::Flags(f) => f.write_json(out),
        ArgValue::Ptr(p) => write_hex(out, *p),
        ArgValue::Struct(fields) => {
            let mut m = Obj::new(out);
            for (k, v) in fields {
                write_arg(m.key(k), v)?;
            }
            m.end();
            Ok(())
        }
        ArgValue::Bytes(n) => {
            let mut m = Obj::new(out);
            m.field("bytes", n)?;
            m.end();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Syscall;
    use crate::syscalls::RetKind;
    use serde_json::{json, Value};

    fn event_json(ev: &Event) -> Value {
        let mut out = Vec::new();
        write_event(&mut out, ev, None, None).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn failed_mount() -> Event {
        Event {
            seq: 7,
            ts_ns: 123,
            pid: 5,
            tid: 6,
            comm: "mount".into(),
            kind: EventKind::Syscall(Syscall {
                name: "mount".into(),
                nr: 165,
                args: vec![
                    (
                        "source",
                        ArgValue::Str {
                            text: "proc".into(),
                            truncated: false,
                        },
                    ),
                    ("flags", ArgValue::Flags(vec!["MS_NOSUID".into()])),
                    ("data", ArgValue::Null),
                ],
                ret: -1,
                ns: NsIds { inum: [9; 10] },
                ns_before: None,
                duration_ns: 10,
                no_entry: false,
                ret_kind: RetKind::Status,
                state: nstrace_common::TaskState::default(),
                fd_ns: None,
                targets: Vec::new(),
            }),
        }
    }

    #[test]
    fn syscall_line_has_the_contract_fields() {
        let v = event_json(&failed_mount());
        assert_eq!(v["v"], 1);
        assert_eq!(v["type"], "syscall");
        assert_eq!(v["syscall"], "mount");
        assert_eq!(v["errno"], "EPERM");
        assert_eq!(v["ret"], -1);
        assert_eq!(v["args"]["flags"], json!(["MS_NOSUID"]));
        assert_eq!(v["args"]["data"], Value::Null);
        assert_eq!(v["ns"]["mnt"], 9);
        assert!(v.get("ns_before").is_none());
    }

    #[test]
    fn lines_end_with_newline_and_parse_back() {
        let mut buf = Vec::new();
        {
            let mut sink = NdjsonSink::new(&mut buf);
            let ann = Annotated {
                event: failed_mount(),
                ns_changes: vec![],
                explanation: None,
                container: None,
            };
            sink.event(&ann).unwrap();
            sink.summary(&Summary::default()).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let _: Value = serde_json::from_str(l).unwrap();
        }
        assert!(text.ends_with('\n'));
    }
}
