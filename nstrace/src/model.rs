//! The process and namespace model, rebuilt from events: which processes are
//! alive with which parent, command line and namespaces, and which namespace
//! ids this trace has already seen. For each event it works out what changed
//! (the [`NsChange`]s shown in the timeline).

use std::collections::HashMap;

use nstrace_common::{ns, NsIds};

use crate::event::{Event, EventKind, NS_NAMES};
use crate::idhash::{IdMap, IdSet};

/// What the model knows of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// Parent's pid, when known.
    pub ppid: Option<u32>,
    /// Last known command line.
    pub argv: Vec<String>,
    /// Last known namespaces.
    pub ns: Option<NsIds>,
    /// The container it belongs to (its id), inherited from the runtime
    /// process that started it.
    pub container: Option<String>,
}

/// A namespace that a process moved into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsChange {
    /// Namespace type (`"mnt"`), as in [`NS_NAMES`].
    pub kind: &'static str,
    /// Inode before (0 if unknown).
    pub from: u32,
    /// Inode after.
    pub to: u32,
    /// True if the namespace is new to this trace: the event created it,
    /// or entered one made before the trace started. (A namespace created
    /// under the id of one seen before is new: the kernel reuses the inode
    /// number of a namespace that was freed.)
    pub first_seen: bool,
}

/// Where this trace first saw a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsOrigin {
    /// The event.
    pub seq: u64,
    /// The process.
    pub pid: u32,
    /// What happened: `unshare`, `setns`, `clone`, `clone3`, `fork`, `exec`.
    pub how: String,
    /// True if that event created the namespace (rather than entering one
    /// made before the trace).
    pub created: bool,
    /// The namespace of the same type the process was in before (0 if unknown).
    pub from: u32,
}

/// A mount table recorded when a mount namespace was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountTable {
    /// The `mounts` event.
    pub seq: u64,
    /// The event that created the namespace.
    pub created_by: u64,
    /// The owning user namespace.
    pub user_ns: u32,
    /// Whether the copy locked the mounts.
    pub locked: bool,
    /// Where the table came from.
    pub read_from: crate::mounts::ReadFrom,
    /// The mounts, the namespace's root first (the event's own).
    pub mounts: std::sync::Arc<[crate::mounts::Mount]>,
}

/// An event with what the model derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotated {
    /// The event.
    pub event: Event,
    /// Namespaces the process moved into with this event.
    pub ns_changes: Vec<NsChange>,
    /// Why the call failed, for failed syscalls.
    pub explanation: Option<crate::explain::Explanation>,
    /// The container the process belongs to.
    pub container: Option<crate::containers::Container>,
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events of every kind except losses.
    pub events: u64,
    /// Syscall events.
    pub syscalls: u64,
    /// Failed syscalls.
    pub failed: u64,
    /// Records the kernel could not deliver.
    pub lost: u64,
    /// Processes seen.
    pub processes: u64,
}

/// A container the trace follows.
#[derive(Debug, Clone)]
struct Tracked {
    info: crate::containers::Container,
    /// The runtime's state directory, where its init pid can be read.
    state_root: Option<String>,
}

