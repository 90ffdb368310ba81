//! NDJSON output: one JSON object per line, flushed after each batch of
//! kernel records ([`Sink::flush`]), after the first line and at the end. The
//! contract is `docs/ndjson.schema.json` (version `"v": 1`).

use std::io::{self, Write};

use super::json::{key, write_hex, Obj, Plain, ToJson};
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
    repeats: Repeats,
}

/// The JSON of the two values last written, written again as is when one of
/// them comes again: a trace alternates between two processes' namespaces
/// and credentials (a runtime outside the container and one inside), and
/// each change would otherwise format the whole object anew.
#[derive(Debug)]
struct Memo<T> {
    slots: [Option<(T, Vec<u8>)>; 2],
    /// The slot to replace next (the one used less recently).
    older: usize,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Self {
            slots: [None, None],
            older: 0,
        }
    }
}

impl<T: Clone + PartialEq> Memo<T> {
    fn write(
        &mut self,
        out: &mut Vec<u8>,
        v: &T,
        write: fn(&mut Vec<u8>, &T) -> io::Result<()>,
    ) -> io::Result<()> {
        let hit = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|(value, _)| value == v));
        let at = match hit {
            Some(at) => at,
            None => {
                let at = self.older;
                let mut json = self.slots[at].take().map(|(_, j)| j).unwrap_or_default();
                json.clear();
                write(&mut json, v)?;
                self.slots[at] = Some((v.clone(), json));
                at
            }
        };
        self.older = 1 - at;
        if let Some((_, json)) = &self.slots[at] {
            out.extend_from_slice(json);
        }
        Ok(())
    }
}

/// The objects that repeat from one event to the next (a process keeps its
/// namespaces and its credentials), kept as written so that they are not
/// formatted again for every event.
#[derive(Debug, Default)]
pub struct Repeats {
    ns: Memo<NsIds>,
    ns_before: Memo<NsIds>,
    state: Memo<TaskState>,
    /// A storm of failing calls explains each one alike; comparing is
    /// cheaper than writing the text and facts again.
    explanation: Memo<Explanation>,
}

