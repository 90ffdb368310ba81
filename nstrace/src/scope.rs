//! Scope: which processes are traced, and the launched command's life
//! (starting it, signalling it through a pidfd, collecting its status).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};

use thiserror::Error;

use crate::event::ExitStatus;

/// What is traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A command nstrace starts, and its descendants.
    Launch(Vec<OsString>),
    /// A running process and its future descendants.
    Attach(u32),
    /// Every process; with a command, until it exits.
    All(Option<Vec<OsString>>),
}

impl Scope {
    /// The command to launch, if any.
    pub fn command(&self) -> Option<&[OsString]> {
        match self {
            Self::Launch(c) | Self::All(Some(c)) => Some(c),
            _ => None,
        }
    }
}

/// The command could not be started.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// No such program (exit 127, like a shell).
    #[error("{0}: command not found")]
    NotFound(String),
    /// Exists but cannot be executed (exit 126).
    #[error("{program}: cannot execute: {source}")]
    NotExecutable {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// pidfd_open failed.
    #[error("cannot watch the command (pidfd_open): {0}")]
    Pidfd(io::Error),
}

impl LaunchError {
    /// The exit status a shell would use.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NotFound(_) => 127,
            Self::NotExecutable { .. } => 126,
            Self::Pidfd(_) => 125,
        }
    }
}

/// A user to run the command as (`-u USER`): its uid, primary gid and
/// supplementary groups, looked up before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from the group database, as login does).
    pub groups: Vec<u32>,
}

/// `-u USER` names no user.
#[derive(Debug, Error)]
#[error("no such user: {0}")]
pub struct NoSuchUser(pub String);

impl RunAs {
    /// Looks `user` (a name, or a numeric uid) up in the user database.
    pub fn lookup(user: &str) -> Result<Self, NoSuchUser> {
        let missing = || NoSuchUser(user.to_string());
        let name = std::ffi::CString::new(user).map_err(|_| missing())?;
        // SAFETY: passwd is plain data; all-zero is a valid (empty) value.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid out-pointers and buffer of the given length.
        let rc = unsafe {
            match user.parse::<u32>() {
                Ok(uid) => libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found),
                Err(_) => libc::getpwnam_r(
                    name.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                ),
            }
        };
        if rc != 0 || found.is_null() {
            return Err(missing());
        }
        let (uid, gid) = (pw.pw_uid, pw.pw_gid);
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: pw_name points into `buf`, alive here; `groups` holds `n`.
        let rc = unsafe { libc::getgrouplist(pw.pw_name, gid, groups.as_mut_ptr(), &mut n) };
        groups.truncate(if rc < 0 { 0 } else { n.max(0) as usize });
        if groups.is_empty() {
            groups.push(gid);
        }
        Ok(Self { uid, gid, groups })
    }
}

/// The launched command.
pub struct Launched {
    child: Child,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

impl Launched {
    /// Starts `argv`, as `run_as` if given. The kernel side tracks it from
    /// its fork on, because nstrace registered itself as the launcher
    /// before this call.
    pub fn spawn(argv: &[OsString], run_as: Option<&RunAs>) -> Result<Self, LaunchError> {
        use std::os::unix::process::CommandExt;
        let program = argv[0].to_string_lossy().into_owned();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if let Some(who) = run_as.cloned() {
            // Groups first, then the gid, then the uid (which drops the
            // privilege to change the others). std's own uid() would clear
            // the supplementary groups instead.
            // SAFETY: only async-signal-safe syscalls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(who.groups.len(), who.groups.as_ptr()) != 0
                        || libc::setgid(who.gid) != 0
                        || libc::setuid(who.uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LaunchError::NotFound(program.clone()),
            _ => LaunchError::NotExecutable { program, source: e },
        })?;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        if fd < 0 {
            return Err(LaunchError::Pidfd(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self {
            child,
            pidfd,
            status: None,
        })
    }

    /// The command's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A descriptor that becomes readable when the command exits.
    pub fn pidfd(&self) -> &OwnedFd {
        &self.pidfd
    }

    /// How it ended, once it has.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Reaps the command if it has exited.
    pub fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            if let Some(st) = self.child.try_wait()? {
                self.status = Some(from_std(st));
            }
        }
        Ok(self.status)
    }

    /// Waits for the command to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let st = from_std(self.child.wait()?);
        self.status = Some(st);
        Ok(st)
    }

    /// Sends `signal` to the command unless it has been reaped (the pidfd
    /// makes this safe against pid reuse).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall on our own pidfd.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // ESRCH: it exited meanwhile.
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err);
            }
        }
        Ok(())
    }
}

fn from_std(st: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(code), _) => ExitStatus::Exited(code),
        (None, Some(signal)) => ExitStatus::Signaled {
            signal,
            core_dumped: st.core_dumped(),
        },
        (None, None) => ExitStatus::Exited(st.into_raw()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_command_is_127() {
        let err = Launched::spawn(&["/nonexistent/nstrace-test".into()], None)
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 127);
        assert!(err.to_string().contains("command not found"));
    }

    #[test]
    fn non_executable_is_126() {
        let err = Launched::spawn(&["/dev/null".into()], None).err().unwrap();
        assert_eq!(err.exit_code(), 126);
    }

    #[test]
    fn exit_status_and_signals() {
        let mut c = Launched::spawn(&["sh".into(), "-c".into(), "exit 7".into()], None).unwrap();
        assert_eq!(c.wait().unwrap(), ExitStatus::Exited(7));
        let mut c = Launched::spawn(&["sleep".into(), "30".into()], None).unwrap();
        c.signal(libc::SIGTERM).unwrap();
        assert_eq!(c.wait().unwrap().shell_code(), 128 + libc::SIGTERM);
        // Signalling a reaped command is a no-op, not an error.
        c.signal(libc::SIGTERM).unwrap();
    }

    #[test]
    fn users_are_looked_up_by_name_or_uid() {
        let root = RunAs::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(RunAs::lookup("0").unwrap().uid, 0);
        let err = RunAs::lookup("no-such-user-nstrace").unwrap_err();
        assert_eq!(err.to_string(), "no such user: no-such-user-nstrace");
    }
}
