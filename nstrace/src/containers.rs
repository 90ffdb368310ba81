//! Containers: which programs are container runtimes and engine clients
//! (the kernel side adopts runtimes by these names, see
//! [`nstrace_common::Config::follow_runtimes`]), and a container's identity
//! read from a runtime's command line and state.
//!
//! The rule that decides which containers a trace follows, and where it
//! cannot tell, is documented in the README ("Containers").

use nstrace_common::role;
use serde_json::Value;

/// Programs by the name the kernel gives them after exec (`comm`, at most
/// 15 bytes), with their role.
pub const PROGRAMS: &[(&str, u8)] = &[
    ("runc", role::RUNTIME),
    ("crun", role::RUNTIME),
    ("youki", role::RUNTIME),
    ("runsc", role::RUNTIME),
    ("conmon", role::RUNTIME),
    ("docker", role::CLIENT),
    ("nerdctl", role::CLIENT),
    ("ctr", role::CLIENT),
    ("crictl", role::CLIENT),
    ("podman", role::CLIENT),
];

/// The PROGRAMS map key of `comm`: NUL-padded to 16 bytes.
pub fn comm_key(comm: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    for (k, b) in key.iter_mut().zip(comm.bytes().take(15)) {
        *k = b;
    }
    key
}

/// What a trace knows of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container id as the runtime names it (for docker and podman, their
    /// 64-hex id).
    pub id: String,
    /// The OCI runtime or monitor (`runc`, `crun`, `conmon`, ...).
    pub runtime: String,
    /// The engine that asked for it, when the runtime's paths say
    /// (`docker`, `podman`, `containerd`).
    pub engine: Option<String>,
    /// The container's init process (the first process of the container).
    pub init_pid: Option<u32>,
}

/// A runtime invocation: the container it acts on and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCall {
    /// The container.
    pub container: Container,
    /// The runtime's subcommand (`create`, `run`, `exec`, `delete`, ...);
    /// empty for conmon.
    pub subcommand: String,
    /// The runtime's state directory (`--root`), where `ID/state.json` is.
    pub state_root: Option<String>,
}

impl RuntimeCall {
    /// Whether this call starts the container's init (so that the first
    /// program the new process runs is the container's init).
    pub fn starts_init(&self) -> bool {
        matches!(self.subcommand.as_str(), "create" | "run") || self.container.runtime == "conmon"
    }
}

/// Options of runc, crun and youki that take a value as the next argument.
const VALUE_OPTIONS: &[&str] = &[
    "--root",
    "--log",
    "--log-format",
    "--log-level",
    "--criu",
    "--rootless",
    "--cgroup-manager",
    "--bundle",
    "-b",
    "--console-socket",
    "--pid-file",
    "--preserve-fds",
    "--process",
    "-p",
    "--cwd",
    "--env",
    "-e",
    "--user",
    "-u",
    "--cap",
    "-c",
    "--process-label",
    "--apparmor",
    "--cgroup",
    "--additional-gids",
    "-g",
    "--image-path",
    "--work-path",
    "--parent-path",
    "--page-server",
    "--manage-cgroups-mode",
    "--empty-ns",
    "--status-fd",
];

/// Runtime subcommands that name a container.
const SUBCOMMANDS: &[&str] = &[
    "create",
    "run",
    "start",
    "exec",
    "delete",
    "kill",
    "state",
    "pause",
    "resume",
    "ps",
    "update",
    "events",
    "checkpoint",
    "restore",
];

/// The runtime call `argv` describes, if `comm` is a runtime and the
/// arguments name a container.
pub fn runtime_call(comm: &str, argv: &[String]) -> Option<RuntimeCall> {
    if !PROGRAMS
        .iter()
        .any(|(name, r)| *name == comm && *r == role::RUNTIME)
    {
        return None;
    }
    if comm == "conmon" {
        return conmon_call(argv);
    }
    let mut root = None;
    let mut bundle = None;
    let mut subcommand = None;
    let mut id = None;
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with('-') => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if name.starts_with('-') {
            let value = if VALUE_OPTIONS.contains(&name) && inline.is_none() {
                args.next().cloned()
            } else {
                inline
            };
            match name {
                "--root" => root = value,
                "--bundle" | "-b" => bundle = value,
                _ => {}
            }
            continue;
        }
        if subcommand.is_none() {
            if !SUBCOMMANDS.contains(&name) {
                return None;
            }
            subcommand = Some(name.to_string());
        } else {
            id = Some(name.to_string());
            break;
        }
    }
    let id = id.filter(|i| !i.is_empty())?;
    let engine = engine_of(root.as_deref().into_iter().chain(bundle.as_deref()));
    Some(RuntimeCall {
        container: Container {
            id,
            runtime: comm.to_string(),
            engine,
            init_pid: None,
        },
        subcommand: subcommand.unwrap_or_default(),
        state_root: root.or_else(|| Some(format!("/run/{comm}"))),
    })
}

