//! NDJSON output: one JSON object per line, flushed after each batch of
//! kernel records ([`Sink::flush`]), after the first line and at the end. The
//! contract is `docs/ndjson.schema.json` (version `"v": 1`).

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use super::{Sink, StartInfo, Summary};
use crate::errnos::{capability_name, errno_name, signal_name};
use crate::event::{ArgValue, CapCheck, Event, EventKind, ExitStatus, NS_NAMES};
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

    fn write_value(&mut self, v: &Value) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, v).map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

impl<W: Write> Sink for NdjsonSink<W> {
    fn start(&mut self, info: &StartInfo) -> io::Result<()> {
        let v = json!({
            "v": FORMAT_VERSION,
            "seq": info.seq,
            "type": "start",
            "ts_ns": info.ts_ns,
            "pid": 0,
            "tid": 0,
            "comm": "",
            "nstrace": env!("CARGO_PKG_VERSION"),
            "kernel": info.kernel,
            "hooks": {
                "cap": info.hooks.cap,
                "klog": info.hooks.klog,
                "cap_via": info.hooks.cap_via,
                "syscalls_via": info.hooks.syscalls_via,
            },
        });
        self.write_value(&v)?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn event(&mut self, ev: &Annotated) -> io::Result<()> {
        let mut v = event_json(&ev.event);
        if let Value::Object(m) = &mut v {
            if let Some(c) = &ev.container {
                m.insert("container".into(), container_json(c));
            }
            if let Some(e) = &ev.explanation {
                m.insert("explanation".into(), explanation_json(e));
            }
        }
        self.write_value(&v)
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let v = json!({
            "v": FORMAT_VERSION,
            "seq": s.seq,
            "type": "summary",
            "ts_ns": s.ts_ns,
            "pid": 0,
            "tid": 0,
            "comm": "",
            "events": s.counts.events,
            "syscalls": s.counts.syscalls,
            "failed": s.counts.failed,
            "processes": s.counts.processes,
            "lost": s.counts.lost,
            "exit_code": s.exit_code,
        });
        self.write_value(&v)?;
        self.out.flush()
    }
}

/// The JSON object of one event.
pub fn event_json(ev: &Event) -> Value {
    let mut m = Map::new();
    m.insert("v".into(), json!(FORMAT_VERSION));
    m.insert("seq".into(), json!(ev.seq));
    let ty = match &ev.kind {
        EventKind::Syscall(_) => "syscall",
        EventKind::Fork { .. } => "fork",
        EventKind::Exec { .. } => "exec",
        EventKind::Exit { .. } => "exit",
        EventKind::Lost { .. } => "lost",
        EventKind::Cap(_) => "cap",
        EventKind::Klog { .. } => "klog",
        EventKind::Mounts { .. } => "mounts",
        EventKind::Container(_) => "container",
    };
    m.insert("type".into(), json!(ty));
    m.insert("ts_ns".into(), json!(ev.ts_ns));
    m.insert("pid".into(), json!(ev.pid));
    m.insert("tid".into(), json!(ev.tid));
    m.insert("comm".into(), json!(ev.comm));
    match &ev.kind {
        EventKind::Container(c) => {
            m.insert("container".into(), container_json(c));
        }
        EventKind::Syscall(sc) => {
            m.insert("syscall".into(), json!(sc.name));
            let mut args = Map::new();
            let mut truncated = Vec::new();
            for (name, value) in &sc.args {
                if matches!(
                    value,
                    ArgValue::Str {
                        truncated: true,
                        ..
                    }
                ) {
                    truncated.push(*name);
                }
                args.insert((*name).into(), arg_json(value));
            }
            m.insert("args".into(), Value::Object(args));
            m.insert("ret".into(), json!(sc.user_ret()));
            m.insert(
                "errno".into(),
                match sc.errno() {
                    Some(e) => json!(errno_name(e).map_or_else(|| e.to_string(), String::from)),
                    None => Value::Null,
                },
            );
            m.insert("ns".into(), ns_json(&sc.ns));
            if let Some(before) = &sc.ns_before {
                m.insert("ns_before".into(), ns_json(before));
            }
            m.insert("duration_ns".into(), json!(sc.duration_ns));
            m.insert("state".into(), state_json(&sc.state));
            if let Some(ns) = sc.fd_ns {
                m.insert("fd_ns".into(), json!(ns.inum));
                if let Some(kind) = ns.kind {
                    m.insert("fd_ns_type".into(), json!(kind));
                }
                if let Some(level) = ns.level {
                    m.insert("fd_ns_level".into(), json!(level));
                }
            }
            if !sc.targets.is_empty() {
                m.insert(
                    "targets".into(),
                    sc.targets.iter().map(target_json).collect::<Value>(),
                );
            }
            if sc.no_entry {
                m.insert("no_entry".into(), json!(true));
            }
            if !truncated.is_empty() {
                m.insert("truncated".into(), json!(truncated));
            }
        }
        EventKind::Fork { ppid, ns } => {
            m.insert("ppid".into(), json!(ppid));
            m.insert("ns".into(), ns_json(ns));
        }
        EventKind::Exec {
            ppid,
            filename,
            argv,
            argv_truncated,
            ns,
            adopted,
        } => {
            m.insert("ppid".into(), json!(ppid));
            m.insert("filename".into(), json!(filename));
            m.insert("argv".into(), json!(argv));
            if *argv_truncated {
                m.insert("argv_truncated".into(), json!(true));
            }
            m.insert("ns".into(), ns_json(ns));
            if *adopted {
                m.insert("adopted".into(), json!(true));
            }
        }
        EventKind::Exit { ppid, status } => {
            m.insert("ppid".into(), json!(ppid));
            let (code, signal, core) = match *status {
                ExitStatus::Exited(c) => (json!(c), Value::Null, false),
                ExitStatus::Signaled {
                    signal,
                    core_dumped,
                } => (Value::Null, json!(signal_name(signal)), core_dumped),
            };
            m.insert("exit_code".into(), code);
            m.insert("signal".into(), signal);
            m.insert("core_dumped".into(), json!(core));
        }
        EventKind::Lost { count } => {
            m.insert("count".into(), json!(count));
        }
        EventKind::Cap(CapCheck {
            cap,
            allowed,
            target,
            cred_ns,
            euid,
        }) => {
            m.insert("cap".into(), json!(capability_name(*cap)));
            m.insert("allowed".into(), json!(allowed));
            m.insert("user_ns".into(), userns_json(target));
            m.insert("cred_user_ns".into(), userns_json(cred_ns));
            m.insert("euid".into(), json!(euid));
        }
        EventKind::Klog { text } => {
            m.insert("text".into(), json!(text));
        }
        EventKind::Mounts {
            mnt_ns,
            user_ns,
            locked,
            created_by,
            from_source,
            mounts,
        } => {
            m.insert(
                "read_from".into(),
                json!(if *from_source { "source" } else { "new" }),
            );
            m.insert("mnt_ns".into(), json!(mnt_ns));
            m.insert("user_ns".into(), json!(user_ns));
            m.insert("locked".into(), json!(locked));
            m.insert("created_by".into(), json!(created_by));
            let list: Vec<Value> = mounts
                .iter()
                .map(|mt| {
                    json!({
                        "id": mt.id,
                        "parent": mt.parent,
                        "root": mt.root,
                        "mountpoint": mt.mountpoint,
                        "options": mt.options,
                        "fstype": mt.fstype,
                        "source": mt.source,
                        "kernel": mt.kernel.map(|k| json!({
                            "flags": k.flags,
                            "locked": k.locked(),
                            "locks": k.locks(),
                        })),
                    })
                })
                .collect();
            m.insert("mounts".into(), Value::Array(list));
        }
    }
    Value::Object(m)
}

/// `{"inum": N, "level": N, "owner": UID, "parent": N}`.
pub fn userns_json(u: &UserNsInfo) -> Value {
    json!({"inum": u.inum, "level": u.level, "owner": u.owner, "parent": u.parent})
}

/// `{"id", "runtime", "engine"?, "init_pid"?}`.
pub fn container_json(c: &crate::containers::Container) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(c.id));
    m.insert("runtime".into(), json!(c.runtime));
    if let Some(e) = &c.engine {
        m.insert("engine".into(), json!(e));
    }
    if let Some(p) = c.init_pid {
        m.insert("init_pid".into(), json!(p));
    }
    Value::Object(m)
}

