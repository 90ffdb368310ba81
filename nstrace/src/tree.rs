//! The namespace hierarchy of a trace: user namespaces with their parents,
//! the namespaces each owns, and the processes seen in each. Built only from
//! what the trace shows; a namespace whose owner it does not show is listed
//! apart, never guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use nstrace_common::{ns, NsIds, UserNsInfo};

use crate::event::{CapCheck, Event, EventKind, NS_NAMES};

/// A user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNode {
    /// Parent inode (0 for the initial one or if unknown).
    pub parent: u32,
    /// Level, if known.
    pub level: Option<u32>,
    /// Creator's uid, if known.
    pub owner_uid: Option<u32>,
}

/// The hierarchy.
#[derive(Debug, Default)]
pub struct Tree {
    /// User namespaces by inode.
    pub users: BTreeMap<u32, UserNode>,
    /// Owner (user namespace) of each other namespace, `(type, inode)`.
    pub owner: BTreeMap<(&'static str, u32), u32>,
    /// Every namespace seen, with the processes in it.
    pub members: BTreeMap<(&'static str, u32), BTreeSet<u32>>,
    /// Command name of each process.
    pub comms: BTreeMap<u32, String>,
}

impl Tree {
    fn user(&mut self, u: &UserNsInfo) {
        if u.inum == 0 {
            return;
        }
        let node = self.users.entry(u.inum).or_default();
        node.parent = u.parent;
        node.level = Some(u.level);
        node.owner_uid = Some(u.owner);
        if u.parent != 0 {
            self.users.entry(u.parent).or_default();
        }
    }

    fn member(&mut self, pid: u32, ids: &NsIds) {
        for (i, name) in NS_NAMES.iter().enumerate() {
            // The "for children" slots are where children go, not where the process is.
            if i >= ns::PID_FOR_CHILDREN || ids.inum[i] == 0 {
                continue;
            }
            self.members
                .entry((name, ids.inum[i]))
                .or_default()
                .insert(pid);
            if i == ns::USER {
                self.users.entry(ids.inum[i]).or_default();
            }
        }
    }

    /// Namespaces that `after` has and `before` had not were created by one
    /// call; if it made a user namespace too, that one owns them (the kernel
    /// creates the user namespace first), else the caller's user namespace does.
    fn created(&mut self, before: &NsIds, after: &NsIds) {
        let owner = after.inum[ns::USER];
        for (i, name) in NS_NAMES.iter().enumerate() {
            if i == ns::USER || after.inum[i] == 0 || after.inum[i] == before.inum[i] {
                continue;
            }
            // A "for children" namespace is a pid or time namespace.
            let kind = match i {
                ns::PID_FOR_CHILDREN => "pid",
                ns::TIME_FOR_CHILDREN => "time",
                _ => name,
            };
            self.owner.entry((kind, after.inum[i])).or_insert(owner);
        }
    }

    /// Takes in one event.
    pub fn add(&mut self, ev: &Event) {
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
                            self.owner.insert((kind, before.inum[slot]), owner);
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
                if let Some(parent_user) = parent_ns {
                    if parent_user != ids.inum[ns::USER] {
                        self.users.entry(ids.inum[ns::USER]).or_default().parent = parent_user;
                    }
                }
            }
            EventKind::Exec { ns: ids, .. } => {
                self.comms.insert(ev.pid, ev.comm.clone());
                self.member(ev.pid, ids);
            }
            EventKind::Cap(CapCheck {
                target, cred_ns, ..
            }) => {
                self.user(target);
                self.user(cred_ns);
            }
            EventKind::Mounts {
                mnt_ns, user_ns, ..
            } => {
                self.owner.insert(("mnt", *mnt_ns), *user_ns);
            }
            _ => {}
        }
    }

