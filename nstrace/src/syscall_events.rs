//! The per-syscall trace events (`syscalls:sys_enter_NAME` and
//! `sys_exit_NAME`): finding them in tracefs, checking their record layout,
//! attaching a program to each through `perf_event_open`, and releasing them.
//!
//! With these, a syscall nstrace does not trace runs no BPF program at all:
//! the raw `sys_enter`/`sys_exit` tracepoints would run one for every
//! syscall of the system. Their cost is at the end: the kernel waits for RCU
//! grace periods before it frees each one (35 ms per event measured here,
//! one at a time under a global mutex), so [`SyscallEvents::release`] hands
//! that wait to a short-lived background process instead of nstrace's exit.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Where tracefs keeps the syscall events, newest mount point first.
const EVENT_DIRS: [&str; 2] = [
    "/sys/kernel/tracing/events/syscalls",
    "/sys/kernel/debug/tracing/events/syscalls",
];

/// `_IOW('$', 8, u32)`: attach a BPF program to a tracepoint perf event.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `PERF_TYPE_TRACEPOINT`.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_SAMPLE_RAW`.
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// The first version of `struct perf_event_attr` (`PERF_ATTR_SIZE_VER0`,
/// 64 bytes; the kernel zero-extends older sizes). The libc crate does not
/// have it.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// The kernel's name of a syscall's trace events, where it differs from the
/// syscall's (the `SYSCALL_DEFINE` name).
pub fn event_name(syscall: &str) -> &str {
    match syscall {
        "umount2" => "umount",
        other => other,
    }
}

/// The directory of the syscall events, if tracefs is mounted and the
/// kernel has them (`CONFIG_FTRACE_SYSCALLS`).
pub fn events_dir() -> Option<PathBuf> {
    EVENT_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("sys_enter_mount").is_dir())
}

/// Where the kernel offers tracefs (an empty directory of sysfs until
/// something mounts it there; usually the init system at boot).
pub const TRACEFS_MOUNT_POINT: &std::ffi::CStr = c"/sys/kernel/tracing";

/// `TRACEFS_MAGIC`, the `f_type` statfs reports for tracefs.
const TRACEFS_MAGIC: i64 = 0x7472_6163;

/// The directory of the syscall events, mounting tracefs on
/// `/sys/kernel/tracing` first if it is mounted nowhere (as libtracefs
/// does): a machine whose init system does not mount it (a container host
/// started without systemd) would otherwise leave nstrace on the raw
/// tracepoints, through which every syscall of the system runs a program.
/// Never mounted twice: where tracefs is already there but has no syscall
/// events, the kernel lacks them. The mount stays after nstrace exits, as a
/// mount at boot would. Returns the directory and whether nstrace mounted
/// tracefs, or why there is none.
pub fn find_or_mount_events_dir() -> Result<(PathBuf, bool), String> {
    if let Some(dir) = events_dir() {
        return Ok((dir, false));
    }
    let at = TRACEFS_MOUNT_POINT.to_string_lossy();
    let without = format!(
        "no syscalls:* trace events (tracefs is mounted on {at} without them: a kernel without \
         CONFIG_FTRACE_SYSCALLS)"
    );
    match statfs_type(TRACEFS_MOUNT_POINT) {
        Ok(TRACEFS_MAGIC) => return Err(without),
        Ok(_) => {}
        Err(e) => return Err(format!("no syscalls:* trace events ({at}: {e})")),
    }
    mount_tracefs().map_err(|e| {
        format!("no syscalls:* trace events (tracefs is not mounted, and mounting it failed: {e})")
    })?;
    events_dir().map(|dir| (dir, true)).ok_or(without)
}

/// The file system type (`f_type`) of the file system `path` is on.
fn statfs_type(path: &std::ffi::CStr) -> io::Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs filled it.
    let st = unsafe { st.assume_init() };
    // Its type (`__fsword_t`) is not i64 on every architecture.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// Mounts tracefs on [`TRACEFS_MOUNT_POINT`] with the options systemd uses.
fn mount_tracefs() -> io::Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME;
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    let ret = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            TRACEFS_MOUNT_POINT.as_ptr(),
            c"tracefs".as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel has the entry and exit events of syscall `event`
/// (it has none for a syscall it does not implement).
pub fn has_event(dir: &Path, event: &str) -> bool {
    dir.join(format!("sys_enter_{event}")).is_dir()
        && dir.join(format!("sys_exit_{event}")).is_dir()
}

/// Checks that the records have the layout the programs read: `int
/// __syscall_nr` at byte 8, `args[0]` at 16 (entry) and `long ret` at 16
/// (exit). It has been so since syscall events exist; this guards the day
/// it changes.
pub fn check_layout(dir: &Path) -> Result<(), String> {
    let enter = read_format(dir, "sys_enter_mount")?;
    let exit = read_format(dir, "sys_exit_mount")?;
    let want = [
        (&enter, "__syscall_nr", 8),
        (&enter, "dev_name", 16),
        (&exit, "__syscall_nr", 8),
        (&exit, "ret", 16),
    ];
    for (format, field, offset) in want {
        match field_offset(format, field) {
            Some(o) if o == offset => {}
            got => {
                return Err(format!(
                    "syscall event field {field} is at {got:?}, not at byte {offset}"
                ))
            }
        }
    }
    Ok(())
}

fn read_format(dir: &Path, event: &str) -> Result<String, String> {
    let path = dir.join(event).join("format");
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The offset of `field` in a tracefs `format` file.
fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")?.parse().ok())
    })
}

