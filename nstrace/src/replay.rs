//! Reading a recorded NDJSON trace back into events, so that `explain` and
//! `tree` re-derive everything from the file alone (the inverse of
//! [`crate::output::ndjson`]). Input is untrusted: every malformed line is a
//! [`ReplayError`] naming what is wrong, and never a panic.

use nstrace_common::{ns, NsIds, TaskState, UserNsInfo};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::errnos::{capability_value, errno_value, signal_value};
use crate::event::{ArgValue, CapCheck, Event, EventKind, ExitStatus, Syscall, NS_NAMES};
use crate::explain::Hooks;
use crate::mounts::Mount;
use crate::syscalls::{self, ArgKind, RetKind};

/// Why a line could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplayError {
    /// Not JSON (or cut off).
    #[error("not JSON: {0}")]
    Json(String),
    /// Another format version.
    #[error("format version {0} is not supported (this nstrace reads version 1)")]
    Version(String),
    /// A field is missing or has the wrong type.
    #[error("field {0:?} is missing or malformed")]
    Field(&'static str),
    /// Unknown line type.
    #[error("unknown line type {0:?}")]
    Type(String),
}

/// What one line is.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// The trace's start: which decision hooks it had.
    Start {
        /// The hooks.
        hooks: Hooks,
    },
    /// An event (boxed: it is much larger than the other variants).
    Event(Box<Event>),
    /// The summary (ignored by replay).
    Summary,
}

type R<T> = Result<T, ReplayError>;

fn obj(v: &Value) -> R<&Map<String, Value>> {
    v.as_object().ok_or(ReplayError::Field("(line)"))
}

fn u64_of(m: &Map<String, Value>, k: &'static str) -> R<u64> {
    m.get(k)
        .and_then(Value::as_u64)
        .ok_or(ReplayError::Field(k))
}

fn u32_of(m: &Map<String, Value>, k: &'static str) -> R<u32> {
    u32::try_from(u64_of(m, k)?).map_err(|_| ReplayError::Field(k))
}

fn i64_of(m: &Map<String, Value>, k: &'static str) -> R<i64> {
    m.get(k)
        .and_then(Value::as_i64)
        .ok_or(ReplayError::Field(k))
}

fn str_of<'a>(m: &'a Map<String, Value>, k: &'static str) -> R<&'a str> {
    m.get(k)
        .and_then(Value::as_str)
        .ok_or(ReplayError::Field(k))
}

/// An array of strings (non-strings in it are skipped).
fn strings_of(m: &Map<String, Value>, k: &'static str) -> R<Vec<String>> {
    Ok(m.get(k)
        .and_then(Value::as_array)
        .ok_or(ReplayError::Field(k))?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect())
}

fn bool_of(m: &Map<String, Value>, k: &'static str) -> R<bool> {
    m.get(k)
        .and_then(Value::as_bool)
        .ok_or(ReplayError::Field(k))
}

fn ns_of(v: Option<&Value>, k: &'static str) -> R<NsIds> {
    let m = v.and_then(Value::as_object).ok_or(ReplayError::Field(k))?;
    let mut ids = NsIds::default();
    for (i, name) in NS_NAMES.iter().enumerate() {
        ids.inum[i] = match m.get(*name) {
            Some(x) => x
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or(ReplayError::Field(k))?,
            // The "for children" slots are optional in format 1.
            None if i >= ns::PID_FOR_CHILDREN => 0,
            None => return Err(ReplayError::Field(k)),
        };
    }
    Ok(ids)
}

fn userns_of(v: Option<&Value>, k: &'static str) -> R<UserNsInfo> {
    let m = v.and_then(Value::as_object).ok_or(ReplayError::Field(k))?;
    Ok(UserNsInfo {
        inum: u32_of(m, "inum").map_err(|_| ReplayError::Field(k))?,
        level: u32_of(m, "level").map_err(|_| ReplayError::Field(k))?,
        owner: u32_of(m, "owner").map_err(|_| ReplayError::Field(k))?,
        parent: u32_of(m, "parent").map_err(|_| ReplayError::Field(k))?,
    })
}