impl<W: Write> NdjsonSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(4096),
            repeats: Repeats::default(),
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
        m.field(key!("v"), &FORMAT_VERSION)?;
        m.field(key!("seq"), &info.seq)?;
        m.field(key!("type"), "start")?;
        m.field(key!("ts_ns"), &info.ts_ns)?;
        m.field(key!("pid"), &0u32)?;
        m.field(key!("tid"), &0u32)?;
        m.field(key!("comm"), "")?;
        m.field(key!("nstrace"), env!("CARGO_PKG_VERSION"))?;
        m.field(key!("kernel"), &info.kernel)?;
        let mut h = Obj::new(m.key(key!("hooks")));
        h.field(key!("cap"), &info.hooks.cap)?;
        h.field(key!("klog"), &info.hooks.klog)?;
        h.field(key!("cap_via"), &info.hooks.cap_via)?;
        h.field(key!("syscalls_via"), &info.hooks.syscalls_via)?;
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
            &mut self.repeats,
            &ev.event,
            ev.container.as_ref(),
            ev.explanation.as_ref(),
        )?;
        self.write_line()
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.line.clear();
        let mut m = Obj::new(&mut self.line);
        m.field(key!("v"), &FORMAT_VERSION)?;
        m.field(key!("seq"), &s.seq)?;
        m.field(key!("type"), "summary")?;
        m.field(key!("ts_ns"), &s.ts_ns)?;
        m.field(key!("pid"), &0u32)?;
        m.field(key!("tid"), &0u32)?;
        m.field(key!("comm"), "")?;
        m.field(key!("events"), &s.counts.events)?;
        m.field(key!("syscalls"), &s.counts.syscalls)?;
        m.field(key!("failed"), &s.counts.failed)?;
        m.field(key!("processes"), &s.counts.processes)?;
        m.field(key!("lost"), &s.counts.lost)?;
        m.field(key!("exit_code"), &s.exit_code)?;
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
/// `container` member shows. `repeats` keeps what the previous events had.
pub fn write_event(
    out: &mut Vec<u8>,
    repeats: &mut Repeats,
    ev: &Event,
    container: Option<&Container>,
    explanation: Option<&Explanation>,
) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field(key!("v"), &FORMAT_VERSION)?;
    m.field(key!("seq"), &ev.seq)?;
    m.field(key!("type"), &Plain(type_name(&ev.kind)))?;
    m.field(key!("ts_ns"), &ev.ts_ns)?;
    m.field(key!("pid"), &ev.pid)?;
    m.field(key!("tid"), &ev.tid)?;
    m.field(key!("comm"), &ev.comm)?;
    // A container event shows its container in the place of the member
    // every other event has at the end.
    let mut trailing_container = container;
    match &ev.kind {
        EventKind::Container(c) => {
            write_container(m.key(key!("container")), container.unwrap_or(c))?;
            trailing_container = None;
        }
        EventKind::Syscall(sc) => {
            match &sc.name {
                std::borrow::Cow::Borrowed(name) => m.field(key!("syscall"), &Plain(name))?,
                std::borrow::Cow::Owned(name) => m.field(key!("syscall"), name)?,
            }
            let mut args = Obj::new(m.key(key!("args")));
            for (name, value) in &sc.args {
                write_arg(args.name_key(name), value)?;
            }
            args.end();
            m.field(key!("ret"), &sc.user_ret())?;
            let errno = m.key(key!("errno"));
            match sc.errno() {
                Some(e) => match errno_name(e) {
                    Some(name) => Plain(name).write_json(errno)?,
                    None => e.to_string().write_json(errno)?,
                },
                None => None::<u32>.write_json(errno)?,
            }
            repeats.ns.write(m.key(key!("ns")), &sc.ns, write_ns)?;
            if let Some(before) = &sc.ns_before {
                repeats
                    .ns_before
                    .write(m.key(key!("ns_before")), before, write_ns)?;
            }
            m.field(key!("duration_ns"), &sc.duration_ns)?;
            repeats
                .state
                .write(m.key(key!("state")), &sc.state, write_state)?;
            if let Some(ns) = sc.fd_ns {
                m.field(key!("fd_ns"), &ns.inum)?;
                if let Some(kind) = ns.kind {
                    m.field(key!("fd_ns_type"), kind)?;
                }
                if let Some(level) = ns.level {
                    m.field(key!("fd_ns_level"), &level)?;
                }
            }
            if !sc.targets.is_empty() {
                let list = m.key(key!("targets"));
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
                m.field(key!("no_entry"), &true)?;
            }
            if sc.cap_repeats > 0 {
                m.field(key!("cap_repeats"), &sc.cap_repeats)?;
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
                let list = m.key(key!("truncated"));
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
            m.field(key!("ppid"), ppid)?;
            repeats.ns.write(m.key(key!("ns")), ns, write_ns)?;
        }
        EventKind::Exec {
            ppid,
            filename,
            argv,
            argv_truncated,
            ns,
            adopted,
        } => {
            m.field(key!("ppid"), ppid)?;
            m.field(key!("filename"), filename)?;
            m.field(key!("argv"), argv)?;
            if *argv_truncated {
                m.field(key!("argv_truncated"), &true)?;
            }
            repeats.ns.write(m.key(key!("ns")), ns, write_ns)?;
            if *adopted {
                m.field(key!("adopted"), &true)?;
            }
        }
        EventKind::Exit { ppid, status } => {
            m.field(key!("ppid"), ppid)?;
            match *status {
                ExitStatus::Exited(c) => {
                    m.field(key!("exit_code"), &c)?;
                    m.field(key!("signal"), &None::<u32>)?;
                    m.field(key!("core_dumped"), &false)?;
                }
                ExitStatus::Signaled {
                    signal,
                    core_dumped,
                } => {
                    m.field(key!("exit_code"), &None::<u32>)?;
                    m.field(key!("signal"), &signal_name(signal))?;
                    m.field(key!("core_dumped"), &core_dumped)?;
                }
            }
        }
        EventKind::Lost { count } => {
            m.field(key!("count"), count)?;
        }
        EventKind::Cap(CapCheck {
            cap,
            allowed,
            target,
            cred_ns,
            euid,
        }) => {
            m.field(key!("cap"), &capability_name(*cap))?;
            m.field(key!("allowed"), allowed)?;
            write_userns(m.key(key!("user_ns")), target)?;
            write_userns(m.key(key!("cred_user_ns")), cred_ns)?;
            m.field(key!("euid"), euid)?;
        }
        EventKind::Klog { text } => {
            m.field(key!("text"), text)?;
        }
        EventKind::Mounts {
            mnt_ns,
            user_ns,
            locked,
            created_by,
            read_from,
            mounts,
        } => {
            m.field(key!("read_from"), read_from.name())?;
            m.field(key!("mnt_ns"), mnt_ns)?;
            m.field(key!("user_ns"), user_ns)?;
            m.field(key!("locked"), locked)?;
            m.field(key!("created_by"), created_by)?;
            let list = m.key(key!("mounts"));
            list.push(b'[');
            for (i, mt) in mounts.iter().enumerate() {
                if i > 0 {
                    list.push(b',');
                }
                let mut o = Obj::new(list);
                o.field(key!("id"), &mt.id)?;
                o.field(key!("parent"), &mt.parent)?;
                o.field(key!("root"), &mt.root)?;
                o.field(key!("mountpoint"), &mt.mountpoint)?;
                o.field(key!("options"), &mt.options)?;
                o.field(key!("fstype"), &mt.fstype)?;
                o.field(key!("source"), &mt.source)?;
                match mt.kernel {
                    Some(k) => {
                        let mut ko = Obj::new(o.key(key!("kernel")));
                        ko.field(key!("flags"), &k.flags)?;
                        ko.field(key!("locked"), &k.locked())?;
                        ko.field(key!("locks"), &k.locks())?;
                        ko.end();
                    }
                    None => o.field(key!("kernel"), &None::<u32>)?,
                }
                o.end();
            }
            list.push(b']');
        }
    }
    if let Some(c) = trailing_container {
        write_container(m.key(key!("container")), c)?;
    }
    if let Some(e) = explanation {
        repeats
            .explanation
            .write(m.key(key!("explanation")), e, write_explanation)?;
    }
    m.end();
    Ok(())
}

