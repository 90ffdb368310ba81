//! `nstrace doctor`: what this kernel lets nstrace see. It loads the
//! programs as a trace would, tries every alternative hook for each
//! decision point, and says which explanations are therefore direct,
//! inferred or unavailable.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::explain::Hooks;
use crate::probes::HookReport;

/// How an explanation's cause is established on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// From the kernel's own decision, seen by a hook.
    Direct,
    /// From state read in the kernel and the order of events.
    Inferred,
    /// Not on this kernel (the hook it needs is missing).
    Unavailable,
}

impl Basis {
    fn word(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Inferred => "inferred",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Each cause, how it is established given the hooks, and from what.
pub fn causes(h: &Hooks) -> Vec<(&'static str, Basis, String)> {
    let cap = h.cap_via.map_or_else(
        || "capability checks: no hook".to_string(),
        |via| format!("the failed capability check, seen by {via} on cap_capable"),
    );
    let with_cap = if h.cap {
        Basis::Direct
    } else {
        Basis::Unavailable
    };
    let absence = if h.cap {
        Basis::Inferred
    } else {
        Basis::Unavailable
    };
    let state = |what: &str| (Basis::Inferred, what.to_string());
    let mut v = vec![
        ("missing_capability", with_cap, cap.clone()),
        ("fs_type_not_userns_mountable", with_cap, cap),
        (
            "mount_too_revealing",
            if h.klog { Basis::Direct } else { absence },
            if h.klog {
                "the kernel's \"VFS: Mount too revealing\" line (printk:console) where the \
                 kernel prints one (6.18); else inferred from the locked masks and the granted \
                 capability checks"
            } else {
                "inferred from the locked masks and the granted capability checks"
            }
            .to_string(),
        ),
        (
            "lsm_denied",
            absence,
            "EPERM with no capability check at all (needs the capability hook)".to_string(),
        ),
        if h.syscalls_via == Some("fentry") {
            (
                "seccomp_denied",
                Basis::Unavailable,
                "calls seccomp refuses never reach the syscall's function, where the fentry \
                 hook is (use --syscall-hook syscall_events)"
                    .to_string(),
            )
        } else {
            (
                "seccomp_denied",
                Basis::Inferred,
                "an exit without an entry, and the task's seccomp mode".to_string(),
            )
        },
    ];
    for (cause, what) in [
        ("locked_mount", "the mount's MNT_LOCKED, read through BPF"),
        (
            "locked_mount_flags",
            "the mount's MNT_LOCK_* flags, read through BPF",
        ),
        (
            "namespace_limit",
            "user and pid namespace levels read at entry",
        ),
        ("multithreaded", "the thread count read at entry"),
        (
            "userns_reentry",
            "the setns fd's namespace, identified at entry",
        ),
        (
            "pidns_not_descendant",
            "the fd's pid namespace level, read at entry",
        ),
        ("idmap_rules", "the uid_map/gid_map extents read at entry"),
        (
            "chrooted",
            "task->fs->root against mnt_ns->root, read at entry",
        ),
        (
            "not_in_caller_mount_ns",
            "the mount's namespace, read through BPF after the call",
        ),
        (
            "shared_propagation",
            "the mounts' propagation, read through BPF after the call",
        ),
    ] {
        let (basis, what) = state(what);
        v.push((cause, basis, what));
    }
    v
}

/// Writes the report: the kernel, each decision point's hooks, each cause.
pub fn report(
    kernel: &str,
    reports: &[HookReport],
    hooks: &Hooks,
    json_out: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    if json_out {
        let points: Vec<Value> = reports
            .iter()
            .map(|r| {
                json!({
                    "point": r.point,
                    "attached": r.attached,
                    "also_loads": r.also_loads,
                    "gaps": r.gaps,
                    "hints": r.hints,
                    "refused": r.refused.iter().map(|(h, e)| json!({"hook": h, "error": e})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let causes: Vec<Value> = causes(hooks)
            .into_iter()
            .map(|(c, b, what)| json!({"cause": c, "basis": b.word(), "from": what}))
            .collect();
        let v = json!({
            "kernel": kernel,
            "hooks": {
                "cap": hooks.cap,
                "klog": hooks.klog,
                "cap_via": hooks.cap_via,
                "syscalls_via": hooks.syscalls_via,
            },
            "points": points,
            "causes": causes,
        });
        return writeln!(out, "{v}");
    }
    writeln!(out, "kernel {kernel}")?;
    writeln!(
        out,
        "process life: raw tracepoints sched_process_fork/exec/exit: attached"
    )?;
    for r in reports {
        writeln!(out, "{}:", r.point)?;
        match r.attached {
            Some(h) => writeln!(out, "  in use:  {h}")?,
            None => writeln!(out, "  in use:  none")?,
        }
        for g in &r.gaps {
            writeln!(out, "  gap:     {g}")?;
        }
        for h in &r.also_loads {
            writeln!(out, "  loads:   {h} (not needed)")?;
        }
        for (h, e) in &r.refused {
            writeln!(out, "  refused: {h}: {e}")?;
        }
        for h in &r.hints {
            writeln!(out, "  hint:    {h}")?;
        }
    }
    writeln!(out, "explanations:")?;
    for (cause, basis, what) in causes(hooks) {
        writeln!(out, "  {cause:<29} {:<11} {what}", basis.word())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_a_rule_can_give_is_reported() {
        let listed: Vec<&str> = causes(&Hooks::default()).iter().map(|c| c.0).collect();
        for rule in crate::explain::rules::RULES {
            assert!(listed.contains(&rule.cause.code()), "{}", rule.cause.code());
        }
    }

    #[test]
    fn capability_rules_follow_the_capability_hook() {
        let none = Hooks::default();
        let bases: Vec<_> = causes(&none).into_iter().map(|(c, b, _)| (c, b)).collect();
        assert!(bases.contains(&("missing_capability", Basis::Unavailable)));
        assert!(bases.contains(&("lsm_denied", Basis::Unavailable)));
        assert!(bases.contains(&("mount_too_revealing", Basis::Unavailable)));
        assert!(bases.contains(&("chrooted", Basis::Inferred)));
        let fexit = Hooks {
            cap: true,
            klog: true,
            cap_via: Some("fexit"),
            syscalls_via: Some("syscall_events"),
        };
        let c = causes(&fexit);
        let missing = c
            .iter()
            .find(|(c, _, _)| *c == "missing_capability")
            .unwrap();
        assert_eq!(missing.1, Basis::Direct);
        assert!(missing.2.contains("fexit"));
        let mut out = Vec::new();
        report("6.1.0", &[], &fexit, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("missing_capability            direct"),
            "{text}"
        );
    }

    #[test]
    fn hints_are_printed_under_their_decision_point() {
        let r = HookReport {
            point: "syscalls",
            attached: Some("tracepoints x"),
            refused: Vec::new(),
            also_loads: vec!["fentry/fexit y"],
            gaps: Vec::new(),
            hints: vec!["--syscall-hook fentry: z".to_string()],
        };
        let mut out = Vec::new();
        report(
            "6.12",
            std::slice::from_ref(&r),
            &Hooks::default(),
            false,
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("syscalls:\n  in use:  tracepoints x\n  loads:   fentry/fexit y (not needed)\n  hint:    --syscall-hook fentry: z\n"),
            "{text}"
        );
        let mut out = Vec::new();
        report("6.12", &[r], &Hooks::default(), true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["points"][0]["hints"][0], "--syscall-hook fentry: z");
    }

    #[test]
    fn seccomp_denials_are_unavailable_on_the_fentry_hook() {
        let basis = |via| {
            let h = Hooks {
                syscalls_via: Some(via),
                ..Hooks::default()
            };
            causes(&h)
                .into_iter()
                .find(|(c, _, _)| *c == "seccomp_denied")
                .map(|(_, b, _)| b)
        };
        assert_eq!(basis("syscall_events"), Some(Basis::Inferred));
        assert_eq!(basis("raw_syscalls"), Some(Basis::Inferred));
        assert_eq!(basis("fentry"), Some(Basis::Unavailable));
    }
}
