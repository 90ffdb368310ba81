//! The namespace hierarchy of a trace: user namespaces with their parents,
//! the namespaces each owns, and the processes seen in each. Built only from
//! what the trace shows; a namespace whose owner it does not show is listed
//! apart, never guessed.
//!
//! The kernel gives a new namespace the inode number of one that was freed,
//! so an id can stand for several namespaces in one trace. The model says
//! when a namespace is new ([`NsChange::first_seen`]); a new one under an id
//! that already has processes here is another node ([`NsRef::reuse`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use nstrace_common::{ns, NsIds, UserNsInfo};

use crate::event::{CapCheck, Event, EventKind, NS_NAMES};
use crate::model::NsChange;

/// One namespace of the trace: its inode number, and which of the
/// namespaces the kernel gave that number to (0: the first this trace saw).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsRef {
    /// Inode number (0: none).
    pub inum: u32,
    /// How many namespaces had this number before it in the trace.
    pub reuse: u32,
}

impl NsRef {
    /// The id as shown: the inode number, and for a reused one which
    /// namespace under it this is.
    fn label(&self) -> String {
        match self.reuse {
            0 => self.inum.to_string(),
            n => format!("{} (id reused, #{})", self.inum, n + 1),
        }
    }

    /// A Graphviz node id for a namespace of `kind`.
    fn dot_id(&self, kind: &str) -> String {
        match self.reuse {
            0 => format!("{kind}:{}", self.inum),
            n => format!("{kind}:{}#{}", self.inum, n + 1),
        }
    }
}

/// A user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNode {
    /// Parent (inode 0 for the initial one or if unknown).
    pub parent: NsRef,
    /// Level, if known.
    pub level: Option<u32>,
    /// Creator's uid, if known.
    pub owner_uid: Option<u32>,
}

