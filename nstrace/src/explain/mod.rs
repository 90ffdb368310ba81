//! Why a call failed: the kernel's decisions made during the call (capability
//! checks, kernel log lines), the caller's state, and the model's history are
//! matched against rules drawn from the kernel-check catalogue. A rule only
//! fires on evidence; anything else is `unknown` with the facts listed.

pub mod rules;

use std::borrow::Cow;

use nstrace_common::UserNsInfo;

use crate::event::{CapCheck, Event, EventKind, Syscall};
use crate::idhash::IdMap;
use crate::model::{Annotated, Model};

/// Stable cause codes (documented in docs/explanations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A capability check failed.
    MissingCapability,
    /// The filesystem type cannot be mounted inside a user namespace.
    FsTypeNotUsernsMountable,
    /// A new proc/sysfs mount would reveal what locked mounts hide.
    MountTooRevealing,
    /// The mount is locked (MNT_LOCKED) in this namespace.
    LockedMount,
    /// The change would clear a locked mount flag.
    LockedMountFlags,
    /// A Linux security module refused the call.
    LsmDenied,
    /// A seccomp filter refused the call before it ran.
    SeccompDenied,
    /// A namespace count or depth limit was reached.
    NamespaceLimit,
    /// The caller has other threads.
    Multithreaded,
    /// setns into the caller's own user namespace.
    UsernsReentry,
    /// setns into a pid namespace that is not below the caller's.
    PidnsNotDescendant,
    /// A user-namespace id-mapping rule refused the call.
    IdmapRules,
    /// The caller's root directory is not its mount namespace's root.
    Chrooted,
    /// The mount the call names belongs to another mount namespace.
    NotInCallerMountNs,
    /// A mount involved is shared, which the call does not allow.
    SharedPropagation,
    /// Nothing matched on evidence.
    Unknown,
}

impl Cause {
    /// The code used in output.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingCapability => "missing_capability",
            Self::FsTypeNotUsernsMountable => "fs_type_not_userns_mountable",
            Self::MountTooRevealing => "mount_too_revealing",
            Self::LockedMount => "locked_mount",
            Self::LockedMountFlags => "locked_mount_flags",
            Self::LsmDenied => "lsm_denied",
            Self::SeccompDenied => "seccomp_denied",
            Self::NamespaceLimit => "namespace_limit",
            Self::Multithreaded => "multithreaded",
            Self::UsernsReentry => "userns_reentry",
            Self::PidnsNotDescendant => "pidns_not_descendant",
            Self::IdmapRules => "idmap_rules",
            Self::Chrooted => "chrooted",
            Self::NotInCallerMountNs => "not_in_caller_mount_ns",
            Self::SharedPropagation => "shared_propagation",
            Self::Unknown => "unknown",
        }
    }
}

/// One piece of evidence: an earlier event of the trace, or a fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// An event, by sequence number.
    Event {
        /// Its `seq`.
        seq: u64,
        /// What it shows.
        what: String,
    },
    /// A fact about the caller or the kernel (most are fixed texts: not
    /// copied per event).
    Fact(Cow<'static, str>),
}

/// A user namespace named in an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserNsRef {
    /// Inode number.
    pub inum: u32,
    /// Level (0 = initial).
    pub level: u32,
    /// Uid of its creator.
    pub owner: u32,
}

impl From<UserNsInfo> for UserNsRef {
    fn from(u: UserNsInfo) -> Self {
        Self {
            inum: u.inum,
            level: u.level,
            owner: u.owner,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The cause.
    pub cause: Cause,
    /// The reason in plain words.
    pub text: Cow<'static, str>,
    /// What shows it.
    pub evidence: Vec<Evidence>,
    /// What to change.
    pub hint: Option<Cow<'static, str>>,
    /// For `missing_capability`: the capability (`CAP_SYS_ADMIN`).
    pub capability: Option<String>,
    /// For `missing_capability`: the user namespace it was needed in.
    pub user_ns: Option<UserNsRef>,
    /// For `locked_mount`, `locked_mount_flags` and `mount_too_revealing`:
    /// the mounts concerned (mount points).
    pub mounts: Vec<String>,
    /// For `locked_mount_flags`: the locked flags the call would clear.
    pub flags: Vec<String>,
}

impl Explanation {
    /// An explanation with no cause-specific fields.
    pub fn new(
        cause: Cause,
        text: Cow<'static, str>,
        evidence: Vec<Evidence>,
        hint: Option<Cow<'static, str>>,
    ) -> Self {
        Self {
            cause,
            text,
            evidence,
            hint,
            capability: None,
            user_ns: None,
            mounts: Vec::new(),
            flags: Vec::new(),
        }
    }
}

/// A decision the kernel made while a call was in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A capability check.
    Cap {
        /// Event `seq`.
        seq: u64,
        /// The check.
        check: CapCheck,
    },
    /// A kernel log line.
    Klog {
        /// Event `seq`.
        seq: u64,
        /// The line.
        text: String,
    },
}

/// Which decision hooks the trace had: without them, the absence of a
/// decision proves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hooks {
    /// Capability checks were recorded.
    pub cap: bool,
    /// Kernel log lines were recorded.
    pub klog: bool,
    /// How capability checks were observed (`tracepoint`, `fexit`,
    /// `kprobe`), when they were.
    pub cap_via: Option<&'static str>,
    /// How syscalls were observed (`syscall_events`, `raw_syscalls`); it
    /// changes no explanation, only what tracing cost.
    pub syscalls_via: Option<&'static str>,
}