/// conmon (podman's and CRI-O's container monitor): `-c`/`--cid ID`, `-b BUNDLE`.
fn conmon_call(argv: &[String]) -> Option<RuntimeCall> {
    let value = |names: &[&str]| {
        argv.windows(2)
            .find(|w| names.contains(&w[0].as_str()))
            .map(|w| w[1].clone())
            .or_else(|| {
                argv.iter().find_map(|a| {
                    let (n, v) = a.split_once('=')?;
                    names.contains(&n).then(|| v.to_string())
                })
            })
    };
    let id = value(&["-c", "--cid"])?;
    let bundle = value(&["-b", "--bundle"]);
    Some(RuntimeCall {
        container: Container {
            id,
            runtime: "conmon".into(),
            engine: engine_of(bundle.as_deref()).or(Some("podman".into())),
            init_pid: None,
        },
        subcommand: String::new(),
        state_root: None,
    })
}

/// The engine whose paths these are: docker keeps its runc state under
/// `.../moby`, containerd under `/run/containerd`, podman under
/// `.../containers/storage` or `libpod`.
fn engine_of<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let has = |needle: &str| paths.iter().any(|p| p.contains(needle));
    if has("/moby") || has("/docker") {
        Some("docker".into())
    } else if has("containers/storage") || has("libpod") {
        Some("podman".into())
    } else if has("containerd") {
        Some("containerd".into())
    } else {
        None
    }
}

/// The container's init pid from the runtime's `state.json` (runc, crun and
/// youki all record `init_process_pid`), read inside the mount namespace
/// and root of process `via`.
pub fn init_pid_from_state(via: u32, state_root: &str, id: &str) -> Option<u32> {
    if id.contains('/') || id == ".." {
        return None;
    }
    let path = format!("{}/{id}/state.json", state_root.trim_end_matches('/'));
    let fd = crate::mounts::open_as_file(via, &path)?;
    let state: Value = serde_json::from_reader(std::io::BufReader::new(fd)).ok()?;
    state
        .get("init_process_pid")?
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    const ID: &str = "3f1b2c9d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";

    #[test]
    fn docker_runc_create_names_the_container() {
        let argv = v(&format!(
            "runc --root /var/run/docker/runtime-runc/moby --log \
             /run/containerd/io.containerd.runtime.v2.task/moby/{ID}/log.json --log-format json \
             create --bundle /run/containerd/io.containerd.runtime.v2.task/moby/{ID} \
             --pid-file /run/containerd/io.containerd.runtime.v2.task/moby/{ID}/init.pid {ID}"
        ));
        let call = runtime_call("runc", &argv).unwrap();
        assert_eq!(call.container.id, ID);
        assert_eq!(call.container.engine.as_deref(), Some("docker"));
        assert_eq!(call.subcommand, "create");
        assert!(call.starts_init());
        assert_eq!(
            call.state_root.as_deref(),
            Some("/var/run/docker/runtime-runc/moby")
        );
    }

    #[test]
    fn exec_takes_the_first_positional_after_the_subcommand() {
        let argv = v(&format!(
            "runc --root=/run/runc exec --process /tmp/p.json --detach --pid-file /tmp/x {ID}"
        ));
        let call = runtime_call("runc", &argv).unwrap();
        assert_eq!(call.container.id, ID);
        assert!(!call.starts_init());
        let argv = v("runc exec -e A=1 -u 0 myctr sh -c true");
        assert_eq!(runtime_call("runc", &argv).unwrap().container.id, "myctr");
        // Default state directory per runtime.
        let call = runtime_call("crun", &v("crun run abc")).unwrap();
        assert_eq!(call.state_root.as_deref(), Some("/run/crun"));
        assert_eq!(call.container.engine, None);
    }

    #[test]
    fn conmon_names_the_container_with_cid() {
        let argv = v(&format!(
            "/usr/bin/conmon --api-version 1 -c {ID} -u {ID} -r /usr/sbin/runc -b \
             /var/lib/containers/storage/overlay-containers/{ID}/userdata"
        ));
        let call = runtime_call("conmon", &argv).unwrap();
        assert_eq!(call.container.id, ID);
        assert_eq!(call.container.engine.as_deref(), Some("podman"));
    }

    #[test]
    fn other_programs_and_calls_without_a_container_are_not_runtime_calls() {
        assert_eq!(runtime_call("docker", &v("docker run busybox")), None);
        assert_eq!(runtime_call("runc", &v("runc --version")), None);
        assert_eq!(runtime_call("runc", &v("runc list")), None);
        assert_eq!(runtime_call("runc", &v("runc create")), None);
    }

    #[test]
    fn comm_keys_are_nul_padded_and_cut_at_15() {
        assert_eq!(&comm_key("runc")[..5], b"runc\0");
        let long = comm_key("containerd-shim-runc-v2");
        assert_eq!(&long[..15], b"containerd-shim");
        assert_eq!(long[15], 0);
    }
}
