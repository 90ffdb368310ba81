//! Secrets in traced strings: mount options such as cifs `password=` or
//! ecryptfs `key=` travel in mount(2)'s data, in fsconfig(2) key/value pairs
//! and on command lines (`mount -o password=...`). nstrace replaces their
//! values before an event reaches the model or any output, unless the user
//! asks otherwise (`--no-redact`).

use crate::event::{ArgValue, Event, EventKind};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Option names whose values are secrets (compared without case): cifs
/// (`password`, `password2`, `pass`, `credentials`), ecryptfs (`key`,
/// `passphrase_passwd`, `passphrase_passwd_file`), ceph (`secret`,
/// `secretfile`), and the generic `passwd`, `token`, `auth`.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "password2",
    "pass",
    "passwd",
    "credentials",
    "cred",
    "key",
    "passphrase",
    "passphrase_passwd",
    "passphrase_passwd_file",
    "secret",
    "secretfile",
    "token",
    "auth",
];

fn is_secret(key: &str) -> bool {
    SECRET_KEYS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(key.trim()))
}

/// `text` with the value of every secret `key=value` of a comma-separated
/// option list replaced; `None` when nothing needed replacing.
pub fn options(text: &str) -> Option<String> {
    let secret = |part: &str| part.split_once('=').is_some_and(|(k, _)| is_secret(k));
    // Every exec'd argument passes here: allocate only when there is work.
    if !text.split(',').any(secret) {
        return None;
    }
    let parts: Vec<String> = text
        .split(',')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if is_secret(k) => format!("{k}={REDACTED}"),
            _ => part.to_string(),
        })
        .collect();
    Some(parts.join(","))
}

fn redact_str(v: &mut ArgValue) {
    if let ArgValue::Str { text, .. } = v {
        if let Some(r) = options(text) {
            *text = r;
        }
    }
}

/// Redacts the secrets an event carries: mount data, fsconfig values of
/// secret keys, and options on an exec'd command line.
pub fn event(ev: &mut Event) {
    match &mut ev.kind {
        EventKind::Syscall(sc) => match &*sc.name {
            "mount" => {
                for (name, v) in &mut sc.args {
                    if *name == "data" {
                        redact_str(v);
                    }
                }
            }
            "fsconfig" => {
                let secret = sc.args.iter().any(|(name, v)| {
                    *name == "key" && matches!(v, ArgValue::Str { text, .. } if is_secret(text))
                });
                for (name, v) in &mut sc.args {
                    if *name == "value" && secret {
                        if let ArgValue::Str { text, .. } = v {
                            *text = REDACTED.into();
                        }
                    }
                }
            }
            _ => {}
        },
        EventKind::Exec { argv, .. } => {
            for a in argv.iter_mut() {
                if let Some(r) = options(a) {
                    *a = r;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_options_lose_their_values_only() {
        assert_eq!(
            options("username=bob,password=hunter2,vers=3.0").as_deref(),
            Some("username=bob,password=<redacted>,vers=3.0")
        );
        assert_eq!(
            options("PASS=x,credentials=/root/.smb").as_deref(),
            Some("PASS=<redacted>,credentials=<redacted>")
        );
        assert_eq!(
            options("key=passphrase:passphrase_passwd=s3cret").as_deref(),
            Some("key=<redacted>")
        );
        // A value that merely contains a secret word is not touched.
        assert_eq!(options("size=1m,mode=700,comment=password"), None);
        assert_eq!(options("/dev/sda1"), None);
    }

    fn s(t: &str) -> ArgValue {
        ArgValue::Str {
            text: t.into(),
            truncated: false,
        }
    }

    fn syscall(name: &'static str, args: Vec<(&'static str, ArgValue)>) -> Event {
        Event {
            seq: 1,
            ts_ns: 0,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            kind: EventKind::Syscall(crate::event::Syscall {
                name: name.into(),
                nr: 0,
                args,
                ret: 0,
                ns: Default::default(),
                ns_before: None,
                duration_ns: 0,
                no_entry: false,
                cap_repeats: 0,
                ret_kind: crate::syscalls::RetKind::Status,
                state: Default::default(),
                fd_ns: None,
                targets: Vec::new(),
            }),
        }
    }

    fn arg<'a>(ev: &'a Event, name: &str) -> &'a ArgValue {
        match &ev.kind {
            EventKind::Syscall(sc) => &sc.args.iter().find(|(n, _)| *n == name).unwrap().1,
            _ => unreachable!(),
        }
    }

    #[test]
    fn mount_data_fsconfig_values_and_argv_are_redacted() {
        let mut m = syscall(
            "mount",
            vec![
                ("source", s("//srv/share")),
                ("data", s("password=hunter2")),
            ],
        );
        event(&mut m);
        assert_eq!(arg(&m, "data"), &s("password=<redacted>"));
        assert_eq!(arg(&m, "source"), &s("//srv/share"));

        let mut f = syscall(
            "fsconfig",
            vec![("key", s("password")), ("value", s("hunter2"))],
        );
        event(&mut f);
        assert_eq!(arg(&f, "value"), &s(REDACTED));
        let mut other = syscall(
            "fsconfig",
            vec![("key", s("source")), ("value", s("/dev/x"))],
        );
        event(&mut other);
        assert_eq!(arg(&other, "value"), &s("/dev/x"));

        let mut exec = Event {
            kind: EventKind::Exec {
                ppid: 1,
                filename: "/bin/mount".into(),
                argv: ["mount", "-o", "user=a,password=hunter2", "//s/x", "/mnt"]
                    .map(String::from)
                    .to_vec(),
                argv_truncated: false,
                ns: Default::default(),
                adopted: false,
            },
            ..m
        };
        event(&mut exec);
        let EventKind::Exec { argv, .. } = &exec.kind else {
            unreachable!()
        };
        assert_eq!(argv[2], "user=a,password=<redacted>");
        assert_eq!(argv[3], "//s/x");
    }
}