    fn procs(&self, key: &(&'static str, u32)) -> String {
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

    fn user_label(&self, inum: u32) -> String {
        let n = self.users.get(&inum).cloned().unwrap_or_default();
        match (n.level, n.owner_uid) {
            (Some(0), _) => format!("user {inum} (initial)"),
            (Some(level), Some(uid)) => {
                format!("user {inum} (level {level}, created by uid {uid})")
            }
            _ => format!("user {inum}"),
        }
    }

    fn write_user(&self, out: &mut String, inum: u32, depth: usize, seen: &mut BTreeSet<u32>) {
        if !seen.insert(inum) {
            return;
        }
        let pad = "  ".repeat(depth);
        let procs = self.procs(&("user", inum));
        let _ = writeln!(
            out,
            "{pad}{}{}",
            self.user_label(inum),
            if procs.is_empty() {
                String::new()
            } else {
                format!(": {procs}")
            }
        );
        for ((kind, ns_inum), owner) in &self.owner {
            if *owner == inum {
                let procs = self.procs(&(kind, *ns_inum));
                let _ = writeln!(
                    out,
                    "{pad}  {kind} {ns_inum}{}",
                    if procs.is_empty() {
                        String::new()
                    } else {
                        format!(": {procs}")
                    }
                );
            }
        }
        let children: Vec<u32> = self
            .users
            .iter()
            .filter(|(c, n)| n.parent == inum && **c != inum)
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
        let roots: Vec<u32> = self
            .users
            .iter()
            .filter(|(_, n)| n.parent == 0 || !self.users.contains_key(&n.parent))
            .map(|(u, _)| *u)
            .collect();
        for r in roots {
            self.write_user(&mut out, r, 0, &mut seen);
        }
        let orphans: Vec<&(&'static str, u32)> = self
            .members
            .keys()
            .filter(|k| k.0 != "user" && !self.owner.contains_key(k))
            .collect();
        if !orphans.is_empty() {
            out.push_str("namespaces whose owner this trace does not show:\n");
            for k in orphans {
                let _ = writeln!(out, "  {} {}: {}", k.0, k.1, self.procs(k));
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
                "  \"user:{u}\" [shape=box, label=\"{}\"];",
                self.user_label(*u)
            );
        }
        for (u, n) in &self.users {
            if n.parent != 0 && self.users.contains_key(&n.parent) {
                let _ = writeln!(out, "  \"user:{}\" -> \"user:{u}\";", n.parent);
            }
        }
        for ((kind, inum), owner) in &self.owner {
            let _ = writeln!(out, "  \"{kind}:{inum}\" [label=\"{kind} {inum}\"];");
            let _ = writeln!(
                out,
                "  \"user:{owner}\" -> \"{kind}:{inum}\" [style=dashed];"
            );
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Syscall;
    use crate::syscalls::RetKind;
    use nstrace_common::TaskState;

    fn ids(user: u32, mnt: u32) -> NsIds {
        let mut n = NsIds { inum: [50; 10] };
        n.inum[ns::USER] = user;
        n.inum[ns::MNT] = mnt;
        n
    }

    #[test]
    fn unshare_newuser_newns_makes_a_child_owning_the_new_mount_ns() {
        let mut t = Tree::default();
        let state = TaskState {
            user_ns: UserNsInfo {
                inum: 1,
                level: 0,
                owner: 0,
                parent: 0,
            },
            mntns_owner: 1,
            ..Default::default()
        };
        t.add(&Event {
            seq: 1,
            ts_ns: 0,
            pid: 10,
            tid: 10,
            comm: "unshare".into(),
            kind: EventKind::Syscall(Syscall {
                name: "unshare".into(),
                nr: 272,
                args: vec![],
                ret: 0,
                ns: ids(2, 20),
                ns_before: Some(ids(1, 11)),
                duration_ns: 0,
                no_entry: false,
                cap_repeats: 0,
                ret_kind: RetKind::Status,
                state,
                fd_ns: None,
                targets: Vec::new(),
            }),
        });
        // The child user namespace is only known by its inode so far; a
        // later check names its parent and level.
        t.add(&Event {
            seq: 2,
            ts_ns: 0,
            pid: 10,
            tid: 10,
            comm: "mount".into(),
            kind: EventKind::Cap(CapCheck {
                cap: 21,
                allowed: true,
                target: UserNsInfo {
                    inum: 2,
                    level: 1,
                    owner: 0,
                    parent: 1,
                },
                cred_ns: UserNsInfo {
                    inum: 2,
                    level: 1,
                    owner: 0,
                    parent: 1,
                },
                euid: 0,
            }),
        });
        assert_eq!(t.owner.get(&("mnt", 20)), Some(&2));
        assert_eq!(t.owner.get(&("mnt", 11)), Some(&1));
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
}