fn state_of(v: Option<&Value>) -> R<TaskState> {
    let m = v
        .and_then(Value::as_object)
        .ok_or(ReplayError::Field("state"))?;
    let owners = m
        .get("owners")
        .and_then(Value::as_object)
        .ok_or(ReplayError::Field("state"))?;
    let f = |r: R<u32>| r.map_err(|_| ReplayError::Field("state"));
    Ok(TaskState {
        user_ns: userns_of(m.get("user_ns"), "state")?,
        euid: f(u32_of(m, "euid"))?,
        nr_threads: f(u32_of(m, "threads"))?,
        seccomp_mode: f(u32_of(m, "seccomp_mode"))?,
        pidns_level: f(u32_of(m, "pidns_level"))?,
        mntns_owner: f(u32_of(owners, "mnt"))?,
        pidns_owner: f(u32_of(owners, "pid"))?,
        netns_owner: f(u32_of(owners, "net"))?,
        egid: m
            .get("egid")
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .unwrap_or(0),
        uid_map: id_map_of(m, "uid"),
        gid_map: id_map_of(m, "gid"),
        root: root_of(m),
    })
}

/// A root state that answers `state.chrooted` as recorded (absent or null:
/// not known).
fn root_of(state: &Map<String, Value>) -> nstrace_common::RootState {
    use nstrace_common::RootState;
    match state.get("chrooted").and_then(Value::as_bool) {
        Some(chrooted) => RootState {
            read: 1,
            at_mount_root: u8::from(!chrooted),
            on_ns_root: 1,
            overmounted: 0,
        },
        None => RootState::default(),
    }
}