/// `{"inum": N, "level": N, "owner": UID, "parent": N}`.
fn write_userns(out: &mut Vec<u8>, u: &UserNsInfo) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field(key!("inum"), &u.inum)?;
    m.field(key!("level"), &u.level)?;
    m.field(key!("owner"), &u.owner)?;
    m.field(key!("parent"), &u.parent)?;
    m.end();
    Ok(())
}

/// `{"id", "runtime", "engine"?, "init_pid"?}`.
fn write_container(out: &mut Vec<u8>, c: &Container) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field(key!("id"), &c.id)?;
    m.field(key!("runtime"), &c.runtime)?;
    if let Some(e) = &c.engine {
        m.field(key!("engine"), e)?;
    }
    if let Some(p) = c.init_pid {
        m.field(key!("init_pid"), &p)?;
    }
    m.end();
    Ok(())
}

/// A path argument of a failed call resolved to its mount.
fn write_target(out: &mut Vec<u8>, t: &TargetMount) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field(key!("arg"), &t.arg)?;
    m.field(key!("path"), &t.path)?;
    m.field(key!("mnt_id"), &t.mnt_id)?;
    m.field(key!("parent_id"), &t.parent_id)?;
    m.field(key!("mnt_ns"), &t.mnt_ns)?;
    m.field(key!("mount_root"), &t.mount_root)?;
    m.field(key!("shared"), &t.shared)?;
    m.field(key!("parent_shared"), &t.parent_shared)?;
    write_hex(m.key(key!("mnt_flags")), u64::from(t.flags))?;
    m.field(key!("via_pid"), &t.via_pid)?;
    m.end();
    Ok(())
}

/// The caller's state recorded with a syscall.
fn write_state(out: &mut Vec<u8>, st: &TaskState) -> io::Result<()> {
    let mut m = Obj::new(out);
    write_userns(m.key(key!("user_ns")), &st.user_ns)?;
    m.field(key!("euid"), &st.euid)?;
    m.field(key!("threads"), &st.nr_threads)?;
    m.field(key!("seccomp_mode"), &st.seccomp_mode)?;
    m.field(key!("pidns_level"), &st.pidns_level)?;
    let mut owners = Obj::new(m.key(key!("owners")));
    owners.field(key!("mnt"), &st.mntns_owner)?;
    owners.field(key!("pid"), &st.pidns_owner)?;
    owners.field(key!("net"), &st.netns_owner)?;
    owners.end();
    m.field(key!("egid"), &st.egid)?;
    let mut mapped = Obj::new(m.key(key!("ids_mapped")));
    mapped.field(key!("uid"), &st.uid_map.maps(st.euid))?;
    mapped.field(key!("gid"), &st.gid_map.maps(st.egid))?;
    mapped.end();
    m.field(key!("chrooted"), &st.root.chrooted())?;
    m.end();
    Ok(())
}