/// Perf events with a program attached, one per syscall event. Dropping
/// them detaches synchronously (slow: see the module docs).
#[derive(Debug, Default)]
pub struct SyscallEvents {
    fds: Vec<OwnedFd>,
}

impl SyscallEvents {
    /// Attaches `prog` (a loaded tracepoint program) to event `event` (like
    /// `sys_enter_mount`) in `dir`.
    pub fn attach(&mut self, dir: &Path, event: &str, prog: BorrowedFd<'_>) -> Result<(), String> {
        let id_path = dir.join(event).join("id");
        let id: u64 = std::fs::read_to_string(&id_path)
            .map_err(|e| format!("{}: {e}", id_path.display()))?
            .trim()
            .parse()
            .map_err(|_| format!("{}: not a number", id_path.display()))?;
        let fd = open_tracepoint(id).map_err(|e| format!("perf_event_open {event}: {e}"))?;
        for (req, arg, what) in [
            (
                PERF_EVENT_IOC_SET_BPF,
                prog.as_raw_fd(),
                "attach the program to",
            ),
            (PERF_EVENT_IOC_ENABLE, 0, "enable"),
        ] {
            // SAFETY: an ioctl on a perf event fd we own, with an int argument.
            if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } != 0 {
                let e = io::Error::last_os_error();
                return Err(format!("cannot {what} {event}: {e}"));
            }
        }
        self.fds.push(fd);
        Ok(())
    }

    /// Takes `fd` (another attachment that is slow to free, like a
    /// trampoline's BPF link) to be released with the events.
    pub fn adopt(&mut self, fd: OwnedFd) {
        self.fds.push(fd);
    }

    /// Detaches every event without waiting for the kernel to free them: a
    /// child process takes over the descriptors, nstrace drops its own
    /// (which the kernel then need not free), and the child closes them
    /// and exits, on its own time. Should the pipe or the fork fail, they
    /// are closed here, slowly.
    ///
    /// Callers make the programs inert first (they may run until the
    /// child is done).
    pub fn release(self) {
        if self.fds.is_empty() {
            return;
        }
        let keep: Vec<RawFd> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
        let mut pipe = [0 as RawFd; 2];
        // SAFETY: pipe2 fills the two-element array.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        // SAFETY: the fds are new and ours.
        let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        // SAFETY: the child calls only async-signal-safe functions
        // (close_range, read, fork, _exit) before it exits.
        match unsafe { libc::fork() } {
            0 => closer(&keep, rx.as_raw_fd()),
            pid if pid > 0 => {
                drop(self.fds);
                // The child may go now: nstrace holds none of the events.
                drop(tx);
                drop(rx);
                let mut status = 0;
                // SAFETY: waits for our own child, which exits at once.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
            _ => drop(self.fds),
        }
    }
}

/// The forked child of [`SyscallEvents::release`]: forks again (so that
/// nstrace has no zombie and need not wait), keeps only the events and the
/// pipe's read end (nstrace's output must see its end of file), waits until
/// nstrace has dropped its copies, then exits, which frees the events.
fn closer(keep: &[RawFd], rx: RawFd) -> ! {
    let last = keep.iter().copied().fold(rx, RawFd::max);
    // SAFETY: async-signal-safe calls only; `keep` was built before fork.
    unsafe {
        if libc::fork() != 0 {
            libc::_exit(0);
        }
        // Its command line stays nstrace's (changing it needs
        // CAP_SYS_RESOURCE); the name says what it is.
        libc::prctl(libc::PR_SET_NAME, c"nstrace-release".as_ptr());
        for fd in 0..last {
            if fd != rx && !keep.contains(&fd) {
                libc::close(fd);
            }
        }
        libc::syscall(
            libc::SYS_close_range,
            (last + 1) as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        let mut byte = 0u8;
        loop {
            let n = libc::read(rx, (&mut byte as *mut u8).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        libc::_exit(0)
    }
}

/// Opens a perf event for tracepoint `id`, on CPU 0 for every process (a
/// tracepoint's BPF program runs on every CPU whatever the event's CPU).
fn open_tracepoint(id: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    // SAFETY: perf_event_open with a valid attr; the fd returned is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_system_types_are_told_apart() {
        const PROC_SUPER_MAGIC: i64 = 0x9fa0;
        assert_eq!(statfs_type(c"/proc").unwrap(), PROC_SUPER_MAGIC);
        assert!(statfs_type(c"/nonexistent/nstrace").is_err());
    }

    const ENTER: &str = "name: sys_enter_mount
ID: 940
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:char * dev_name;\toffset:16;\tsize:8;\tsigned:0;
\tfield:char * dir_name;\toffset:24;\tsize:8;\tsigned:0;
";

    #[test]
    fn reads_field_offsets_of_a_format_file() {
        assert_eq!(field_offset(ENTER, "__syscall_nr"), Some(8));
        assert_eq!(field_offset(ENTER, "dev_name"), Some(16));
        assert_eq!(field_offset(ENTER, "dir_name"), Some(24));
        assert_eq!(field_offset(ENTER, "common_pid"), Some(4));
        assert_eq!(field_offset(ENTER, "name"), None);
        assert_eq!(field_offset(ENTER, "ret"), None);
    }

    #[test]
    fn umount2_has_the_event_of_its_syscall_define() {
        assert_eq!(event_name("umount2"), "umount");
        assert_eq!(event_name("mount"), "mount");
    }
}