/// A path argument of a failed call resolved to its mount.
pub fn target_json(t: &crate::event::TargetMount) -> Value {
    json!({
        "arg": t.arg,
        "path": t.path,
        "mnt_id": t.mnt_id,
        "parent_id": t.parent_id,
        "mnt_ns": t.mnt_ns,
        "mount_root": t.mount_root,
        "shared": t.shared,
        "parent_shared": t.parent_shared,
        "mnt_flags": format!("{:#x}", t.flags),
        "via_pid": t.via_pid,
    })
}

/// The caller's state recorded with a syscall.
pub fn state_json(st: &TaskState) -> Value {
    json!({
        "user_ns": userns_json(&st.user_ns),
        "euid": st.euid,
        "threads": st.nr_threads,
        "seccomp_mode": st.seccomp_mode,
        "pidns_level": st.pidns_level,
        "owners": {"mnt": st.mntns_owner, "pid": st.pidns_owner, "net": st.netns_owner},
        "egid": st.egid,
        "ids_mapped": {"uid": st.uid_map.maps(st.euid), "gid": st.gid_map.maps(st.egid)},
        "chrooted": st.root.chrooted(),
    })
}

/// The `explanation` object of a failed call.
pub fn explanation_json(e: &Explanation) -> Value {
    let evidence: Vec<Value> = e
        .evidence
        .iter()
        .map(|ev| match ev {
            Evidence::Event { seq, what } => json!({"seq": seq, "what": what}),
            Evidence::Fact(f) => json!({"fact": f}),
        })
        .collect();
    let mut m = Map::new();
    m.insert("cause".into(), json!(e.cause.code()));
    m.insert("text".into(), json!(e.text));
    m.insert("evidence".into(), Value::Array(evidence));
    m.insert("hint".into(), json!(e.hint));
    if let Some(cap) = &e.capability {
        m.insert("capability".into(), json!(cap));
    }
    if !e.mounts.is_empty() {
        m.insert("mounts".into(), json!(e.mounts));
    }
    if !e.flags.is_empty() {
        m.insert("flags".into(), json!(e.flags));
    }
    if let Some(u) = &e.user_ns {
        m.insert(
            "user_ns".into(),
            json!({"inum": u.inum, "level": u.level, "owner": u.owner}),
        );
    }
    Value::Object(m)
}

/// `{"user": N, ...}` with every namespace slot.
pub fn ns_json(ids: &NsIds) -> Value {
    let mut m = Map::new();
    for (name, inum) in NS_NAMES.iter().zip(ids.inum.iter()) {
        m.insert((*name).into(), json!(inum));
    }
    Value::Object(m)
}

fn arg_json(v: &ArgValue) -> Value {
    match v {
        ArgValue::Str { text, .. } => json!(text),
        ArgValue::Null => Value::Null,
        ArgValue::Unreadable { addr, error } => {
            json!({"addr": format!("{addr:#x}"), "error": error})
        }
        ArgValue::Int(i) => json!(i),
        ArgValue::Name(n) => json!(n),
        ArgValue::Flags(f) => json!(f),
        ArgValue::Ptr(p) => json!(format!("{p:#x}")),
        ArgValue::Struct(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), arg_json(v)))
                .collect(),
        ),
        ArgValue::Bytes(n) => json!({ "bytes": n }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Syscall;
    use crate::syscalls::RetKind;

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