/// The hierarchy.
#[derive(Debug, Default)]
pub struct Tree {
    /// User namespaces.
    pub users: BTreeMap<NsRef, UserNode>,
    /// Owner (user namespace) of each other namespace, `(type, namespace)`.
    pub owner: BTreeMap<(&'static str, NsRef), NsRef>,
    /// Every namespace seen, with the processes in it.
    pub members: BTreeMap<(&'static str, NsRef), BTreeSet<u32>>,
    /// Command name of each process.
    pub comms: BTreeMap<u32, crate::event::Comm>,
    /// How many times each `(type, inode)` was reused so far.
    reused: BTreeMap<(&'static str, u32), u32>,
    /// User namespaces named by capability checks, by thread, until that
    /// thread's call ends: the checks come before the line of the call that
    /// creates a namespace, and name the new one.
    pending: BTreeMap<u32, Vec<UserNsInfo>>,
}

/// The namespace type a slot of [`NsIds`] holds ("for children" slots hold
/// pid and time namespaces).
fn kind_of_slot(i: usize) -> &'static str {
    match i {
        ns::PID_FOR_CHILDREN => "pid",
        ns::TIME_FOR_CHILDREN => "time",
        _ => NS_NAMES[i],
    }
}

/// [`kind_of_slot`] for a type name as [`NsChange`] gives it.
fn kind_of_name(name: &'static str) -> &'static str {
    match name {
        "pid_for_children" => "pid",
        "time_for_children" => "time",
        other => other,
    }
}

impl Tree {
    /// The namespace `(kind, inum)` stands for now.
    fn at(&self, kind: &'static str, inum: u32) -> NsRef {
        NsRef {
            inum,
            reuse: self.reused.get(&(kind, inum)).copied().unwrap_or(0),
        }
    }

    /// A namespace the model says is new, under an id this tree has seen
    /// processes in: the kernel reused the id, and this is another node.
    fn new_namespaces(&mut self, changes: &[NsChange]) {
        for c in changes.iter().filter(|c| c.first_seen) {
            let kind = kind_of_name(c.kind);
            let current = self.at(kind, c.to);
            if self
                .members
                .get(&(kind, current))
                .is_some_and(|m| !m.is_empty())
            {
                *self.reused.entry((kind, c.to)).or_default() += 1;
            }
        }
    }

    fn user(&mut self, u: &UserNsInfo) {
        if u.inum == 0 {
            return;
        }
        let parent = if u.parent == 0 {
            NsRef::default()
        } else {
            self.at("user", u.parent)
        };
        let key = self.at("user", u.inum);
        let node = self.users.entry(key).or_default();
        node.parent = parent;
        node.level = Some(u.level);
        node.owner_uid = Some(u.owner);
        if parent.inum != 0 {
            self.users.entry(parent).or_default();
        }
    }

    fn member(&mut self, pid: u32, ids: &NsIds) {
        for (i, name) in NS_NAMES.iter().enumerate() {
            // The "for children" slots are where children go, not where the process is.
            if i >= ns::PID_FOR_CHILDREN || ids.inum[i] == 0 {
                continue;
            }
            let key = self.at(name, ids.inum[i]);
            self.members.entry((name, key)).or_default().insert(pid);
            if i == ns::USER {
                self.users.entry(key).or_default();
            }
        }
    }

    /// Namespaces that `after` has and `before` had not were created by one
    /// call; if it made a user namespace too, that one owns them (the kernel
    /// creates the user namespace first), else the caller's user namespace does.
    fn created(&mut self, before: &NsIds, after: &NsIds) {
        let owner = self.at("user", after.inum[ns::USER]);
        for i in 0..NS_NAMES.len() {
            if i == ns::USER || after.inum[i] == 0 || after.inum[i] == before.inum[i] {
                continue;
            }
            let kind = kind_of_slot(i);
            let key = self.at(kind, after.inum[i]);
            self.owner.entry((kind, key)).or_insert(owner);
        }
    }

    /// Takes in one event, with the namespace changes the model found in it.
    pub fn add(&mut self, ev: &Event, changes: &[NsChange]) {
        if let EventKind::Cap(CapCheck {
            target, cred_ns, ..
        }) = &ev.kind
        {
            self.pending
                .entry(ev.tid)
                .or_default()
                .extend([*target, *cred_ns]);
            return;
        }
        self.new_namespaces(changes);
        for u in self.pending.remove(&ev.tid).unwrap_or_default() {
            self.user(&u);
        }
        match &ev.kind {
            EventKind::Syscall(sc) => {
                self.comms.insert(ev.pid, ev.comm.clone());
                self.user(&sc.state.user_ns);
                self.member(ev.pid, &sc.ns);
                let st = &sc.state;
                if let Some(before) = &sc.ns_before {
                    for (kind, slot, owner) in [
                        ("mnt", ns::MNT, st.mntns_owner),
                        ("net", ns::NET, st.netns_owner),
                        ("pid", ns::PID, st.pidns_owner),
                    ] {
                        if owner != 0 {
                            let key = self.at(kind, before.inum[slot]);
                            let owner = self.at("user", owner);
                            self.owner.insert((kind, key), owner);
                        }
                    }
                    if sc.name != "setns" && sc.errno().is_none() {
                        self.created(before, &sc.ns);
                    }
                }
            }
            EventKind::Fork { ppid, ns: ids } => {
                self.comms.insert(ev.pid, ev.comm.clone());
                self.member(ev.pid, ids);
                let parent_ns = self
                    .members
                    .iter()
                    .find(|((k, _), pids)| *k == "user" && pids.contains(ppid))
                    .map(|((_, u), _)| *u);
                let child = self.at("user", ids.inum[ns::USER]);
                if let Some(parent_user) = parent_ns {
                    if parent_user != child {
                        self.users.entry(child).or_default().parent = parent_user;
                    }
                }
            }
            EventKind::Exec { ns: ids, .. } => {
                self.comms.insert(ev.pid, ev.comm.clone());
                self.member(ev.pid, ids);
            }
            EventKind::Mounts {
                mnt_ns, user_ns, ..
            } => {
                let key = self.at("mnt", *mnt_ns);
                let owner = self.at("user", *user_ns);
                self.owner.insert(("mnt", key), owner);
            }
            _ => {}
        }
    }

    /// Takes in what is still pending (checks whose call's line the trace
    /// does not have); call once all events are in.
    pub fn finish(&mut self) {
        for u in std::mem::take(&mut self.pending).into_values().flatten() {
            self.user(&u);
        }
    }

    fn procs(&self, key: &(&'static str, NsRef)) -> String {
        self.members
            .get(key)
            .map(|pids| {
                pids.iter()
                    .map(|p| match self.comms.get(p) {
                        Some(c) => format!("{p} ({})", crate::output::text::sanitize(c)),
                        None => p.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }

    fn user_label(&self, user: NsRef) -> String {
        let n = self.users.get(&user).cloned().unwrap_or_default();
        let id = user.label();
        match (n.level, n.owner_uid) {
            (Some(0), _) => format!("user {id} (initial)"),
            (Some(level), Some(uid)) => {
                format!("user {id} (level {level}, created by uid {uid})")
            }
            _ => format!("user {id}"),
        }
    }

    fn write_user(&self, out: &mut String, user: NsRef, depth: usize, seen: &mut BTreeSet<NsRef>) {
        if !seen.insert(user) {
            return;
        }
        let pad = "  ".repeat(depth);
        let procs = self.procs(&("user", user));
        let _ = writeln!(
            out,
            "{pad}{}{}",
            self.user_label(user),
            if procs.is_empty() {
                String::new()
            } else {
                format!(": {procs}")
            }
        );
        for ((kind, owned), owner) in &self.owner {
            if *owner == user {
                let procs = self.procs(&(kind, *owned));
                let _ = writeln!(
                    out,
                    "{pad}  {kind} {}{}",
                    owned.label(),
                    if procs.is_empty() {
                        String::new()
                    } else {
                        format!(": {procs}")
                    }
                );
            }
        }
        let children: Vec<NsRef> = self
            .users
            .iter()
            .filter(|(c, n)| n.parent == user && **c != user)
            .map(|(c, _)| *c)
            .collect();
        for c in children {
            self.write_user(out, c, depth + 1, seen);
        }
    }

    /// The indented tree.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut seen = BTreeSet::new();
        let roots: Vec<NsRef> = self
            .users
            .iter()
            .filter(|(_, n)| n.parent.inum == 0 || !self.users.contains_key(&n.parent))
            .map(|(u, _)| *u)
            .collect();
        for r in roots {
            self.write_user(&mut out, r, 0, &mut seen);
        }
        let orphans: Vec<&(&'static str, NsRef)> = self
            .members
            .keys()
            .filter(|k| k.0 != "user" && !self.owner.contains_key(k))
            .collect();
        if !orphans.is_empty() {
            out.push_str("namespaces whose owner this trace does not show:\n");
            for k in orphans {
                let _ = writeln!(out, "  {} {}: {}", k.0, k.1.label(), self.procs(k));
            }
        }
        out
    }

    /// Graphviz dot: user namespaces as boxes (parent -> child), the
    /// namespaces they own as ellipses.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph namespaces {\n  rankdir=LR;\n");
        for u in self.users.keys() {
            let _ = writeln!(
                out,
                "  \"{}\" [shape=box, label=\"{}\"];",
                u.dot_id("user"),
                self.user_label(*u)
            );
        }
        for (u, n) in &self.users {
            if n.parent.inum != 0 && self.users.contains_key(&n.parent) {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\";",
                    n.parent.dot_id("user"),
                    u.dot_id("user")
                );
            }
        }
        for ((kind, owned), owner) in &self.owner {
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{kind} {}\"];",
                owned.dot_id(kind),
                owned.label()
            );
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [style=dashed];",
                owner.dot_id("user"),
                owned.dot_id(kind)
            );
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExitStatus, Syscall};
    use crate::model::Model;
    use crate::syscalls::RetKind;
    use nstrace_common::TaskState;

    fn ids(user: u32, mnt: u32) -> NsIds {
        let mut n = NsIds { inum: [50; 10] };
        n.inum[ns::USER] = user;
        n.inum[ns::MNT] = mnt;
        n
    }

    fn first(inum: u32) -> NsRef {
        NsRef { inum, reuse: 0 }
    }

    /// Feeds `kind` of `pid` through the model into the tree, as `nstrace
    /// tree` does.
    fn feed(t: &mut Tree, m: &mut Model, seq: u64, pid: u32, comm: &str, kind: EventKind) {
        let ann = m.apply(Event {
            seq,
            ts_ns: seq,
            pid,
            tid: pid,
            comm: comm.into(),
            kind,
        });
        t.add(&ann.event, &ann.ns_changes);
    }

    fn unshare(before: NsIds, after: NsIds, user_ns: u32) -> EventKind {
        EventKind::Syscall(Syscall {
            name: "unshare".into(),
            nr: 272,
            args: vec![],
            ret: 0,
            ns: after,
            ns_before: Some(before),
            duration_ns: 0,
            no_entry: false,
            cap_repeats: 0,
            ret_kind: RetKind::Status,
            state: TaskState {
                user_ns: UserNsInfo {
                    inum: user_ns,
                    level: 0,
                    owner: 0,
                    parent: 0,
                },
                mntns_owner: user_ns,
                ..Default::default()
            },
            fd_ns: None,
            targets: Vec::new(),
        })
    }

    /// A capability check in child user namespace 2 (parent 1), made by `owner`.
    fn check_in_2(owner: u32) -> EventKind {
        let u = UserNsInfo {
            inum: 2,
            level: 1,
            owner,
            parent: 1,
        };
        EventKind::Cap(CapCheck {
            cap: 21,
            allowed: true,
            target: u,
            cred_ns: u,
            euid: 0,
        })
    }

    fn exited() -> EventKind {
        EventKind::Exit {
            ppid: 1,
            status: ExitStatus::Exited(0),
        }
    }

    #[test]
    fn unshare_newuser_newns_makes_a_child_owning_the_new_mount_ns() {
        let (mut t, mut m) = (Tree::default(), Model::new());
        feed(
            &mut t,
            &mut m,
            1,
            10,
            "unshare",
            unshare(ids(1, 11), ids(2, 20), 1),
        );
        // The child user namespace is only known by its inode so far; a
        // later check names its parent and level.
        feed(&mut t, &mut m, 2, 10, "mount", check_in_2(0));
        t.finish();
        assert_eq!(t.owner.get(&("mnt", first(20))), Some(&first(2)));
        assert_eq!(t.owner.get(&("mnt", first(11))), Some(&first(1)));
        let text = t.to_text();
        assert!(text.starts_with("user 1 (initial)\n  mnt 11\n  user 2 (level 1, created by uid 0): 10 (unshare)\n    mnt 20: 10 (unshare)\n"), "{text}");
        // Namespaces without a known owner are listed apart.
        assert!(
            text.contains("namespaces whose owner this trace does not show:\n  cgroup 50"),
            "{text}"
        );
        let dot = t.to_dot();
        assert!(dot.contains("\"user:1\" -> \"user:2\";"), "{dot}");
        assert!(
            dot.contains("\"user:2\" -> \"mnt:20\" [style=dashed];"),
            "{dot}"
        );
    }

    #[test]
    fn a_namespace_made_under_a_reused_id_is_another_node() {
        let (mut t, mut m) = (Tree::default(), Model::new());
        feed(
            &mut t,
            &mut m,
            1,
            10,
            "unshare",
            unshare(ids(1, 11), ids(1, 20), 1),
        );
        feed(&mut t, &mut m, 2, 10, "unshare", exited());
        // The kernel gives the next new mount namespace the freed id 20.
        feed(
            &mut t,
            &mut m,
            3,
            12,
            "unshare",
            unshare(ids(1, 11), ids(1, 20), 1),
        );
        // A child of the second is in the second, not in a third.
        let fork = EventKind::Fork {
            ppid: 12,
            ns: ids(1, 20),
        };
        feed(&mut t, &mut m, 4, 13, "child", fork);
        t.finish();
        let again = NsRef { inum: 20, reuse: 1 };
        assert_eq!(t.members[&("mnt", first(20))], BTreeSet::from([10]));
        assert_eq!(t.members[&("mnt", again)], BTreeSet::from([12, 13]));
        assert_eq!(t.owner.get(&("mnt", again)), Some(&first(1)));
        let text = t.to_text();
        assert!(
            text.contains(
                "  mnt 20: 10 (unshare)\n  mnt 20 (id reused, #2): 12 (unshare), 13 (child)\n"
            ),
            "{text}"
        );
        let dot = t.to_dot();
        assert!(
            dot.contains("\"user:1\" -> \"mnt:20#2\" [style=dashed];")
                && dot.contains("\"mnt:20#2\" [label=\"mnt 20 (id reused, #2)\"];"),
            "{dot}"
        );
        // The user namespace, never new, stays one node.
        assert_eq!(t.users.len(), 1, "{:?}", t.users);
    }

    #[test]
    fn checks_made_during_a_call_name_the_namespace_it_creates() {
        // As in a trace: a call's capability checks come before its line.
        let (mut t, mut m) = (Tree::default(), Model::new());
        feed(&mut t, &mut m, 1, 10, "unshare", check_in_2(0));
        feed(
            &mut t,
            &mut m,
            2,
            10,
            "unshare",
            unshare(ids(1, 11), ids(2, 20), 1),
        );
        feed(&mut t, &mut m, 3, 10, "unshare", exited());
        // User namespace id 2 again, made by uid 1000 this time.
        feed(&mut t, &mut m, 4, 12, "unshare", check_in_2(1000));
        feed(
            &mut t,
            &mut m,
            5,
            12,
            "unshare",
            unshare(ids(1, 11), ids(2, 20), 1),
        );
        t.finish();
        let again = NsRef { inum: 2, reuse: 1 };
        assert_eq!(t.users[&first(2)].owner_uid, Some(0));
        assert_eq!(t.users[&again].owner_uid, Some(1000));
        assert_eq!(t.users[&again].parent, first(1));
        let text = t.to_text();
        assert!(
            text.contains("  user 2 (level 1, created by uid 0): 10 (unshare)\n    mnt 20: 10 (unshare)\n")
                && text.contains("  user 2 (id reused, #2) (level 1, created by uid 1000): 12 (unshare)\n    mnt 20 (id reused, #2): 12 (unshare)\n"),
            "{text}"
        );
    }
}