/// The model.
#[derive(Debug, Default)]
pub struct Model {
    processes: IdMap<u32, Process>,
    seen_ns: IdSet<(usize, u32)>,
    /// The namespaces last added to `seen_ns` (most events repeat them).
    last_seen: NsIds,
    origins: IdMap<(&'static str, u32), NsOrigin>,
    mount_tables: IdMap<u32, MountTable>,
    seen_pids: IdSet<u32>,
    containers: HashMap<String, Tracked>,
    /// Running totals.
    pub counts: Counts,
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the model knows of `pid`, if it is alive.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid)
    }

    /// The container process `pid` belongs to.
    pub fn container_of(&self, pid: u32) -> Option<&crate::containers::Container> {
        let id = self.processes.get(&pid)?.container.as_ref()?;
        self.containers.get(id).map(|t| &t.info)
    }

    /// For a process of a container whose init pid is not known yet: the
    /// container's id and the runtime's state directory to read it from.
    pub fn init_unknown(&self, pid: u32) -> Option<(&str, &str)> {
        let id = self.processes.get(&pid)?.container.as_ref()?;
        let t = self.containers.get(id)?;
        if t.info.init_pid.is_some() {
            return None;
        }
        Some((id.as_str(), t.state_root.as_deref()?))
    }

    /// Where this trace first saw namespace `inum` of type `kind` (`"user"`).
    pub fn origin(&self, kind: &str, inum: u32) -> Option<&NsOrigin> {
        NS_NAMES
            .iter()
            .find(|n| **n == kind)
            .and_then(|k| self.origins.get(&(*k, inum)))
    }

    /// Processes the model knows to be in mount namespace `mnt_ns`.
    pub fn pids_in_mnt_ns(&self, mnt_ns: u32) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, p)| {
                p.ns.is_some_and(|n| n.inum[nstrace_common::ns::MNT] == mnt_ns)
            })
            .map(|(pid, _)| *pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The mount table recorded when mount namespace `mnt_ns` was created.
    pub fn mount_table(&self, mnt_ns: u32) -> Option<&MountTable> {
        self.mount_tables.get(&mnt_ns)
    }

    fn record_origins(&mut self, event: &Event, how: &str, created: bool, changes: &[NsChange]) {
        for c in changes.iter().filter(|c| c.first_seen) {
            self.origins.entry((c.kind, c.to)).or_insert(NsOrigin {
                seq: event.seq,
                pid: event.pid,
                how: how.to_string(),
                created,
                from: c.from,
            });
        }
    }

    /// Applies one event and returns it with its annotations.
    pub fn apply(&mut self, event: Event) -> Annotated {
        let mut ns_changes = Vec::new();
        if event.pid != 0 && self.seen_pids.insert(event.pid) {
            self.counts.processes += 1;
        }
        // The container of the process as it was before this event (an exit
        // forgets the process).
        let mut container = self.container_of(event.pid).cloned();
        match &event.kind {
            EventKind::Lost { count } => self.counts.lost += count,
            EventKind::Container(c) => {
                self.counts.events += 1;
                let t = self
                    .containers
                    .entry(c.id.clone())
                    .or_insert_with(|| Tracked {
                        info: c.clone(),
                        state_root: None,
                    });
                t.info.init_pid = t.info.init_pid.or(c.init_pid);
                container = Some(t.info.clone());
            }
            EventKind::Cap(_) | EventKind::Klog { .. } => self.counts.events += 1,
            EventKind::Mounts {
                mnt_ns,
                user_ns,
                locked,
                created_by,
                mounts,
                read_from,
            } => {
                self.counts.events += 1;
                self.mount_tables.insert(
                    *mnt_ns,
                    MountTable {
                        seq: event.seq,
                        created_by: *created_by,
                        user_ns: *user_ns,
                        locked: *locked,
                        read_from: *read_from,
                        mounts: std::sync::Arc::clone(mounts),
                    },
                );
            }
            EventKind::Syscall(sc) => {
                self.counts.events += 1;
                self.counts.syscalls += 1;
                if sc.errno().is_some() {
                    self.counts.failed += 1;
                }
                let before = sc
                    .ns_before
                    .or_else(|| self.processes.get(&event.pid).and_then(|p| p.ns));
                let created = crate::syscalls::by_nr(sc.nr)
                    .is_some_and(|d| d.ns_effect == crate::syscalls::NsEffect::Creates);
                if let Some(before) = before {
                    // unshare never enters a namespace: every one the caller
                    // moved to is new, whatever its id was before.
                    ns_changes = self.diff(&before, &sc.ns, |_, _| created);
                }
                self.forget_recreated(&ns_changes);
                self.record_origins(&event, &sc.name, created, &ns_changes);
                self.remember_all(&sc.ns);
                self.processes.entry(event.pid).or_default().ns = Some(sc.ns);
            }
            EventKind::Fork { ppid, ns } => {
                self.counts.events += 1;
                let parent = self.processes.get(ppid).cloned();
                if let Some(parent_ns) = parent.as_ref().and_then(|p| p.ns) {
                    ns_changes = self.diff(&parent_ns, ns, |i, to| {
                        self.clone_created(&parent_ns, i, to)
                    });
                }
                self.forget_recreated(&ns_changes);
                // A child born into namespaces its parent was not in: the
                // clone that made it created them.
                self.record_origins(&event, "clone", true, &ns_changes);
                self.remember_all(ns);
                let (argv, label) = parent.map(|p| (p.argv, p.container)).unwrap_or_default();
                self.processes.insert(
                    event.pid,
                    Process {
                        ppid: Some(*ppid),
                        argv,
                        ns: Some(*ns),
                        container: label,
                    },
                );
                container = self.container_of(event.pid).cloned();
            }
            EventKind::Exec { ppid, argv, ns, .. } => {
                self.counts.events += 1;
                let before = self.processes.get(&event.pid).and_then(|p| p.ns);
                if let Some(before) = before {
                    ns_changes = self.diff(&before, ns, |_, _| false);
                }
                self.remember_all(ns);
                let call = crate::containers::runtime_call(&event.comm, argv);
                let p = self.processes.entry(event.pid).or_default();
                p.ppid = Some(*ppid);
                p.argv = argv.clone();
                p.ns = Some(*ns);
                if let Some(call) = call {
                    p.container = Some(call.container.id.clone());
                    let t = self
                        .containers
                        .entry(call.container.id.clone())
                        .or_insert_with(|| Tracked {
                            info: call.container.clone(),
                            state_root: None,
                        });
                    t.state_root = t.state_root.take().or(call.state_root);
                    t.info.engine = t.info.engine.take().or(call.container.engine);
                    // conmon monitors; the OCI runtime it runs names the container's runtime.
                    if t.info.runtime == "conmon" {
                        t.info.runtime = call.container.runtime;
                    }
                    container = Some(t.info.clone());
                }
            }
            EventKind::Exit { .. } => {
                self.counts.events += 1;
                self.processes.remove(&event.pid);
            }
        }
        Annotated {
            event,
            ns_changes,
            explanation: None,
            container,
        }
    }

    fn remember_all(&mut self, ids: &NsIds) {
        if *ids == self.last_seen {
            return;
        }
        self.last_seen = *ids;
        for (i, &inum) in ids.inum.iter().enumerate() {
            if inum != 0 {
                self.seen_ns.insert((i, inum));
            }
        }
    }

    /// The namespaces that differ between `before` and `after`; `created`
    /// says whether the event made namespace `to` (of index `i`).
    fn diff(
        &self,
        before: &NsIds,
        after: &NsIds,
        created: impl Fn(usize, u32) -> bool,
    ) -> Vec<NsChange> {
        let mut out = Vec::new();
        for (i, kind) in NS_NAMES.iter().enumerate() {
            let (from, to) = (before.inum[i], after.inum[i]);
            if from != to && to != 0 {
                // pid and time "for children" move together with the call that
                // created them; the active pid/time of the caller never changes.
                out.push(NsChange {
                    kind,
                    from,
                    to,
                    first_seen: !self.seen_ns.contains(&(i, to)) || created(i, to),
                });
            }
        }
        out
    }

    /// Whether a child, in namespace `to` of index `i` where its parent
    /// (`parent_ns`) was not, got it from the clone that made it.
    /// Its pid and time namespaces are the parent's "for children" ones,
    /// which an earlier unshare made. An id seen before counts as made anew
    /// only if no process the model knows is in that namespace: a live one
    /// would mean it is the same namespace (a thread of the parent may have
    /// moved there without the model's process entry showing it).
    fn clone_created(&self, parent_ns: &NsIds, i: usize, to: u32) -> bool {
        let inherited = match i {
            ns::PID => parent_ns.inum[ns::PID_FOR_CHILDREN],
            ns::TIME => parent_ns.inum[ns::TIME_FOR_CHILDREN],
            _ => 0,
        };
        to != inherited
            && !self
                .processes
                .values()
                .any(|p| p.ns.is_some_and(|n| n.inum[i] == to))
    }

    /// Drops what the model knew of a namespace whose id an event reused for
    /// a new one (where it came from, its mount table): it was another
    /// namespace's, which is gone.
    fn forget_recreated(&mut self, changes: &[NsChange]) {
        for c in changes.iter().filter(|c| c.first_seen) {
            // A pid or time namespace is both what a process is in and, for
            // the process that made it, what its children will be in.
            let same_type: &[&'static str] = match c.kind {
                "pid" | "pid_for_children" => &["pid", "pid_for_children"],
                "time" | "time_for_children" => &["time", "time_for_children"],
                _ => &[c.kind],
            };
            for kind in same_type {
                self.origins.remove(&(*kind, c.to));
            }
            if c.kind == "mnt" {
                self.mount_tables.remove(&c.to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExitStatus, Syscall};
    use crate::syscalls::RetKind;
    use nstrace_common::ns;

    fn ids(base: u32) -> NsIds {
        NsIds {
            inum: [base; ns::COUNT],
        }
    }

    fn ev(seq: u64, pid: u32, kind: EventKind) -> Event {
        Event {
            seq,
            ts_ns: seq,
            pid,
            tid: pid,
            comm: "t".into(),
            kind,
        }
    }

    fn unshare(before: NsIds, after: NsIds) -> EventKind {
        ns_call("unshare", before, after)
    }

    fn setns(before: NsIds, after: NsIds) -> EventKind {
        ns_call("setns", before, after)
    }

    fn ns_call(name: &'static str, before: NsIds, after: NsIds) -> EventKind {
        EventKind::Syscall(Syscall {
            name: name.into(),
            nr: crate::syscalls::by_name(name).unwrap().nr,
            args: vec![],
            ret: 0,
            ns: after,
            ns_before: Some(before),
            duration_ns: 1,
            no_entry: false,
            cap_repeats: 0,
            ret_kind: RetKind::Status,
            state: nstrace_common::TaskState::default(),
            fd_ns: None,
            targets: Vec::new(),
        })
    }

    #[test]
    fn unshare_reports_new_namespaces() {
        let mut m = Model::new();
        m.apply(ev(
            1,
            10,
            EventKind::Fork {
                ppid: 1,
                ns: ids(100),
            },
        ));
        let mut after = ids(100);
        after.inum[ns::USER] = 200;
        after.inum[ns::MNT] = 201;
        let a = m.apply(ev(2, 10, unshare(ids(100), after)));
        assert_eq!(
            a.ns_changes,
            vec![
                NsChange {
                    kind: "user",
                    from: 100,
                    to: 200,
                    first_seen: true
                },
                NsChange {
                    kind: "mnt",
                    from: 100,
                    to: 201,
                    first_seen: true
                },
            ]
        );
        // A child forked into those namespaces: entering known ones.
        m.apply(ev(
            3,
            11,
            EventKind::Fork {
                ppid: 10,
                ns: after,
            },
        ));
        // A process going back (setns) to a namespace already seen.
        let a = m.apply(ev(4, 11, setns(after, ids(100))));
        assert!(a.ns_changes.iter().all(|c| !c.first_seen));
        assert_eq!(a.ns_changes.len(), 2);
        // The unshare is remembered as the creator of the new user namespace.
        let origin = m.origin("user", 200).unwrap();
        assert_eq!(
            (origin.seq, origin.pid, origin.created, origin.from),
            (2, 10, true, 100)
        );
        assert_eq!(origin.how, "unshare");
        assert!(m.origin("user", 999).is_none());
    }

    #[test]
    fn fork_compares_with_the_parent_and_exit_forgets() {
        let mut m = Model::new();
        m.apply(ev(
            1,
            10,
            EventKind::Fork {
                ppid: 1,
                ns: ids(100),
            },
        ));
        let mut child_ns = ids(100);
        child_ns.inum[ns::PID] = 300;
        let a = m.apply(ev(
            2,
            11,
            EventKind::Fork {
                ppid: 10,
                ns: child_ns,
            },
        ));
        assert_eq!(a.ns_changes.len(), 1);
        assert_eq!(a.ns_changes[0].kind, "pid");
        assert_eq!(m.process(11).unwrap().ppid, Some(10));
        m.apply(ev(
            3,
            11,
            EventKind::Exit {
                ppid: 10,
                status: ExitStatus::Exited(0),
            },
        ));
        assert!(m.process(11).is_none());
        assert_eq!(m.counts.processes, 2);
        assert_eq!(m.counts.events, 3);
    }

    fn fork(seq: u64, pid: u32, ppid: u32, ns: NsIds) -> Event {
        ev(seq, pid, EventKind::Fork { ppid, ns })
    }

    fn exit(seq: u64, pid: u32, ppid: u32) -> Event {
        ev(
            seq,
            pid,
            EventKind::Exit {
                ppid,
                status: ExitStatus::Exited(0),
            },
        )
    }

    fn table(seq: u64, pid: u32, mnt_ns: u32, created_by: u64) -> Event {
        ev(
            seq,
            pid,
            EventKind::Mounts {
                mnt_ns,
                user_ns: 100,
                locked: false,
                created_by,
                read_from: crate::mounts::ReadFrom::New,
                mounts: std::sync::Arc::from([]),
            },
        )
    }

    #[test]
    fn an_unshare_into_a_reused_id_makes_a_new_namespace() {
        // The kernel hands a freed namespace's inode number to the next
        // one: `nstrace-bench ns` made 2000 mount namespaces under 45 ids.
        let mut m = Model::new();
        m.apply(fork(1, 10, 1, ids(100)));
        let mut inside = ids(100);
        inside.inum[ns::MNT] = 201;
        m.apply(ev(2, 10, unshare(ids(100), inside)));
        m.apply(table(3, 10, 201, 2));
        assert_eq!(m.mount_table(201).unwrap().created_by, 2);
        m.apply(exit(4, 10, 1));
        m.apply(fork(5, 11, 1, ids(100)));
        let a = m.apply(ev(6, 11, unshare(ids(100), inside)));
        assert_eq!(
            a.ns_changes,
            vec![NsChange {
                kind: "mnt",
                from: 100,
                to: 201,
                first_seen: true
            }],
            "a new namespace: its table is read again"
        );
        assert!(
            m.mount_table(201).is_none(),
            "the old namespace's table is not the new one's"
        );
        let origin = m.origin("mnt", 201).unwrap();
        assert_eq!((origin.seq, origin.pid), (6, 11));
        // setns enters a namespace: an id seen before is the same one.
        m.apply(fork(7, 12, 1, ids(100)));
        let a = m.apply(ev(8, 12, setns(ids(100), inside)));
        assert!(!a.ns_changes[0].first_seen);
        assert_eq!(m.origin("mnt", 201).unwrap().seq, 6);
    }

    #[test]
    fn a_child_in_a_reused_id_is_new_only_if_no_known_process_is_in_it() {
        let mut m = Model::new();
        m.apply(fork(1, 10, 1, ids(100)));
        let mut inside = ids(100);
        inside.inum[ns::MNT] = 201;
        // Process 20 lives in mount namespace 201 (seen at its fork).
        m.apply(fork(2, 20, 10, inside));
        // A child of 10 born in 201 while 20 is there: the same namespace.
        let a = m.apply(fork(3, 11, 10, inside));
        assert!(!a.ns_changes[0].first_seen, "{:?}", a.ns_changes);
        assert_eq!(m.origin("mnt", 201).unwrap().seq, 2);
        m.apply(exit(4, 11, 10));
        m.apply(exit(5, 20, 1));
        // Nobody known is left in 201: a child born there got a new one.
        let a = m.apply(fork(6, 12, 10, inside));
        assert!(a.ns_changes[0].first_seen, "{:?}", a.ns_changes);
        assert_eq!(m.origin("mnt", 201).unwrap().seq, 6);
    }

    #[test]
    fn a_child_in_its_parents_pid_ns_for_children_did_not_create_it() {
        let mut m = Model::new();
        m.apply(fork(1, 10, 1, ids(100)));
        // Process 20 was born in pid namespace 300, and is gone.
        let mut old = ids(100);
        old.inum[ns::PID] = 300;
        old.inum[ns::PID_FOR_CHILDREN] = 300;
        m.apply(fork(2, 20, 10, old));
        assert_eq!(m.origin("pid", 300).unwrap().seq, 2);
        m.apply(exit(3, 20, 10));
        // 10 unshares a pid namespace that gets the id 300 again.
        let mut unshared = ids(100);
        unshared.inum[ns::PID_FOR_CHILDREN] = 300;
        let a = m.apply(ev(4, 10, unshare(ids(100), unshared)));
        assert!(a.ns_changes[0].first_seen);
        assert!(
            m.origin("pid", 300).is_none(),
            "what was known of the old pid namespace 300 is forgotten"
        );
        // Its child is born in it: the unshare made it, not the clone.
        let mut child = unshared;
        child.inum[ns::PID] = 300;
        let a = m.apply(fork(5, 11, 10, child));
        assert_eq!(a.ns_changes.len(), 1);
        assert!(!a.ns_changes[0].first_seen, "made by the unshare");
        assert_eq!(m.origin("pid_for_children", 300).unwrap().seq, 4);
        assert!(m.origin("pid", 300).is_none());
    }
}