/// What a rule sees.
pub struct Ctx<'a> {
    /// The syscall event.
    pub event: &'a Event,
    /// The call.
    pub call: &'a Syscall,
    /// Its errno.
    pub errno: i32,
    /// Decisions made during the call, in order.
    pub decisions: &'a [Decision],
    /// The model, for the history of namespaces.
    pub model: &'a Model,
    /// The hooks the trace had.
    pub hooks: Hooks,
    /// The kernel reported lost records since the call was entered: the
    /// absence of a decision proves nothing then.
    pub lossy: bool,
}

impl Ctx<'_> {
    /// Capability checks during the call.
    pub fn caps(&self) -> impl DoubleEndedIterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|d| matches!(d, Decision::Cap { .. }))
    }

    /// Kernel log lines during the call, with their `seq`.
    pub fn klog(&self) -> impl Iterator<Item = (u64, &str)> {
        self.decisions.iter().filter_map(|d| match d {
            Decision::Klog { seq, text } => Some((*seq, text.as_str())),
            _ => None,
        })
    }

    /// A string argument of the call.
    pub fn str_arg(&self, name: &str) -> Option<&str> {
        self.call.args.iter().find_map(|(n, v)| match v {
            crate::event::ArgValue::Str { text, .. } if *n == name => Some(text.as_str()),
            _ => None,
        })
    }

    /// Flag names of an argument (for clone3, of `args.flags`).
    pub fn flags(&self, name: &str) -> Vec<&str> {
        use crate::event::ArgValue;
        for (n, v) in &self.call.args {
            match v {
                ArgValue::Flags(f) if *n == name => return f.iter().map(AsRef::as_ref).collect(),
                ArgValue::Struct(fields) => {
                    if let Some((_, ArgValue::Flags(f))) = fields.iter().find(|(k, _)| *k == name) {
                        return f.iter().map(AsRef::as_ref).collect();
                    }
                }
                _ => {}
            }
        }
        Vec::new()
    }
}

/// Gathers the decisions made during each call and explains failed calls.
#[derive(Debug, Default)]
pub struct Explainer {
    pending: IdMap<u32, Vec<(u64, Decision)>>,
    hooks: Hooks,
    /// Time of the last reported loss.
    last_loss_ts: Option<u64>,
}

impl Explainer {
    /// An explainer for a trace that had `hooks`.
    pub fn new(hooks: Hooks) -> Self {
        Self {
            pending: IdMap::default(),
            hooks,
            last_loss_ts: None,
        }
    }

    /// Takes in one annotated event; returns the explanation if it is a failed call.
    pub fn observe(&mut self, ann: &Annotated, model: &Model) -> Option<Explanation> {
        let ev = &ann.event;
        match &ev.kind {
            EventKind::Cap(check) => {
                self.pending.entry(ev.tid).or_default().push((
                    ev.ts_ns,
                    Decision::Cap {
                        seq: ev.seq,
                        check: *check,
                    },
                ));
                None
            }
            EventKind::Klog { text } => {
                self.pending.entry(ev.tid).or_default().push((
                    ev.ts_ns,
                    Decision::Klog {
                        seq: ev.seq,
                        text: text.clone(),
                    },
                ));
                None
            }
            EventKind::Syscall(call) => {
                // Decisions recorded since the call was entered belong to it.
                let decisions: Vec<Decision> = self
                    .pending
                    .remove(&ev.tid)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(ts, _)| *ts >= ev.ts_ns)
                    .map(|(_, d)| d)
                    .collect();
                let errno = call.errno()?;
                let ctx = Ctx {
                    event: ev,
                    call,
                    errno,
                    decisions: &decisions,
                    model,
                    hooks: self.hooks,
                    lossy: self.last_loss_ts.is_some_and(|ts| ts >= ev.ts_ns),
                };
                Some(rules::explain(&ctx))
            }
            EventKind::Exit { .. } => {
                self.pending.remove(&ev.tid);
                None
            }
            EventKind::Lost { .. } => {
                self.last_loss_ts = Some(ev.ts_ns);
                None
            }
            _ => None,
        }
    }
}
