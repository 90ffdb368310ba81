//! The rules, one per cause, in the order they are tried; the first that
//! matches on evidence wins. Each cites the catalogue's condition (the row
//! ids of ../shared/notes/kernel-checks.md) in plain words.

use nstrace_common::UserNsInfo;

use super::{Cause, Ctx, Decision, Evidence, Explanation};
use crate::errnos::{capability_name, errno_name};
use crate::event::CapCheck;

/// errno values the rules look at.
const EPERM: i32 = 1;
const EINVAL: i32 = 22;
const ENOSPC: i32 = 28;
const EUSERS: i32 = 87;
/// `task->seccomp.mode` for a filter.
const SECCOMP_MODE_FILTER: u32 = 2;
/// Deepest user namespace level that may still get a child (UN2).
const MAX_USERNS_LEVEL: u32 = 32;
/// Deepest pid namespace level (UN10).
const MAX_PIDNS_LEVEL: u32 = 32;

/// One rule.
pub struct Rule {
    /// The cause it establishes.
    pub cause: Cause,
    /// The catalogue condition, in plain words.
    pub condition: &'static str,
    /// Returns the explanation when the evidence shows this cause.
    pub check: fn(&Ctx) -> Option<Explanation>,
}

/// Every rule, in the order tried.
pub static RULES: &[Rule] = &[
    Rule {
        cause: Cause::SeccompDenied,
        condition: "SC1: a seccomp filter returned an error for the syscall; it runs before \
                    the syscall's code, so the exit is seen without an entry, and the task's \
                    seccomp mode is 2 (filter)",
        check: seccomp_denied,
    },
    Rule {
        cause: Cause::MountTooRevealing,
        condition: "N4: the caller's mount namespace is not owned by the initial user \
                    namespace and holds no fully visible mount of the same type (proc, sysfs); \
                    the kernel logs \"VFS: Mount too revealing\"",
        check: mount_too_revealing,
    },
    Rule {
        cause: Cause::SharedPropagation,
        condition: "PR4: pivot_root when put_old's mount, new_root's parent or the current \
                    root's parent is shared; MV2: moving a mount whose parent is shared \
                    (EINVAL); the mounts' propagation read through the kernel after the call",
        check: shared_propagation,
    },
    Rule {
        cause: Cause::NotInCallerMountNs,
        condition: "U2, R1, RB1, MV3, PR3, OT3, MS6: the mount a path names belongs to a mount \
                    namespace other than the caller's (check_mnt) (EINVAL); the path is \
                    resolved as the caller sees it and the mount's namespace read through the \
                    kernel after the call",
        check: not_in_caller_mount_ns,
    },
    Rule {
        cause: Cause::LockedMount,
        condition: "U3: umount2 of a mount that is MNT_LOCKED, which every mount but the \
                    root is after its mount namespace was copied into a less privileged user \
                    namespace (UN13) (EINVAL)",
        check: locked_mount,
    },
    Rule {
        cause: Cause::LockedMountFlags,
        condition: "RB2: a remount,bind that would clear a flag locked by that copy \
                    (read-only, nodev, nosuid, noexec, atime) (EPERM, capability checks pass)",
        check: locked_mount_flags,
    },
    Rule {
        cause: Cause::FsTypeNotUsernsMountable,
        condition: "N1: a new mount of a filesystem type without FS_USERNS_MOUNT needs \
                    CAP_SYS_ADMIN in the initial user namespace; seen as a failed check against \
                    the initial user namespace from a caller in a child user namespace, where \
                    the mount namespace owner is not the initial one",
        check: fs_type_not_userns_mountable,
    },
    Rule {
        cause: Cause::MissingCapability,
        condition: "M1, N2, N3, UN1, CL3, SN3, SN6, SN7, SN9, U1, PR1, OT1, MM1, F1-F6, MS1: \
                    a capability check the call depends on failed",
        check: missing_capability,
    },
    Rule {
        cause: Cause::Multithreaded,
        condition: "UN0: unshare(CLONE_NEWUSER) from a thread group with other threads \
                    (EINVAL); SN10: setns into a time namespace from a multithreaded caller \
                    (EUSERS)",
        check: multithreaded,
    },
    Rule {
        cause: Cause::UsernsReentry,
        condition: "SN5: setns into the user namespace the caller is already in (EINVAL); \
                    the fd's namespace, identified in the kernel at entry, equals the \
                    caller's user namespace",
        check: userns_reentry,
    },
    Rule {
        cause: Cause::PidnsNotDescendant,
        condition: "SN8: setns into a pid namespace that is not the caller's active one or \
                    below it (EINVAL); shown when the target's level, read in the kernel at \
                    entry, is lower than the caller's, or equal but another namespace",
        check: pidns_not_descendant,
    },
    Rule {
        cause: Cause::Chrooted,
        condition: "UN4/CL5: creating a user namespace from a chrooted caller: its root \
                    directory is not the top of its mount namespace's root (current_chrooted) \
                    (EPERM); read in the kernel at entry from task->fs->root and mnt_ns->root",
        check: chrooted,
    },
    Rule {
        cause: Cause::IdmapRules,
        condition: "UN5/CL5: creating a user namespace needs the caller's euid and egid to be \
                    mapped in its current user namespace (EPERM); read in the kernel at entry \
                    from the uid_map and gid_map extents",
        check: idmap_rules,
    },
    Rule {
        cause: Cause::NamespaceLimit,
        condition: "UN2/UN10: user namespaces nest 32 levels deep below the initial one, pid \
                    namespaces 32; UN3/UN8: the per-user count limits user.max_*_namespaces \
                    (ENOSPC)",
        check: namespace_limit,
    },
    Rule {
        cause: Cause::LsmDenied,
        condition: "M0: the LSM sb_mount hook runs first in mount(2), before any capability \
                    check: EPERM with no capability check at all, and an entry (not seccomp)",
        check: lsm_denied,
    },
];

/// Explains a failed call: the first rule that matches, else `unknown`.
pub fn explain(ctx: &Ctx) -> Explanation {
    RULES
        .iter()
        .find_map(|r| (r.check)(ctx))
        .unwrap_or_else(|| unknown(ctx))
}

fn errno_text(errno: i32) -> String {
    errno_name(errno).map_or_else(|| errno.to_string(), String::from)
}