/// Appends the `explanation` object of a failed call to `out`.
pub fn write_explanation(out: &mut Vec<u8>, e: &Explanation) -> io::Result<()> {
    let mut m = Obj::new(out);
    m.field(key!("cause"), e.cause.code())?;
    m.field(key!("text"), &e.text)?;
    let list = m.key(key!("evidence"));
    list.push(b'[');
    for (i, ev) in e.evidence.iter().enumerate() {
        if i > 0 {
            list.push(b',');
        }
        let mut o = Obj::new(list);
        match ev {
            Evidence::Event { seq, what } => {
                o.field(key!("seq"), seq)?;
                o.field(key!("what"), what)?;
            }
            Evidence::Fact(f) => o.field(key!("fact"), f)?,
        }
        o.end();
    }
    list.push(b']');
    m.field(key!("hint"), &e.hint)?;
    if let Some(cap) = &e.capability {
        m.field(key!("capability"), cap)?;
    }
    if !e.mounts.is_empty() {
        m.field(key!("mounts"), &e.mounts)?;
    }
    if !e.flags.is_empty() {
        m.field(key!("flags"), &e.flags)?;
    }
    if let Some(u) = &e.user_ns {
        let mut o = Obj::new(m.key(key!("user_ns")));
        o.field(key!("inum"), &u.inum)?;
        o.field(key!("level"), &u.level)?;
        o.field(key!("owner"), &u.owner)?;
        o.end();
    }
    m.end();
    Ok(())
}

/// The keys of [`NS_NAMES`].
const NS_KEYS: [&str; NS_NAMES.len()] = [
    key!("user"),
    key!("mnt"),
    key!("pid"),
    key!("net"),
    key!("uts"),
    key!("ipc"),
    key!("cgroup"),
    key!("time"),
    key!("pid_for_children"),
    key!("time_for_children"),
];

/// `{"user": N, ...}` with every namespace slot.
fn write_ns(out: &mut Vec<u8>, ids: &NsIds) -> io::Result<()> {
    let mut m = Obj::new(out);
    for (prefix, inum) in NS_KEYS.iter().zip(ids.inum.iter()) {
        m.field(prefix, inum)?;
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
            write_hex(m.key(key!("addr")), *addr)?;
            m.field(key!("error"), error)?;
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
                write_arg(m.name_key(k), v)?;
            }
            m.end();
            Ok(())
        }
        ArgValue::Bytes(n) => {
            let mut m = Obj::new(out);
            m.field(key!("bytes"), n)?;
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
        write_event(&mut out, &mut Repeats::default(), ev, None, None).unwrap();
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
                cap_repeats: 0,
                ret_kind: RetKind::Status,
                state: nstrace_common::TaskState::default(),
                fd_ns: None,
                targets: Vec::new(),
            }),
        }
    }

    #[test]
    fn repeated_objects_follow_each_event() {
        use crate::explain::Cause;
        let explained = |cause, fact: &'static str| {
            Some(Explanation::new(
                cause,
                "why".into(),
                vec![Evidence::Fact(fact.into())],
                None,
            ))
        };
        let unknown = explained(Cause::Unknown, "mount returned EPERM");
        let other_fact = explained(Cause::Unknown, "mount returned EACCES");
        let locked = explained(Cause::LockedMount, "mount returned EPERM");
        let mut events = Vec::new();
        for (ns, euid, before, explanation) in [
            (9, 0, None, unknown.clone()),
            (9, 0, None, unknown.clone()),
            (8, 0, Some(9), other_fact),
            (9, 5, Some(8), None),
            (9, 5, Some(8), unknown),
            (9, 5, Some(8), locked),
            // Two values alternating, then a third evicting the older.
            (8, 0, Some(9), None),
            (9, 5, Some(8), None),
            (8, 0, Some(9), None),
            (7, 5, Some(7), None),
            (9, 0, Some(9), None),
            (8, 5, Some(8), None),
            (7, 0, Some(9), None),
        ] {
            let mut ev = failed_mount();
            if let EventKind::Syscall(sc) = &mut ev.kind {
                sc.ns = NsIds { inum: [ns; 10] };
                sc.state.euid = euid;
                sc.ns_before = before.map(|b| NsIds { inum: [b; 10] });
            }
            events.push(Annotated {
                event: ev,
                ns_changes: vec![],
                explanation,
                container: None,
            });
        }
        let mut shared = Vec::new();
        let mut sink = NdjsonSink::new(&mut shared);
        let mut expected = Vec::new();
        for ann in &events {
            sink.event(ann).unwrap();
            NdjsonSink::new(&mut expected).event(ann).unwrap();
        }
        drop(sink);
        assert_eq!(
            String::from_utf8(shared).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn names_written_without_escaping_need_none() {
        for def in crate::syscalls::SYSCALLS {
            assert!(Plain::allowed(def.name), "{}", def.name);
        }
        for e in 0..4096 {
            if let Some(name) = errno_name(e) {
                assert!(Plain::allowed(name), "{name}");
            }
        }
        // The event types are the literals of `type_name`: plain, and
        // every line of the trace tests is parsed back.
    }

    #[test]
    fn namespace_keys_are_the_namespace_names() {
        for (prefix, name) in NS_KEYS.iter().zip(NS_NAMES) {
            assert_eq!(*prefix, format!(",\"{name}\":"));
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