/// A map that answers `state.ids_mapped.{uid,gid}` as recorded: true (one
/// extent covering every id), false (no extent), or unknown (null, absent).
fn id_map_of(state: &Map<String, Value>, which: &str) -> nstrace_common::IdMap {
    use nstrace_common::IdMap;
    match state
        .get("ids_mapped")
        .and_then(|m| m.get(which))
        .and_then(Value::as_bool)
    {
        Some(true) => IdMap {
            nr_extents: 1,
            lower: [0; 5],
            count: [u32::MAX, 0, 0, 0, 0],
        },
        Some(false) => IdMap::default(),
        None => IdMap {
            nr_extents: u32::MAX,
            ..IdMap::default()
        },
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// A generic value (inside structs): arrays are flags, strings names.
fn generic_arg(v: &Value) -> ArgValue {
    match v {
        Value::Null => ArgValue::Null,
        Value::Number(n) => ArgValue::Int(n.as_i64().unwrap_or(0)),
        Value::String(s) => ArgValue::Name(s.clone().into()),
        Value::Array(a) => ArgValue::Flags(
            a.iter()
                .filter_map(|x| x.as_str().map(|s| s.to_string().into()))
                .collect(),
        ),
        Value::Bool(b) => ArgValue::Int(i64::from(*b)),
        Value::Object(o) => {
            if let (Some(addr), Some(err)) = (o.get("addr"), o.get("error")) {
                ArgValue::Unreadable {
                    addr: addr.as_str().and_then(hex).unwrap_or(0),
                    error: err.as_str().unwrap_or("EFAULT").to_string(),
                }
            } else if let Some(n) = o.get("bytes").and_then(Value::as_u64) {
                ArgValue::Bytes(n)
            } else {
                // Struct field names must be 'static: keep the known ones.
                const FIELDS: [&str; 7] = [
                    "flags",
                    "exit_signal",
                    "cgroup",
                    "attr_set",
                    "attr_clr",
                    "propagation",
                    "userns_fd",
                ];
                ArgValue::Struct(
                    FIELDS
                        .iter()
                        .filter_map(|k| o.get(*k).map(|v| (*k, generic_arg(v))))
                        .collect(),
                )
            }
        }
    }
}

fn arg_of(kind: ArgKind, v: &Value, truncated: bool) -> ArgValue {
    match (kind, v) {
        (ArgKind::Str | ArgKind::FsconfigValue, Value::String(s)) => ArgValue::Str {
            text: s.clone(),
            truncated,
        },
        (ArgKind::Ptr, Value::String(s)) => {
            hex(s).map_or(ArgValue::Name(s.clone().into()), ArgValue::Ptr)
        }
        _ => generic_arg(v),
    }
}

fn syscall_of(m: &Map<String, Value>) -> R<Syscall> {
    let name = str_of(m, "syscall")?;
    let def = syscalls::by_name(name);
    let no_entry = m.get("no_entry").and_then(Value::as_bool).unwrap_or(false);
    let truncated: Vec<&str> = m
        .get("truncated")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let args_obj = m
        .get("args")
        .and_then(Value::as_object)
        .ok_or(ReplayError::Field("args"))?;
    let mut args = Vec::new();
    if let Some(def) = def {
        for &(arg, kind) in def.args {
            if let Some(v) = args_obj.get(arg) {
                args.push((arg, arg_of(kind, v, truncated.contains(&arg))));
            }
        }
    }
    let user_ret = i64_of(m, "ret")?;
    let ret = match m.get("errno") {
        Some(Value::String(e)) => -i64::from(errno_value(e).ok_or(ReplayError::Field("errno"))?),
        Some(Value::Null) | None => user_ret,
        Some(_) => return Err(ReplayError::Field("errno")),
    };
    Ok(Syscall {
        name: name.to_string().into(),
        nr: def.map_or(0, |d| d.nr),
        args,
        ret,
        ns: ns_of(m.get("ns"), "ns")?,
        ns_before: match m.get("ns_before") {
            Some(v) => Some(ns_of(Some(v), "ns_before")?),
            None => None,
        },
        duration_ns: m.get("duration_ns").and_then(Value::as_u64).unwrap_or(0),
        no_entry,
        cap_repeats: match m.get("cap_repeats") {
            None => 0,
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or(ReplayError::Field("cap_repeats"))?,
        },
        ret_kind: def.map_or(RetKind::Status, |d| d.ret),
        state: state_of(m.get("state"))?,
        fd_ns: match m.get("fd_ns") {
            None => None,
            Some(v) => Some(crate::event::NsRef {
                inum: v
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or(ReplayError::Field("fd_ns"))?,
                kind: m
                    .get("fd_ns_type")
                    .and_then(Value::as_str)
                    .and_then(|k| NS_NAMES.iter().find(|n| **n == k).copied()),
                level: m
                    .get("fd_ns_level")
                    .and_then(Value::as_u64)
                    .and_then(|x| u32::try_from(x).ok()),
            }),
        },
        targets: match m.get("targets") {
            None => Vec::new(),
            Some(v) => targets_of(v)?,
        },
    })
}

fn container_of(v: Option<&Value>) -> R<crate::containers::Container> {
    let bad = || ReplayError::Field("container");
    let m = v.and_then(Value::as_object).ok_or_else(bad)?;
    Ok(crate::containers::Container {
        id: str_of(m, "id").map_err(|_| bad())?.to_string(),
        runtime: str_of(m, "runtime").map_err(|_| bad())?.to_string(),
        engine: m.get("engine").and_then(Value::as_str).map(String::from),
        init_pid: m
            .get("init_pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok()),
    })
}

fn targets_of(v: &Value) -> R<Vec<crate::event::TargetMount>> {
    let bad = || ReplayError::Field("targets");
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|t| {
            let m = t.as_object().ok_or_else(bad)?;
            let num = |k: &'static str| u32_of(m, k).map_err(|_| bad());
            let flag = |k: &'static str| bool_of(m, k).map_err(|_| bad());
            Ok(crate::event::TargetMount {
                arg: str_of(m, "arg").map_err(|_| bad())?.to_string(),
                path: str_of(m, "path").map_err(|_| bad())?.to_string(),
                mnt_id: num("mnt_id")?,
                parent_id: num("parent_id")?,
                mnt_ns: num("mnt_ns")?,
                mount_root: flag("mount_root")?,
                shared: flag("shared")?,
                parent_shared: flag("parent_shared")?,
                flags: m
                    .get("mnt_flags")
                    .and_then(Value::as_str)
                    .and_then(hex)
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(bad)?,
                via_pid: num("via_pid")?,
            })
        })
        .collect()
}

fn mounts_of(v: Option<&Value>) -> R<Vec<Mount>> {
    let list = v
        .and_then(Value::as_array)
        .ok_or(ReplayError::Field("mounts"))?;
    list.iter()
        .map(|m| {
            let m = m.as_object().ok_or(ReplayError::Field("mounts"))?;
            let s = |k| str_of(m, k).map(String::from);
            Ok(Mount {
                id: u32_of(m, "id")?,
                parent: u32_of(m, "parent")?,
                root: s("root")?,
                mountpoint: s("mountpoint")?,
                options: strings_of(m, "options")?,
                fstype: s("fstype")?,
                source: s("source")?,
                kernel: match m.get("kernel") {
                    None | Some(Value::Null) => None,
                    Some(k) => Some(crate::mounts::KernelMount {
                        flags: k
                            .get("flags")
                            .and_then(Value::as_u64)
                            .and_then(|f| u32::try_from(f).ok())
                            .ok_or(ReplayError::Field("kernel"))?,
                    }),
                },
            })
        })
        .collect()
}

/// Parses one line of a recorded trace.
pub fn parse_line(line: &str) -> R<Line> {
    let v: Value = serde_json::from_str(line).map_err(|e| ReplayError::Json(e.to_string()))?;
    let m = obj(&v)?;
    match m.get("v") {
        Some(x) if x.as_u64() == Some(1) => {}
        Some(x) => return Err(ReplayError::Version(x.to_string())),
        None => return Err(ReplayError::Field("v")),
    }
    let ty = str_of(m, "type")?;
    let kind = match ty {
        "start" => {
            let h = m
                .get("hooks")
                .and_then(Value::as_object)
                .ok_or(ReplayError::Field("hooks"))?;
            return Ok(Line::Start {
                hooks: Hooks {
                    cap: bool_of(h, "cap")?,
                    klog: bool_of(h, "klog")?,
                    cap_via: h.get("cap_via").and_then(Value::as_str).and_then(|v| {
                        ["tracepoint", "fexit", "kprobe"]
                            .into_iter()
                            .find(|k| *k == v)
                    }),
                    syscalls_via: h.get("syscalls_via").and_then(Value::as_str).and_then(|v| {
                        crate::probes::SYSCALL_HOOK_NAMES
                            .into_iter()
                            .find(|k| *k == v)
                    }),
                },
            });
        }
        "summary" => return Ok(Line::Summary),
        "syscall" => EventKind::Syscall(syscall_of(m)?),
        "fork" => EventKind::Fork {
            ppid: u32_of(m, "ppid")?,
            ns: ns_of(m.get("ns"), "ns")?,
        },
        "container" => EventKind::Container(container_of(m.get("container"))?),
        "exec" => EventKind::Exec {
            ppid: u32_of(m, "ppid")?,
            filename: str_of(m, "filename")?.to_string(),
            argv: strings_of(m, "argv")?,
            argv_truncated: m.get("argv_truncated").is_some(),
            ns: ns_of(m.get("ns"), "ns")?,
            adopted: m.get("adopted").is_some(),
        },
        "exit" => EventKind::Exit {
            ppid: u32_of(m, "ppid")?,
            status: match (m.get("exit_code").and_then(Value::as_i64), m.get("signal")) {
                (Some(code), _) => ExitStatus::Exited(code as i32),
                (None, Some(Value::String(sig))) => ExitStatus::Signaled {
                    signal: signal_value(sig).ok_or(ReplayError::Field("signal"))?,
                    core_dumped: m
                        .get("core_dumped")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                },
                _ => return Err(ReplayError::Field("exit_code")),
            },
        },
        "lost" => EventKind::Lost {
            count: u64_of(m, "count")?,
        },
        "cap" => EventKind::Cap(CapCheck {
            cap: capability_value(str_of(m, "cap")?).ok_or(ReplayError::Field("cap"))?,
            allowed: bool_of(m, "allowed")?,
            target: userns_of(m.get("user_ns"), "user_ns")?,
            cred_ns: userns_of(m.get("cred_user_ns"), "cred_user_ns")?,
            euid: u32_of(m, "euid")?,
        }),
        "klog" => EventKind::Klog {
            text: str_of(m, "text")?.to_string(),
        },
        "mounts" => EventKind::Mounts {
            mnt_ns: u32_of(m, "mnt_ns")?,
            user_ns: u32_of(m, "user_ns")?,
            locked: bool_of(m, "locked")?,
            created_by: u64_of(m, "created_by")?,
            read_from: match m.get("read_from").and_then(Value::as_str) {
                Some(name) => crate::mounts::ReadFrom::from_name(name)
                    .ok_or(ReplayError::Field("read_from"))?,
                None => crate::mounts::ReadFrom::New,
            },
            mounts: mounts_of(m.get("mounts"))?.into(),
        },
        other => return Err(ReplayError::Type(other.to_string())),
    };
    Ok(Line::Event(Box::new(Event {
        seq: u64_of(m, "seq")?,
        ts_ns: u64_of(m, "ts_ns")?,
        pid: u32_of(m, "pid")?,
        tid: u32_of(m, "tid")?,
        comm: str_of(m, "comm")?.into(),
        kind,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::ndjson::{write_event, Repeats};

    fn round_trip(ev: &Event) -> Event {
        let mut line = Vec::new();
        write_event(&mut line, &mut Repeats::default(), ev, None, None).unwrap();
        match parse_line(std::str::from_utf8(&line).unwrap()) {
            Ok(Line::Event(back)) => *back,
            other => panic!("{other:?}"),
        }
    }

    fn failed_mount() -> Event {
        let sc = Syscall {
            name: "mount".into(),
            nr: syscalls::by_name("mount").unwrap().nr,
            args: vec![
                (
                    "source",
                    ArgValue::Str {
                        text: "proc".into(),
                        truncated: false,
                    },
                ),
                (
                    "target",
                    ArgValue::Str {
                        text: "/proc".into(),
                        truncated: true,
                    },
                ),
                ("fstype", ArgValue::Null),
                ("flags", ArgValue::Flags(vec!["MS_BIND".into()])),
                (
                    "data",
                    ArgValue::Unreadable {
                        addr: 0x10,
                        error: "EFAULT".into(),
                    },
                ),
            ],
            ret: -1,
            ns: NsIds { inum: [3; 10] },
            ns_before: None,
            duration_ns: 5,
            no_entry: false,
            cap_repeats: 13,
            ret_kind: RetKind::Status,
            state: TaskState {
                nr_threads: 2,
                mntns_owner: 9,
                ..Default::default()
            },
            fd_ns: Some(crate::event::NsRef {
                inum: 4026532000,
                kind: Some("pid"),
                level: Some(2),
            }),
            targets: vec![crate::event::TargetMount {
                arg: "target".into(),
                path: "/proc/9/root/mnt".into(),
                mnt_id: 67,
                parent_id: 45,
                mnt_ns: 4026532177,
                mount_root: true,
                shared: false,
                parent_shared: true,
                flags: 0x80_0020,
                via_pid: 7,
            }],
        };
        Event {
            seq: 4,
            ts_ns: 10,
            pid: 1,
            tid: 2,
            comm: "mount".into(),
            kind: EventKind::Syscall(sc),
        }
    }

    #[test]
    fn a_failed_mount_round_trips() {
        let ev = failed_mount();
        assert_eq!(round_trip(&ev), ev);
    }

    #[test]
    fn a_repeat_count_that_is_not_a_count_is_an_error() {
        let mut line = Vec::new();
        write_event(
            &mut line,
            &mut Repeats::default(),
            &failed_mount(),
            None,
            None,
        )
        .unwrap();
        let mut v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["cap_repeats"], 13);
        for bad in [serde_json::json!(-3), "13".into(), (1u64 << 40).into()] {
            v["cap_repeats"] = bad;
            assert_eq!(
                parse_line(&v.to_string()),
                Err(ReplayError::Field("cap_repeats")),
                "{v}"
            );
        }
    }

    #[test]
    fn decisions_and_process_life_round_trip() {
        let base = |seq, kind| Event {
            seq,
            ts_ns: 1,
            pid: 7,
            tid: 7,
            comm: "x".into(),
            kind,
        };
        for kind in [
            EventKind::Cap(CapCheck {
                cap: 21,
                allowed: false,
                target: UserNsInfo {
                    inum: 1,
                    level: 0,
                    owner: 0,
                    parent: 0,
                },
                cred_ns: UserNsInfo::default(),
                euid: 0,
            }),
            EventKind::Klog {
                text: "VFS: Mount too revealing".into(),
            },
            EventKind::Exit {
                ppid: 1,
                status: ExitStatus::Signaled {
                    signal: 9,
                    core_dumped: false,
                },
            },
            EventKind::Fork {
                ppid: 1,
                ns: NsIds { inum: [4; 10] },
            },
            EventKind::Lost { count: 3 },
        ] {
            let ev = base(2, kind);
            assert_eq!(round_trip(&ev), ev);
        }
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        assert!(matches!(
            parse_line("{\"v\":1,\"type\":\"sysc"),
            Err(ReplayError::Json(_))
        ));
        assert_eq!(parse_line("[]"), Err(ReplayError::Field("(line)")));
        assert_eq!(
            parse_line("{\"v\":2,\"type\":\"exit\"}"),
            Err(ReplayError::Version("2".into()))
        );
        assert_eq!(
            parse_line("{\"v\":1,\"type\":\"bogus\"}"),
            Err(ReplayError::Type("bogus".into()))
        );
        assert_eq!(
            parse_line("{\"v\":1,\"type\":\"exit\",\"seq\":1}"),
            Err(ReplayError::Field("ppid"))
        );
        assert_eq!(
            parse_line("{\"v\":1,\"type\":\"cap\",\"cap\":\"CAP_NOPE\"}"),
            Err(ReplayError::Field("cap"))
        );
    }
}