/// Appends `n` in decimal (as `{n}` would, without the formatting machinery:
/// the texts of `unknown` are made for every unexplained failure).
fn push_num(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends [`errno_text`].
fn push_errno(out: &mut String, errno: i32) {
    match errno_name(errno) {
        Some(name) => out.push_str(name),
        None => push_num(out, errno),
    }
}

fn userns_text(u: &UserNsInfo) -> String {
    let mut out = String::with_capacity(64);
    push_userns(&mut out, u);
    out
}

/// Appends [`userns_text`].
fn push_userns(out: &mut String, u: &UserNsInfo) {
    if u.level == 0 {
        out.push_str("the initial user namespace ");
        push_num(out, u.inum);
    } else {
        out.push_str("user namespace ");
        push_num(out, u.inum);
        out.push_str(" (level ");
        push_num(out, u.level);
        out.push_str(", created by uid ");
        push_num(out, u.owner);
        out.push(')');
    }
}

/// Evidence that this trace saw namespace `inum` of `kind` being created or entered.
fn origin(ctx: &Ctx, kind: &str, inum: u32) -> Option<Evidence> {
    let o = ctx.model.origin(kind, inum)?;
    let what = if o.created {
        format!(
            "{} of pid {} created {kind} namespace {inum} (the caller was in {kind} namespace {} before)",
            o.how, o.pid, o.from
        )
    } else {
        format!("{} of pid {} entered {kind} namespace {inum}", o.how, o.pid)
    };
    Some(Evidence::Event { seq: o.seq, what })
}

/// A capability decision as evidence, saying how it was observed: the
/// kernel's own decision, seen directly by the hook in use.
fn cap_evidence(ctx: &Ctx, seq: u64, check: &CapCheck) -> Evidence {
    Evidence::Event {
        seq,
        what: format!(
            "capability check{}: {} in {}: {}",
            match ctx.hooks.cap_via {
                Some(via) => format!(" (seen by {via} on cap_capable)"),
                None => String::new(),
            },
            capability_name(check.cap),
            userns_text(&check.target),
            if check.allowed { "granted" } else { "denied" }
        ),
    }
}

fn seccomp_denied(ctx: &Ctx) -> Option<Explanation> {
    let st = &ctx.call.state;
    if !ctx.call.no_entry || st.seccomp_mode != SECCOMP_MODE_FILTER {
        return None;
    }
    let name = &ctx.call.name;
    Some(Explanation::new(
        Cause::SeccompDenied,
        format!(
            "a seccomp filter refused {name} before it ran: the kernel's {name} code never \
             started (its exit came without an entry) and the task runs under a seccomp filter"
        ).into(),
        vec![
            Evidence::Fact(format!("{name} returned {} with no entry", errno_text(ctx.errno)).into()),
            Evidence::Fact("the task's seccomp mode is 2 (filter)".into()),
        ],
        Some(
            "container runtimes' default seccomp profiles refuse mount, umount2, unshare, setns, \
             pivot_root and the new mount API; allow the call in the profile \
             (--security-opt seccomp=PROFILE.json), or try --security-opt seccomp=unconfined to confirm"
                .into(),
        ),
    ))
}

fn mount_too_revealing(ctx: &Ctx) -> Option<Explanation> {
    if ctx.errno != EPERM {
        return None;
    }
    let line = ctx
        .klog()
        .find(|(_, t)| t.to_ascii_lowercase().contains("too revealing"));
    let st = &ctx.call.state;
    let fstype = ctx.str_arg("fstype").unwrap_or("proc or sysfs").to_string();
    let mnt = ctx.call.ns.inum[nstrace_common::ns::MNT];
    let mut evidence = Vec::new();
    match line {
        Some((seq, line)) => evidence.push(Evidence::Event {
            seq,
            what: format!("kernel log: {line}"),
        }),
        None => {
            // Without the kernel's line (6.1 and 6.12 print none; or no
            // printk hook), N4 is inferred from its conditions, each seen: a
            // new proc/sysfs mount, every capability check passed, a mount
            // namespace owned by a user namespace other than the initial
            // one, and locked masks in it.
            let granted_only = ctx.hooks.cap
                && !ctx.lossy
                && ctx.caps().next().is_some()
                && denied_cap(ctx).is_none();
            let not_init_owner = st.user_ns.level > 0 && st.mntns_owner == st.user_ns.inum;
            let masked = ctx
                .model
                .mount_table(mnt)
                .filter(|t| t.locked)
                .is_some_and(|t| !crate::mounts::masking_mounts(&t.mounts, &fstype).is_empty());
            if !is_new_mount(ctx)
                || !matches!(fstype.as_str(), "proc" | "sysfs")
                || !granted_only
                || !not_init_owner
                || !masked
            {
                return None;
            }
            evidence.push(Evidence::Fact(
                format!(
                    "inferred: the kernel's \"Mount too revealing\" line was not seen (older \
                 kernels do not print it{}), but each condition of \
                 the check was: a new {fstype} mount, every capability check granted, a mount \
                 namespace owned by {}, and locked mounts over {fstype} in it",
                    if ctx.hooks.klog {
                        ""
                    } else {
                        ": there is none here"
                    },
                    userns_text(&st.user_ns)
                )
                .into(),
            ));
        }
    }
    evidence.extend(origin(ctx, "mnt", mnt));
    evidence.extend(origin(ctx, "user", st.mntns_owner));
    let mut masks = Vec::new();
    if let Some(table) = ctx.model.mount_table(mnt).filter(|t| t.locked) {
        let found = crate::mounts::masking_mounts(&table.mounts, &fstype);
        if !found.is_empty() {
            evidence.push(Evidence::Event {
                seq: table.seq,
                what: format!(
                    "locked when the mount namespace was copied (#{}): {}",
                    table.created_by,
                    found
                        .iter()
                        .map(|m| format!("{}: {}", m.mountpoint, m.describe()))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            });
            masks = found.iter().map(|m| m.mountpoint.clone()).collect();
        }
    }
    let granted = ctx
        .caps()
        .filter(|d| matches!(d, Decision::Cap { check, .. } if check.allowed))
        .count();
    evidence.push(Evidence::Fact(
        format!(
            "the caller's mount namespace {mnt} is owned by user namespace {}; \
         {granted} capability check(s) during the call, all granted",
            st.mntns_owner
        )
        .into(),
    ));
    let named = if masks.is_empty() {
        String::new()
    } else {
        format!(": {}", masks.join(", "))
    };
    let mut e = Explanation::new(
        Cause::MountTooRevealing,
        format!(
            "the kernel refused a new {fstype} mount as too revealing: the caller's mount \
             namespace is owned by a user namespace other than the initial one, and every \
             {fstype} mount in it has locked mounts on top (masked paths{named}) or is locked \
             read-only, so a fresh {fstype} mount would show what those mounts hide. The mounts \
             were locked when the mount namespace was copied into the less privileged user \
             namespace."
        )
        .into(),
        evidence,
        Some(
            format!(
            "container runtimes mask /proc paths (/proc/keys, /proc/kcore, /proc/timer_list, ...) \
             with mounts that become locked in a new user namespace; run the container without \
             them (docker: --security-opt systempaths=unconfined; podman: --security-opt \
             unmask=ALL), or bind-mount the existing /{} instead of mounting a new one",
            if fstype == "sysfs" { "sys" } else { "proc" }
        )
            .into(),
        ),
    );
    e.mounts = masks;
    Some(e)
}

/// The mount at `path` in the locked table of the caller's mount namespace
/// (not the namespace's root), with the table.
fn locked_mount_at<'a>(
    ctx: &'a Ctx,
    path: &str,
) -> Option<(&'a crate::model::MountTable, &'a crate::mounts::Mount)> {
    let mnt = ctx.call.ns.inum[nstrace_common::ns::MNT];
    let table = ctx.model.mount_table(mnt).filter(|t| t.locked)?;
    let root = table.mounts.first()?.id;
    // The last mount at a path is the visible one.
    let m = table.mounts.iter().rev().find(|m| m.mountpoint == path)?;
    // The kernel's own flags decide when nstrace could read them; else the
    // copy rule: every mount but the root is locked (UN13).
    let locked = match &m.kernel {
        Some(k) => k.locked(),
        None => m.id != root,
    };
    locked.then_some((table, m))
}

fn lock_origin_text(table: &crate::model::MountTable, m: &crate::mounts::Mount) -> String {
    format!(
        "locked when #{} copied the mount namespace into user namespace {}{}",
        table.created_by,
        table.user_ns,
        match &m.kernel {
            Some(k) => format!(
                " (the kernel's mnt_flags say LOCKED, locks: {})",
                k.locks().join(", ")
            ),
            None if table.read_from == crate::mounts::ReadFrom::Source => {
                " (the table was read from the namespace it was copied from)".to_string()
            }
            None => String::new(),
        }
    )
}

fn locked_mount(ctx: &Ctx) -> Option<Explanation> {
    if ctx.call.name != "umount2" || ctx.errno != EINVAL {
        return None;
    }
    let path = ctx.str_arg("target")?;
    let (table, m) = locked_mount_at(ctx, path)?;
    let mut evidence = vec![Evidence::Event {
        seq: table.seq,
        what: format!(
            "{path} ({}) was {}",
            m.describe(),
            lock_origin_text(table, m)
        ),
    }];
    evidence.extend(origin(
        ctx,
        "mnt",
        ctx.call.ns.inum[nstrace_common::ns::MNT],
    ));
    let mut e = Explanation::new(
        Cause::LockedMount,
        format!(
            "{path} is a locked mount: it came with the mount namespace when that was copied \
             into a less privileged user namespace, and such mounts cannot be unmounted (or \
             moved) there, since that would reveal what they cover"
        )
        .into(),
        evidence,
        Some(
            "unmount it in the original namespace before creating the user namespace (for a \
             container: do not mask that path), or mount something on top of it instead"
                .into(),
        ),
    );
    e.mounts = vec![path.to_string()];
    Some(e)
}

fn locked_mount_flags(ctx: &Ctx) -> Option<Explanation> {
    if ctx.call.name != "mount" || ctx.errno != EPERM {
        return None;
    }
    let flags = ctx.flags("flags");
    if !(flags.contains(&"MS_REMOUNT") && flags.contains(&"MS_BIND")) {
        return None;
    }
    if denied_cap(ctx).is_some() {
        return None;
    }
    let path = ctx.str_arg("target")?;
    let (table, m) = locked_mount_at(ctx, path)?;
    let locked = m.locked_flags();
    let cleared: Vec<String> = [
        ("readonly", "MS_RDONLY"),
        ("nodev", "MS_NODEV"),
        ("nosuid", "MS_NOSUID"),
        ("noexec", "MS_NOEXEC"),
    ]
    .iter()
    .filter(|(lock, flag)| locked.contains(lock) && !flags.contains(flag))
    .map(|(lock, _)| lock.to_string())
    .collect();
    if cleared.is_empty() {
        return None;
    }
    let mut e = Explanation::new(
        Cause::LockedMountFlags,
        format!(
            "{path} has locked flags ({}) and this remount would clear {}: flags a mount had \
             when its namespace was copied into a less privileged user namespace stay locked there",
            locked.join(", "),
            cleared.join(", ")
        )
        .into(),
        vec![Evidence::Event {
            seq: table.seq,
            what: format!(
                "{path} ({}, options {}) was {}",
                m.describe(),
                m.options.join(","),
                lock_origin_text(table, m)
            ),
        }],
        Some(
            format!(
                "keep the locked flags in the remount (e.g. remount,bind,{}), or change them in \
             the original namespace before the copy",
                cleared
                    .iter()
                    .map(|f| if f == "readonly" { "ro" } else { f.as_str() })
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into(),
        ),
    );
    e.mounts = vec![path.to_string()];
    e.flags = cleared;
    Some(e)
}

/// The last denied capability check of the call, with its `seq`.
fn denied_cap(ctx: &Ctx) -> Option<(u64, CapCheck)> {
    ctx.caps().rev().find_map(|d| match d {
        Decision::Cap { seq, check } if !check.allowed => Some((*seq, *check)),
        _ => None,
    })
}

/// A mount(2) that creates a new superblock (no bind, remount, move or propagation change).
fn is_new_mount(ctx: &Ctx) -> bool {
    const NOT_NEW: [&str; 8] = [
        "MS_BIND",
        "MS_REMOUNT",
        "MS_MOVE",
        "MS_SHARED",
        "MS_PRIVATE",
        "MS_SLAVE",
        "MS_UNBINDABLE",
        "MS_REC",
    ];
    ctx.call.name == "mount" && !ctx.flags("flags").iter().any(|f| NOT_NEW.contains(f))
}

fn fs_type_not_userns_mountable(ctx: &Ctx) -> Option<Explanation> {
    if ctx.errno != EPERM || !is_new_mount(ctx) {
        return None;
    }
    let (seq, check) = denied_cap(ctx)?;
    let (cap, target, cred_ns) = (check.cap, check.target, check.cred_ns);
    let st = &ctx.call.state;
    let fstype = ctx.str_arg("fstype")?;
    let owner_rule = (fstype == "proc" && target.inum == st.pidns_owner)
        || (fstype == "sysfs" && target.inum == st.netns_owner);
    if target.level != 0 || cred_ns.level == 0 || target.inum == st.mntns_owner || owner_rule {
        return None;
    }
    let mut e = Explanation::new(
        Cause::FsTypeNotUsernsMountable,
        format!(
            "{fstype} cannot be mounted from inside a user namespace: the kernel checked {} in \
             the initial user namespace, which a filesystem type without FS_USERNS_MOUNT \
             requires, and the caller is in {}",
            capability_name(cap),
            userns_text(&cred_ns)
        )
        .into(),
        vec![cap_evidence(ctx, seq, &check)],
        Some(
            format!(
            "mount {fstype} from the initial user namespace (the host) and bind-mount it in, or \
             use a filesystem that user namespaces may mount (tmpfs, proc, sysfs, overlay, fuse)"
        )
            .into(),
        ),
    );
    e.capability = Some(capability_name(cap));
    e.user_ns = Some(target.into());
    Some(e)
}

fn missing_capability(ctx: &Ctx) -> Option<Explanation> {
    if ctx.errno != EPERM {
        return None;
    }
    let (seq, check) = denied_cap(ctx)?;
    let (cap, target, cred_ns, euid) = (check.cap, check.target, check.cred_ns, check.euid);
    let st = &ctx.call.state;
    let fstype = ctx.str_arg("fstype").unwrap_or("");
    let name = &ctx.call.name;
    let capn = capability_name(cap);
    let (whose, hint) = if is_new_mount(ctx) && fstype == "proc" && target.inum == st.pidns_owner {
        (
            "the user namespace that owns the caller's PID namespace (a proc mount belongs to a PID namespace)".to_string(),
            "create a PID namespace owned by the caller's user namespace and mount proc from a process \
             inside it (unshare -U -p -f --mount-proc, or add -p -f to the unshare)"
                .to_string(),
        )
    } else if is_new_mount(ctx) && fstype == "sysfs" && target.inum == st.netns_owner {
        (
            "the user namespace that owns the caller's network namespace (a sysfs mount belongs to a network namespace)".to_string(),
            "create a network namespace owned by the caller's user namespace first (unshare -n)".to_string(),
        )
    } else if target.inum == st.mntns_owner && target.inum != cred_ns.inum {
        (
            "the user namespace that owns the caller's mount namespace".to_string(),
            "a process has no capabilities in a user namespace above its own: create a mount \
             namespace owned by the caller's user namespace (unshare -m together with -U), or \
             make the call from the owning user namespace"
                .to_string(),
        )
    } else if target.inum == cred_ns.inum {
        (
            "the caller's own user namespace".to_string(),
            format!(
                "the process does not hold {capn} in its own user namespace (dropped, or not \
                 root there): run it with {capn}, e.g. as root without a capability-dropping \
                 wrapper, or map it to root in a new user namespace (unshare -r)"
            ),
        )
    } else if target.level < cred_ns.level {
        (
            format!("{}, an ancestor of the caller's", userns_text(&target)),
            "a process never has capabilities in its user namespace's ancestors: make the call \
             from the parent user namespace"
                .to_string(),
        )
    } else {
        (
            userns_text(&target),
            format!("the caller needs {capn} over {}", userns_text(&target)),
        )
    };
    let mut evidence = vec![cap_evidence(ctx, seq, &check)];
    evidence.extend(origin(ctx, "user", target.inum));
    evidence.push(Evidence::Fact(
        format!("the caller: euid {euid} in {}", userns_text(&cred_ns)).into(),
    ));
    let mut e = Explanation::new(
        Cause::MissingCapability,
        format!(
            "{name} needs {capn} in {whose} ({}); the caller (euid {euid}, in {}) does not have it there",
            userns_text(&target),
            userns_text(&cred_ns)
        ).into(),
        evidence,
        Some(hint.into()),
    );
    e.capability = Some(capn);
    e.user_ns = Some(target.into());
    Some(e)
}

fn multithreaded(ctx: &Ctx) -> Option<Explanation> {
    let threads = ctx.call.state.nr_threads;
    if threads <= 1 {
        return None;
    }
    let name = &*ctx.call.name;
    let flags = ctx.flags(if name == "setns" { "nstype" } else { "flags" });
    let applies = match (name, ctx.errno) {
        ("unshare", EINVAL) => flags.contains(&"CLONE_NEWUSER"),
        ("setns", EUSERS) => flags.contains(&"CLONE_NEWTIME"),
        _ => false,
    };
    if !applies {
        return None;
    }
    let what = if name == "unshare" {
        "unshare(CLONE_NEWUSER) needs a single-threaded caller"
    } else {
        "setns into a time namespace needs a single-threaded caller"
    };
    Some(Explanation::new(
        Cause::Multithreaded,
        format!("{what}, and this process had {threads} threads").into(),
        vec![Evidence::Fact(
            format!("{threads} threads in the caller's thread group at the call").into(),
        )],
        Some(
            "make the call before starting threads (or in a freshly forked child); \
             clone(CLONE_NEWUSER) is allowed from a multithreaded process"
                .into(),
        ),
    ))
}

/// The namespace fd of a setns that failed with EINVAL while asking for
/// namespace type `flag` (or any type, nstype 0).
fn setns_einval_into(ctx: &Ctx, flag: &str) -> Option<crate::event::NsRef> {
    if ctx.call.name != "setns" || ctx.errno != EINVAL {
        return None;
    }
    let types = ctx.flags("nstype");
    if !(types.is_empty() || types == [flag]) {
        return None;
    }
    ctx.call.fd_ns
}

fn userns_reentry(ctx: &Ctx) -> Option<Explanation> {
    let target = setns_einval_into(ctx, "CLONE_NEWUSER")?.inum;
    let own = ctx.call.state.user_ns;
    if target != own.inum {
        return None;
    }
    Some(Explanation::new(
        Cause::UsernsReentry,
        format!(
            "setns into {} is refused: it is the caller's own user namespace, and a task \
             cannot re-enter the user namespace it is in",
            userns_text(&own)
        )
        .into(),
        vec![Evidence::Fact(
            format!("the fd refers to user namespace {target}, the caller's own").into(),
        )],
        Some(
            "skip the setns when the target is already the current user namespace (compare \
             readlink /proc/self/ns/user with the target's); nsenter does this check itself"
                .into(),
        ),
    ))
}

fn pidns_not_descendant(ctx: &Ctx) -> Option<Explanation> {
    let target = setns_einval_into(ctx, "CLONE_NEWPID")?;
    let level = target.level.filter(|_| target.kind == Some("pid"))?;
    let own_level = ctx.call.state.pidns_level;
    let own = ctx.call.ns.inum[nstrace_common::ns::PID];
    let relation = if level < own_level {
        "above it (an ancestor)"
    } else if level == own_level && target.inum != own {
        "beside it (another namespace at the same level)"
    } else {
        // Deeper: a descendant or a cousin; without its ancestry, no claim.
        return None;
    };
    Some(Explanation::new(
        Cause::PidnsNotDescendant,
        format!(
            "setns into pid namespace {} (level {level}) is refused: a task may only enter its \
             active pid namespace ({own}, level {own_level}) or one below it, and this one is {relation}",
            target.inum
        ).into(),
        vec![Evidence::Fact(format!(
            "the fd refers to pid namespace {} at level {level}; the caller's active pid \
             namespace {own} is at level {own_level}",
            target.inum
        ).into())],
        Some(
            "enter the pid namespace from a process that is at or above it (for example from \
             the parent of the process whose namespace you want), not from inside a child"
                .into(),
        ),
    ))
}

/// Whether the call creates a user namespace (unshare, clone, clone3 with CLONE_NEWUSER).
fn creates_userns(ctx: &Ctx) -> bool {
    matches!(&*ctx.call.name, "unshare" | "clone" | "clone3")
        && ctx.flags("flags").contains(&"CLONE_NEWUSER")
}

fn chrooted(ctx: &Ctx) -> Option<Explanation> {
    if ctx.errno != EPERM || !creates_userns(ctx) {
        return None;
    }
    let root = ctx.call.state.root;
    if root.chrooted() != Some(true) {
        return None;
    }
    let why = if root.at_mount_root == 0 {
        "its root directory is a directory inside a mount, not the root of one"
    } else {
        "its root directory is the root of a mount that is not its mount namespace's root \
         (nor stacked on it)"
    };
    Some(Explanation::new(
        Cause::Chrooted,
        format!(
            "a chrooted process may not create a user namespace (it could use one to escape \
             the chroot), and the caller is chrooted: {why}"
        )
        .into(),
        vec![Evidence::Fact(
            format!(
            "read in the kernel at entry: the caller's root (task->fs->root) against its mount \
             namespace {}'s root: {why}",
            ctx.call.ns.inum[nstrace_common::ns::MNT]
        )
            .into(),
        )],
        Some(
            "create the user namespace before chroot, or use a mount namespace and \
             pivot_root instead of chroot (unshare -m, then pivot_root into the new root)"
                .into(),
        ),
    ))
}

/// `arg path` as text.
fn target_text(t: &crate::event::TargetMount) -> String {
    format!("{} {}", t.arg, t.path)
}

/// Evidence that a target was resolved through the kernel after the call.
fn target_evidence(t: &crate::event::TargetMount) -> Evidence {
    Evidence::Fact(
        format!(
            "read through the kernel after the call: {} resolves (as pid {} sees it) to mount {} \
         (parent {}) of mount namespace {}{}{}{}",
            target_text(t),
            t.via_pid,
            t.mnt_id,
            t.parent_id,
            t.mnt_ns,
            if t.mount_root {
                ", at its root"
            } else {
                ", inside it (not a mount point)"
            },
            if t.shared { ", shared" } else { "" },
            if t.parent_shared {
                ", parent shared"
            } else {
                ""
            },
        )
        .into(),
    )
}

fn shared_propagation(ctx: &Ctx) -> Option<Explanation> {
    if ctx.errno != EINVAL {
        return None;
    }
    let t = |arg: &str| ctx.call.targets.iter().find(|t| t.arg == arg);
    let culprits: Vec<(&crate::event::TargetMount, &str)> = match &*ctx.call.name {
        "pivot_root" => {
            let mut v = Vec::new();
            if let Some(old) = t("put_old").filter(|m| m.shared) {
                v.push((old, "put_old's mount is shared"));
            }
            if let Some(new) = t("new_root").filter(|m| m.parent_shared) {
                v.push((new, "new_root's parent mount is shared"));
            }
            if let Some(root) = t("root").filter(|m| m.parent_shared) {
                v.push((root, "the current root's parent mount is shared"));
            }
            v
        }
        // MV2: checked after check_mnt, the lock and the mount-point checks.
        "mount" if ctx.flags("flags").contains(&"MS_MOVE") => {
            let mnt = ctx.call.ns.inum[nstrace_common::ns::MNT];
            t("source")
                .filter(|m| m.parent_shared && m.mount_root && m.mnt_ns == mnt)
                .filter(|m| m.flags & nstrace_common::mnt_flags::LOCKED == 0)
                .filter(|_| t("target").is_some_and(|m| m.mnt_ns == mnt))
                .map(|m| vec![(m, "the moved mount's parent is shared")])
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    if culprits.is_empty() {
        return None;
    }
    let name = &ctx.call.name;
    let what: Vec<&str> = culprits.iter().map(|(_, w)| *w).collect();
    let mut e = Explanation::new(
        Cause::SharedPropagation,
        format!(
            "{name} refuses to move mounts out of or into a shared mount, since the change \
             would have to propagate to every peer of it: {}",
            what.join("; ")
        )
        .into(),
        culprits.iter().map(|(m, _)| target_evidence(m)).collect(),
        Some(
            "make the mounts private (or slaves) in this mount namespace first: mount \
             --make-rprivate / (or --make-rslave /, as container runtimes do), or create the \
             namespace with unshare -m --propagation private"
                .into(),
        ),
    );
    e.mounts = culprits.iter().map(|(m, _)| m.path.clone()).collect();
    Some(e)
}

fn not_in_caller_mount_ns(ctx: &Ctx) -> Option<Explanation> {
    if ctx.errno != EINVAL {
        return None;
    }
    let mnt = ctx.call.ns.inum[nstrace_common::ns::MNT];
    // umount2 checks that the path is a mount point first; a detached mount
    // (no namespace) is a case of its own.
    let foreign = ctx.call.targets.iter().find(|t| {
        t.mnt_ns != 0
            && t.mnt_ns != mnt
            && t.arg != "root"
            && (t.mount_root || ctx.call.name != "umount2")
    })?;
    let mut evidence = vec![target_evidence(foreign)];
    evidence.extend(origin(ctx, "mnt", foreign.mnt_ns));
    evidence.push(Evidence::Fact(
        format!("the caller is in mount namespace {mnt}").into(),
    ));
    let mut e = Explanation::new(
        Cause::NotInCallerMountNs,
        format!(
            "{} names mount {} of mount namespace {}, not of the caller's mount namespace \
             {mnt}: the kernel changes only mounts of the caller's own mount namespace (a path \
             through /proc/PID/root or a descriptor reaches mounts of others, but cannot \
             change them)",
            target_text(foreign),
            foreign.mnt_id,
            foreign.mnt_ns
        )
        .into(),
        evidence,
        Some(
            "make the call from inside that mount namespace (nsenter --mount=/proc/PID/ns/mnt \
             CMD, or setns(fd, CLONE_NEWNS) first)"
                .into(),
        ),
    );
    e.mounts = vec![foreign.path.clone()];
    Some(e)
}

fn idmap_rules(ctx: &Ctx) -> Option<Explanation> {
    if ctx.errno != EPERM || !creates_userns(ctx) {
        return None;
    }
    let st = &ctx.call.state;
    let unmapped: Vec<&str> = [
        ("uid", st.uid_map.maps(st.euid)),
        ("gid", st.gid_map.maps(st.egid)),
    ]
    .iter()
    .filter(|(_, m)| *m == Some(false))
    .map(|(n, _)| *n)
    .collect();
    if unmapped.is_empty() {
        return None;
    }
    let which = unmapped.join(" and ");
    Some(Explanation::new(
        Cause::IdmapRules,
        format!(
            "creating a user namespace needs the caller's uid and gid to be mapped in its \
             current user namespace, and its {which} has no mapping in {} (no {which}_map line \
             covers it)",
            userns_text(&st.user_ns)
        )
        .into(),
        vec![Evidence::Fact(
            format!(
                "euid {} in {}: {which} not covered by its id map",
                st.euid,
                userns_text(&st.user_ns)
            )
            .into(),
        )],
        Some(
            "write the parent's uid_map and gid_map first (unshare -r maps the caller to root; \
             newuidmap/newgidmap for a range), then create the nested user namespace"
                .into(),
        ),
    ))
}

fn namespace_limit(ctx: &Ctx) -> Option<Explanation> {
    let name = &*ctx.call.name;
    if ctx.errno != ENOSPC || !matches!(name, "unshare" | "clone" | "clone3") {
        return None;
    }
    let st = &ctx.call.state;
    let flags = ctx.flags("flags");
    let types: Vec<&str> = flags
        .iter()
        .filter_map(|f| f.strip_prefix("CLONE_NEW"))
        .collect();
    if types.is_empty() {
        return None;
    }
    let (text, fact) = if flags.contains(&"CLONE_NEWUSER") && st.user_ns.level >= MAX_USERNS_LEVEL {
        (
            format!(
                "user namespaces nest at most {MAX_USERNS_LEVEL} levels below the initial one, and \
                 the caller is already at level {}",
                st.user_ns.level
            ),
            format!(
                "the caller's user namespace is at level {}",
                st.user_ns.level
            ),
        )
    } else if flags.contains(&"CLONE_NEWPID") && st.pidns_level >= MAX_PIDNS_LEVEL {
        (
            format!(
                "pid namespaces nest at most {MAX_PIDNS_LEVEL} levels deep, and the caller's is at level {}",
                st.pidns_level
            ),
            format!("the caller's pid namespace is at level {}", st.pidns_level),
        )
    } else {
        (
            format!(
                "a per-user limit on the number of namespaces was reached \
                 (user.max_{{{}}}_namespaces, in the caller's user namespace or an ancestor)",
                types
                    .iter()
                    .map(|t| t.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!(
                "ENOSPC from {name} for {} namespaces; the caller's user namespace is at level {}",
                types.join(", "),
                st.user_ns.level
            ),
        )
    };
    Some(Explanation::new(
        Cause::NamespaceLimit,
        text.into(),
        vec![Evidence::Fact(fact.into())],
        Some(
            "see /proc/sys/user/max_*_namespaces (writable per user namespace by holders of \
             CAP_SYS_RESOURCE there) and how deep the namespaces already nest"
                .into(),
        ),
    ))
}

fn lsm_denied(ctx: &Ctx) -> Option<Explanation> {
    // Rests on an absence: not when records were lost.
    if ctx.call.name != "mount"
        || ctx.errno != EPERM
        || ctx.call.no_entry
        || !ctx.hooks.cap
        || ctx.lossy
    {
        return None;
    }
    if ctx.caps().next().is_some() {
        return None;
    }
    Some(Explanation::new(
        Cause::LsmDenied,
        "a Linux security module refused the mount: mount(2) asks the LSMs' sb_mount hook \
         before any capability check, and no capability was checked at all"
            .into(),
        vec![
            Evidence::Fact("no capability check during the call (the hook was active)".into()),
            Evidence::Fact("the call entered the kernel, so seccomp did not refuse it".into()),
        ],
        Some(
            "look at the task's LSM confinement: a Landlock sandbox refuses every mount, \
             AppArmor profiles (docker-default) deny mount, SELinux logs an AVC denial"
                .into(),
        ),
    ))
}

fn unknown(ctx: &Ctx) -> Explanation {
    let mut returned = String::with_capacity(ctx.call.name.len() + 24);
    returned.push_str(&ctx.call.name);
    returned.push_str(" returned ");
    push_errno(&mut returned, ctx.errno);
    let mut facts = Vec::with_capacity(4 + ctx.decisions.len() + ctx.call.targets.len());
    facts.push(Evidence::Fact(returned.into()));
    if ctx.lossy {
        facts.push(Evidence::Fact(
            "the kernel lost records while the call ran (the ring buffer was full): decisions may be missing"
                .into(),
        ));
    }
    if ctx.call.no_entry {
        facts.push(Evidence::Fact(
            format!(
                "the exit came without an entry; seccomp mode {}",
                ctx.call.state.seccomp_mode
            )
            .into(),
        ));
    }
    if ctx.hooks.cap {
        for d in ctx.decisions {
            if let Decision::Cap { seq, check } = d {
                facts.push(cap_evidence(ctx, *seq, check));
            }
        }
        if ctx.caps().next().is_none() {
            facts.push(Evidence::Fact("no capability check during the call".into()));
        }
    } else {
        facts.push(Evidence::Fact(
            "capability checks were not recorded on this kernel".into(),
        ));
    }
    for (seq, line) in ctx.klog() {
        facts.push(Evidence::Event {
            seq,
            what: format!("kernel log: {line}"),
        });
    }
    facts.extend(ctx.call.targets.iter().map(target_evidence));
    let st = &ctx.call.state;
    let mut caller = String::with_capacity(128);
    caller.push_str("the caller: euid ");
    push_num(&mut caller, st.euid);
    caller.push_str(" in ");
    push_userns(&mut caller, &st.user_ns);
    caller.push_str(", ");
    push_num(&mut caller, st.nr_threads);
    caller.push_str(" thread(s)");
    facts.push(Evidence::Fact(caller.into()));
    Explanation::new(
        Cause::Unknown,
        "no rule matched on the evidence recorded; the facts gathered are listed".into(),
        facts,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Ctx, Decision, Hooks};
    use super::*;
    use crate::event::{ArgValue, Event, EventKind, Syscall};
    use crate::model::Model;
    use crate::syscalls::RetKind;
    use nstrace_common::{NsIds, TaskState};

    const INIT: UserNsInfo = UserNsInfo {
        inum: 4026531837,
        level: 0,
        owner: 0,
        parent: 0,
    };
    const CHILD: UserNsInfo = UserNsInfo {
        inum: 4026532500,
        level: 1,
        owner: 0,
        parent: 4026531837,
    };

    #[test]
    fn texts_built_piece_by_piece_read_as_formatted() {
        assert_eq!(userns_text(&INIT), "the initial user namespace 4026531837");
        assert_eq!(
            userns_text(&CHILD),
            "user namespace 4026532500 (level 1, created by uid 0)"
        );
        for errno in [1, 22, 4000, -3] {
            let mut s = String::new();
            push_errno(&mut s, errno);
            assert_eq!(s, errno_text(errno));
        }
    }

    fn s(text: &str) -> ArgValue {
        ArgValue::Str {
            text: text.into(),
            truncated: false,
        }
    }

    fn flags(f: &[&str]) -> ArgValue {
        ArgValue::Flags(f.iter().map(|s| s.to_string().into()).collect())
    }

    fn call(
        name: &'static str,
        args: Vec<(&'static str, ArgValue)>,
        errno: i64,
        state: TaskState,
    ) -> Syscall {
        Syscall {
            name: name.into(),
            nr: 0,
            args,
            ret: -errno,
            ns: NsIds::default(),
            ns_before: None,
            duration_ns: 1,
            no_entry: false,
            cap_repeats: 0,
            ret_kind: RetKind::Status,
            state,
            fd_ns: None,
            targets: Vec::new(),
        }
    }

    fn unshare_newuser(errno: i64, state: TaskState) -> Syscall {
        call(
            "unshare",
            vec![("flags", flags(&["CLONE_NEWUSER"]))],
            errno,
            state,
        )
    }

    fn mount_proc(state: TaskState) -> Syscall {
        call(
            "mount",
            vec![
                ("source", s("proc")),
                ("target", s("/proc")),
                ("fstype", s("proc")),
                ("flags", flags(&[])),
                ("data", ArgValue::Null),
            ],
            1,
            state,
        )
    }

    /// Runs the rules on one call with decisions.
    fn run(sc: Syscall, decisions: Vec<Decision>, hooks: Hooks) -> Explanation {
        run_with(&Model::new(), sc, decisions, hooks)
    }

    /// A model that recorded a locked copy of mount namespace 77 (seq 5, made by seq 4).
    fn model_with_locked_table() -> Model {
        let mut model = Model::new();
        let mounts = crate::mounts::parse_mountinfo(
            "1 0 0:1 / / rw - ext4 /dev/vda rw\n\
             2 1 0:2 / /proc rw,nosuid - proc proc rw\n\
             3 2 0:5 /null /proc/keys rw,nosuid - devtmpfs udev rw\n\
             4 1 0:9 / /mnt ro,relatime - tmpfs none ro\n",
        );
        model.apply(Event {
            seq: 5,
            ts_ns: 0,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            kind: EventKind::Mounts {
                mnt_ns: 77,
                user_ns: CHILD.inum,
                locked: true,
                created_by: 4,
                read_from: crate::mounts::ReadFrom::New,
                mounts: mounts.into(),
            },
        });
        model
    }

    fn in_ns_77(mut sc: Syscall) -> Syscall {
        sc.ns.inum[nstrace_common::ns::MNT] = 77;
        sc
    }

    fn run_with(model: &Model, sc: Syscall, decisions: Vec<Decision>, hooks: Hooks) -> Explanation {
        let event = Event {
            seq: 9,
            ts_ns: 0,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            kind: EventKind::Syscall(sc.clone()),
        };
        let ctx = Ctx {
            event: &event,
            call: &sc,
            errno: sc.errno().unwrap(),
            decisions: &decisions,
            model,
            hooks,
            lossy: false,
        };
        explain(&ctx)
    }

    const ALL_HOOKS: Hooks = Hooks {
        cap: true,
        klog: true,
        cap_via: Some("fexit"),
        syscalls_via: Some("syscall_events"),
    };

    fn cap(seq: u64, allowed: bool, target: UserNsInfo, cred_ns: UserNsInfo) -> Decision {
        Decision::Cap {
            seq,
            check: CapCheck {
                cap: 21,
                allowed,
                target,
                cred_ns,
                euid: 0,
            },
        }
    }

    fn in_child_userns() -> TaskState {
        TaskState {
            user_ns: CHILD,
            nr_threads: 1,
            mntns_owner: CHILD.inum,
            pidns_owner: INIT.inum,
            netns_owner: INIT.inum,
            ..Default::default()
        }
    }

    #[test]
    fn seccomp_needs_both_signs() {
        let mut sc = mount_proc(TaskState {
            seccomp_mode: 2,
            ..Default::default()
        });
        sc.no_entry = true;
        sc.args.clear();
        assert_eq!(
            run(sc.clone(), vec![], ALL_HOOKS).cause,
            Cause::SeccompDenied
        );
        // An exit without entry but no filter: not seccomp.
        sc.state.seccomp_mode = 0;
        assert_eq!(run(sc, vec![], ALL_HOOKS).cause, Cause::Unknown);
    }

    #[test]
    fn too_revealing_from_the_kernel_line() {
        let d = vec![
            cap(3, true, CHILD, CHILD),
            Decision::Klog {
                seq: 4,
                text: "VFS: Mount too revealing".into(),
            },
        ];
        let e = run(mount_proc(in_child_userns()), d, ALL_HOOKS);
        assert_eq!(e.cause, Cause::MountTooRevealing);
        assert!(e.evidence.contains(&Evidence::Event {
            seq: 4,
            what: "kernel log: VFS: Mount too revealing".into()
        }));
        assert!(e.hint.unwrap().contains("systempaths=unconfined"));
    }

    #[test]
    fn too_revealing_names_the_locked_masks() {
        let model = model_with_locked_table();
        let d = vec![Decision::Klog {
            seq: 9,
            text: "VFS: Mount too revealing".into(),
        }];
        let e = run_with(
            &model,
            in_ns_77(mount_proc(in_child_userns())),
            d,
            ALL_HOOKS,
        );
        assert_eq!(e.cause, Cause::MountTooRevealing);
        assert_eq!(e.mounts, ["/proc/keys"]);
        assert!(e.evidence.iter().any(|ev| matches!(ev, Evidence::Event { seq: 5, what } if what.contains("/proc/keys: devtmpfs /null"))));
    }

    #[test]
    fn too_revealing_is_inferred_without_the_kernel_line_only_on_every_condition() {
        let model = model_with_locked_table();
        let granted = || vec![cap(3, true, CHILD, CHILD)];
        let e = run_with(
            &model,
            in_ns_77(mount_proc(in_child_userns())),
            granted(),
            ALL_HOOKS,
        );
        assert_eq!(e.cause, Cause::MountTooRevealing);
        assert_eq!(e.mounts, ["/proc/keys"]);
        assert!(e
            .evidence
            .iter()
            .any(|ev| matches!(ev, Evidence::Fact(f) if f.starts_with("inferred:"))));
        // Any condition missing: no claim.
        let denied = vec![cap(3, false, CHILD, CHILD)];
        let no_checks = vec![];
        for d in [denied, no_checks] {
            let e = run_with(
                &model,
                in_ns_77(mount_proc(in_child_userns())),
                d,
                ALL_HOOKS,
            );
            assert_ne!(e.cause, Cause::MountTooRevealing);
        }
        let no_cap_hook = Hooks {
            cap: false,
            ..ALL_HOOKS
        };
        let e = run_with(
            &model,
            in_ns_77(mount_proc(in_child_userns())),
            granted(),
            no_cap_hook,
        );
        assert_ne!(e.cause, Cause::MountTooRevealing);
        // Another mount namespace (no locked table), or a tmpfs.
        let e = run_with(&model, mount_proc(in_child_userns()), granted(), ALL_HOOKS);
        assert_ne!(e.cause, Cause::MountTooRevealing);
        let mut tmpfs = in_ns_77(mount_proc(in_child_userns()));
        tmpfs.args[2].1 = s("tmpfs");
        let e = run_with(&model, tmpfs, granted(), ALL_HOOKS);
        assert_ne!(e.cause, Cause::MountTooRevealing);
    }

    #[test]
    fn umount_einval_of_a_locked_mount() {
        let model = model_with_locked_table();
        let umount = |path: &str| {
            in_ns_77(call(
                "umount2",
                vec![("target", s(path)), ("flags", flags(&[]))],
                22,
                in_child_userns(),
            ))
        };
        let e = run_with(&model, umount("/proc/keys"), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::LockedMount);
        assert_eq!(e.mounts, ["/proc/keys"]);
        // Not a mount point in the table (U2 territory), or the root: no claim.
        assert_eq!(
            run_with(&model, umount("/proc/keys/x"), vec![], ALL_HOOKS).cause,
            Cause::Unknown
        );
        assert_eq!(
            run_with(&model, umount("/"), vec![], ALL_HOOKS).cause,
            Cause::Unknown
        );
        // Without a recorded table there is no evidence of a lock.
        assert_eq!(
            run(umount("/proc/keys"), vec![], ALL_HOOKS).cause,
            Cause::Unknown
        );
    }

    #[test]
    fn the_kernels_own_flags_override_the_copy_rule() {
        use crate::mounts::KernelMount;
        use nstrace_common::mnt_flags::{LOCKED, LOCK_ATIME};
        let with_kernel = |path: &str, flags: u32| {
            let mut model = model_with_locked_table();
            let table = model.mount_table(77).unwrap().clone();
            let mut mounts = table.mounts.to_vec();
            for m in mounts.iter_mut().filter(|m| m.mountpoint == path) {
                m.kernel = Some(KernelMount { flags });
            }
            model.apply(Event {
                seq: 6,
                ts_ns: 0,
                pid: 1,
                tid: 1,
                comm: "t".into(),
                kind: EventKind::Mounts {
                    mnt_ns: 77,
                    user_ns: table.user_ns,
                    locked: true,
                    created_by: 4,
                    read_from: crate::mounts::ReadFrom::New,
                    mounts: mounts.into(),
                },
            });
            model
        };
        let umount = |path: &str| {
            in_ns_77(call(
                "umount2",
                vec![("target", s(path)), ("flags", flags(&[]))],
                22,
                in_child_userns(),
            ))
        };
        // The kernel says /proc/keys is not locked: no claim.
        let model = with_kernel("/proc/keys", LOCK_ATIME);
        assert_eq!(
            run_with(&model, umount("/proc/keys"), vec![], ALL_HOOKS).cause,
            Cause::Unknown
        );
        // The kernel says the task's / is locked (its root is not the
        // namespace's root mount): that decides, and the evidence says so.
        let model = with_kernel("/", LOCKED | LOCK_ATIME);
        let e = run_with(&model, umount("/"), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::LockedMount);
        assert!(e.evidence.iter().any(|ev| matches!(ev, Evidence::Event { what, .. } if what.contains("the kernel's mnt_flags say LOCKED"))));
    }

    #[test]
    fn remount_bind_clearing_a_locked_flag() {
        let model = model_with_locked_table();
        let remount = |f: &[&str]| {
            in_ns_77(call(
                "mount",
                vec![
                    ("source", s("none")),
                    ("target", s("/mnt")),
                    ("fstype", ArgValue::Null),
                    ("flags", flags(f)),
                    ("data", ArgValue::Null),
                ],
                1,
                in_child_userns(),
            ))
        };
        let granted = vec![cap(3, true, CHILD, CHILD)];
        let e = run_with(
            &model,
            remount(&["MS_REMOUNT", "MS_BIND"]),
            granted.clone(),
            ALL_HOOKS,
        );
        assert_eq!(e.cause, Cause::LockedMountFlags);
        assert_eq!(e.flags, ["readonly"]);
        // Keeping MS_RDONLY clears nothing locked: the rule does not claim it.
        let e = run_with(
            &model,
            remount(&["MS_RDONLY", "MS_REMOUNT", "MS_BIND"]),
            granted,
            ALL_HOOKS,
        );
        assert_ne!(e.cause, Cause::LockedMountFlags);
    }

    #[test]
    fn proc_without_a_pid_namespace_needs_the_pidns_owner() {
        // unshare -Ur mount -t proc: the check is against the owner of the
        // (initial) pid namespace, not a filesystem-type restriction.
        let d = vec![cap(3, true, CHILD, CHILD), cap(4, false, INIT, CHILD)];
        let e = run(mount_proc(in_child_userns()), d, ALL_HOOKS);
        assert_eq!(e.cause, Cause::MissingCapability);
        assert_eq!(e.capability.as_deref(), Some("CAP_SYS_ADMIN"));
        assert_eq!(e.user_ns.unwrap().inum, INIT.inum);
        assert!(e.text.contains("PID namespace"), "{}", e.text);
        assert!(e.hint.unwrap().contains("-p -f"));
    }

    #[test]
    fn ext4_in_a_user_namespace_is_the_fs_type() {
        let mut sc = mount_proc(in_child_userns());
        sc.args[2].1 = s("ext4");
        let d = vec![cap(3, true, CHILD, CHILD), cap(4, false, INIT, CHILD)];
        let e = run(sc.clone(), d.clone(), ALL_HOOKS);
        assert_eq!(e.cause, Cause::FsTypeNotUsernsMountable);
        // The same failure in the initial mount namespace is may_mount.
        sc.state.mntns_owner = INIT.inum;
        let e = run(sc, vec![cap(4, false, INIT, CHILD)], ALL_HOOKS);
        assert_eq!(e.cause, Cause::MissingCapability);
        assert!(
            e.text.contains("owns the caller's mount namespace"),
            "{}",
            e.text
        );
    }

    #[test]
    fn capability_dropped_in_own_namespace() {
        let st = TaskState {
            user_ns: INIT,
            euid: 1000,
            nr_threads: 1,
            mntns_owner: INIT.inum,
            pidns_owner: INIT.inum,
            netns_owner: INIT.inum,
            ..Default::default()
        };
        let mut sc = mount_proc(st);
        sc.args[2].1 = s("tmpfs");
        let e = run(sc, vec![cap(5, false, INIT, INIT)], ALL_HOOKS);
        assert_eq!(e.cause, Cause::MissingCapability);
        assert!(e.text.contains("own user namespace"), "{}", e.text);
        assert!(e
            .evidence
            .iter()
            .any(|ev| matches!(ev, Evidence::Event { seq: 5, .. })));
    }

    #[test]
    fn unshare_newuser_from_threads() {
        let st = TaskState {
            nr_threads: 3,
            ..Default::default()
        };
        let sc = unshare_newuser(22, st);
        let e = run(sc.clone(), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::Multithreaded);
        assert!(e.text.contains("3 threads"));
        // Single-threaded EINVAL is something else.
        let mut one = sc;
        one.state.nr_threads = 1;
        assert_eq!(run(one, vec![], ALL_HOOKS).cause, Cause::Unknown);
    }

    #[test]
    fn setns_into_the_own_user_namespace() {
        let st = TaskState {
            user_ns: CHILD,
            nr_threads: 1,
            ..Default::default()
        };
        let mut sc = call(
            "setns",
            vec![
                ("fd", ArgValue::Int(3)),
                ("nstype", flags(&["CLONE_NEWUSER"])),
            ],
            22,
            st,
        );
        let user_fd = |inum| {
            Some(crate::event::NsRef {
                inum,
                kind: Some("user"),
                level: None,
            })
        };
        sc.fd_ns = user_fd(CHILD.inum);
        assert_eq!(
            run(sc.clone(), vec![], ALL_HOOKS).cause,
            Cause::UsernsReentry
        );
        // Another user namespace, or an unknown fd: no claim.
        sc.fd_ns = user_fd(INIT.inum);
        assert_eq!(run(sc.clone(), vec![], ALL_HOOKS).cause, Cause::Unknown);
        sc.fd_ns = None;
        assert_eq!(run(sc, vec![], ALL_HOOKS).cause, Cause::Unknown);
    }

    #[test]
    fn unshare_newuser_with_an_unmapped_uid() {
        let st = TaskState {
            user_ns: CHILD,
            nr_threads: 1,
            // Maps never written: no extents.
            ..Default::default()
        };
        let sc = unshare_newuser(1, st);
        let e = run(sc.clone(), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::IdmapRules);
        assert!(e.text.contains("uid and gid has no mapping"), "{}", e.text);
        // Mapped, or unknown: no claim.
        let all = nstrace_common::IdMap {
            nr_extents: 1,
            lower: [0; 5],
            count: [u32::MAX, 0, 0, 0, 0],
        };
        let mut mapped = sc.clone();
        mapped.state.uid_map = all;
        mapped.state.gid_map = all;
        assert_eq!(run(mapped, vec![], ALL_HOOKS).cause, Cause::Unknown);
        let mut unknown = sc;
        let many = nstrace_common::IdMap {
            nr_extents: 6,
            ..Default::default()
        };
        unknown.state.uid_map = many;
        unknown.state.gid_map = many;
        assert_eq!(run(unknown, vec![], ALL_HOOKS).cause, Cause::Unknown);
    }

    #[test]
    fn setns_into_a_pid_namespace_above_or_beside() {
        let st = TaskState {
            pidns_level: 1,
            nr_threads: 1,
            ..Default::default()
        };
        let setns_pid = |inum, level| {
            let mut sc = call(
                "setns",
                vec![
                    ("fd", ArgValue::Int(3)),
                    ("nstype", flags(&["CLONE_NEWPID"])),
                ],
                22,
                st,
            );
            sc.ns.inum[nstrace_common::ns::PID] = 500;
            sc.fd_ns = Some(crate::event::NsRef {
                inum,
                kind: Some("pid"),
                level: Some(level),
            });
            sc
        };
        let e = run(setns_pid(400, 0), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::PidnsNotDescendant);
        assert!(e.text.contains("an ancestor"), "{}", e.text);
        assert_eq!(
            run(setns_pid(501, 1), vec![], ALL_HOOKS).cause,
            Cause::PidnsNotDescendant
        );
        // Deeper: maybe a cousin, maybe not; and its own: never this rule.
        assert_eq!(
            run(setns_pid(600, 2), vec![], ALL_HOOKS).cause,
            Cause::Unknown
        );
        assert_eq!(
            run(setns_pid(500, 1), vec![], ALL_HOOKS).cause,
            Cause::Unknown
        );
    }

    #[test]
    fn enospc_on_unshare_is_a_limit_and_depth_is_named() {
        let st = TaskState {
            user_ns: UserNsInfo { level: 32, ..CHILD },
            nr_threads: 1,
            ..Default::default()
        };
        let sc = unshare_newuser(28, st);
        let e = run(sc.clone(), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::NamespaceLimit);
        assert!(e.text.contains("at most 32 levels"), "{}", e.text);
        let mut shallow = sc;
        shallow.state.user_ns.level = 1;
        let e = run(shallow, vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::NamespaceLimit);
        assert!(e.text.contains("user.max_{user}_namespaces"), "{}", e.text);
    }

    #[test]
    fn lsm_only_when_capability_checks_were_recorded() {
        let st = in_child_userns();
        let e = run(mount_proc(st), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::LsmDenied);
        // Without the capability hook, no check proves nothing.
        let e = run(mount_proc(st), vec![], Hooks::default());
        assert_eq!(e.cause, Cause::Unknown);
        assert!(e.evidence.contains(&Evidence::Fact(
            "capability checks were not recorded on this kernel".into()
        )));
    }

    #[test]
    fn lost_records_stop_rules_that_rest_on_an_absence() {
        let sc = mount_proc(in_child_userns());
        let model = Model::new();
        let event = Event {
            seq: 9,
            ts_ns: 100,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            kind: EventKind::Syscall(sc.clone()),
        };
        let ctx = Ctx {
            event: &event,
            call: &sc,
            errno: 1,
            decisions: &[],
            model: &model,
            hooks: ALL_HOOKS,
            lossy: true,
        };
        let e = explain(&ctx);
        assert_eq!(e.cause, Cause::Unknown);
        assert!(e
            .evidence
            .iter()
            .any(|ev| matches!(ev, Evidence::Fact(f) if f.contains("lost records"))));
    }

    #[test]
    fn the_explainer_marks_calls_entered_before_a_reported_loss() {
        use crate::model::Annotated;
        let mut x = super::super::Explainer::new(ALL_HOOKS);
        let model = Model::new();
        let ann = |seq, ts_ns, kind| Annotated {
            event: Event {
                seq,
                ts_ns,
                pid: 1,
                tid: 1,
                comm: "t".into(),
                kind,
            },
            ns_changes: vec![],
            explanation: None,
            container: None,
        };
        // A loss reported at t=150 while a mount entered at t=100 ran.
        assert!(x
            .observe(&ann(1, 150, EventKind::Lost { count: 2 }), &model)
            .is_none());
        let sc = mount_proc(in_child_userns());
        let e = x
            .observe(&ann(2, 100, EventKind::Syscall(sc.clone())), &model)
            .unwrap();
        assert_eq!(e.cause, Cause::Unknown, "no lsm_denied on a missing record");
        // A call entered after the loss is judged normally.
        let e = x
            .observe(&ann(3, 200, EventKind::Syscall(sc)), &model)
            .unwrap();
        assert_eq!(e.cause, Cause::LsmDenied);
    }

    #[test]
    fn all_caps_granted_and_no_kernel_line_is_unknown() {
        let e = run(
            mount_proc(in_child_userns()),
            vec![cap(3, true, CHILD, CHILD)],
            ALL_HOOKS,
        );
        assert_eq!(e.cause, Cause::Unknown);
        assert!(e
            .evidence
            .iter()
            .any(|ev| matches!(ev, Evidence::Event { seq: 3, .. })));
    }

    #[test]
    fn user_namespace_from_a_chroot() {
        use nstrace_common::RootState;
        let chrooted = RootState {
            read: 1,
            at_mount_root: 0,
            on_ns_root: 1,
            overmounted: 0,
        };
        // Unmapped ids too: the kernel checks the chroot first (UN4 before UN5).
        let st = TaskState {
            user_ns: INIT,
            nr_threads: 1,
            root: chrooted,
            ..Default::default()
        };
        let sc = unshare_newuser(1, st);
        let e = run(sc.clone(), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::Chrooted);
        assert!(e.text.contains("inside a mount"), "{}", e.text);
        // A bind mount as root: a mount root, not the namespace's.
        let mut bind = sc.clone();
        bind.state.root.at_mount_root = 1;
        bind.state.root.on_ns_root = 0;
        let e = run(bind, vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::Chrooted);
        assert!(
            e.text.contains("not its mount namespace's root"),
            "{}",
            e.text
        );
        // Not read, walk gave up, or overmounted: no claim.
        for root in [
            RootState::default(),
            RootState {
                on_ns_root: 2,
                at_mount_root: 1,
                ..chrooted
            },
            RootState {
                overmounted: 1,
                at_mount_root: 1,
                ..chrooted
            },
        ] {
            let mut unsure = sc.clone();
            unsure.state.root = root;
            assert_ne!(
                run(unsure, vec![], ALL_HOOKS).cause,
                Cause::Chrooted,
                "{root:?}"
            );
        }
        // Not a user namespace, or not EPERM: not this rule.
        let other = call(
            "unshare",
            vec![("flags", flags(&["CLONE_NEWNS"]))],
            1,
            sc.state,
        );
        assert_ne!(run(other, vec![], ALL_HOOKS).cause, Cause::Chrooted);
    }

    fn target(arg: &str, path: &str, mnt_ns: u32) -> crate::event::TargetMount {
        crate::event::TargetMount {
            arg: arg.into(),
            path: path.into(),
            mnt_id: 40,
            parent_id: 30,
            mnt_ns,
            mount_root: true,
            shared: false,
            parent_shared: false,
            flags: 0x20,
            via_pid: 7,
        }
    }

    fn umount(path: &str) -> Syscall {
        let mut sc = call(
            "umount2",
            vec![("target", s(path)), ("flags", flags(&[]))],
            22,
            TaskState::default(),
        );
        sc.ns.inum[nstrace_common::ns::MNT] = 77;
        sc
    }

    #[test]
    fn umount_of_another_namespaces_mount() {
        let mut sc = umount("/proc/9/root/mnt");
        sc.targets = vec![target("target", "/proc/9/root/mnt", 88)];
        let e = run(sc.clone(), vec![], ALL_HOOKS);
        assert_eq!(e.cause, Cause::NotInCallerMountNs);
        assert!(e.text.contains("mount namespace 88"), "{}", e.text);
        assert_eq!(e.mounts, vec!["/proc/9/root/mnt".to_string()]);
        // Its own namespace, a path inside a mount (umount2 checks that
        // first), a detached mount, or nothing resolved: no claim.
        for (ns, root) in [(77, true), (88, false), (0, true)] {
            let mut other = sc.clone();
            other.targets[0].mnt_ns = ns;
            other.targets[0].mount_root = root;
            assert_eq!(run(other, vec![], ALL_HOOKS).cause, Cause::Unknown);
        }
        let mut none = sc;
        none.targets.clear();
        assert_eq!(run(none, vec![], ALL_HOOKS).cause, Cause::Unknown);
    }

    fn pivot(targets: Vec<crate::event::TargetMount>) -> Syscall {
        let mut sc = call(
            "pivot_root",
            vec![("new_root", s("/new")), ("put_old", s("/new/old"))],
            22,
            TaskState::default(),
        );
        sc.ns.inum[nstrace_common::ns::MNT] = 77;
        sc.targets = targets;
        sc
    }

    #[test]
    fn pivot_root_with_shared_mounts() {
        let private = || {
            vec![
                target("new_root", "/new", 77),
                target("put_old", "/new/old", 77),
                target("root", "/", 77),
            ]
        };
        for (which, text) in [
            (0, "new_root's parent mount is shared"),
            (1, "put_old's mount is shared"),
            (2, "the current root's parent mount is shared"),
        ] {
            let mut t = private();
            if which == 1 {
                t[1].shared = true;
            } else {
                t[which].parent_shared = true;
            }
            let e = run(pivot(t), vec![], ALL_HOOKS);
            assert_eq!(e.cause, Cause::SharedPropagation);
            assert!(e.text.contains(text), "{}", e.text);
        }
        // new_root itself shared is not one of the kernel's conditions.
        let mut t = private();
        t[0].shared = true;
        assert_eq!(run(pivot(t), vec![], ALL_HOOKS).cause, Cause::Unknown);
        // All private, new_root in another namespace: PR3.
        let mut t = private();
        t[0].mnt_ns = 88;
        assert_eq!(
            run(pivot(t), vec![], ALL_HOOKS).cause,
            Cause::NotInCallerMountNs
        );
    }

    #[test]
    fn move_of_a_mount_under_a_shared_parent() {
        let mut sc = call(
            "mount",
            vec![
                ("source", s("/a")),
                ("target", s("/b")),
                ("fstype", ArgValue::Null),
                ("flags", flags(&["MS_MOVE"])),
                ("data", ArgValue::Null),
            ],
            22,
            TaskState::default(),
        );
        sc.ns.inum[nstrace_common::ns::MNT] = 77;
        let mut source = target("source", "/a", 77);
        source.parent_shared = true;
        sc.targets = vec![target("target", "/b", 77), source];
        assert_eq!(
            run(sc.clone(), vec![], ALL_HOOKS).cause,
            Cause::SharedPropagation
        );
        // A locked source fails earlier (MV1), whatever its parent.
        let mut locked = sc;
        locked.targets[1].flags |= nstrace_common::mnt_flags::LOCKED;
        assert_ne!(
            run(locked, vec![], ALL_HOOKS).cause,
            Cause::SharedPropagation
        );
    }

    #[test]
    fn every_rule_cites_a_catalogue_row() {
        for r in RULES {
            let id = r.condition.split(':').next().unwrap();
            assert!(
                id.chars().next().unwrap().is_ascii_uppercase(),
                "{:?}: {}",
                r.cause,
                r.condition
            );
        }
    }
}
