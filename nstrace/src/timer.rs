//! A periodic timer as a file descriptor (timerfd), for the event loop:
//! tokio's own timers tick in whole milliseconds, too coarse for a reader
//! that polls the ring buffer instead of being woken.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A CLOCK_MONOTONIC timerfd, non-blocking.
pub struct TimerFd(OwnedFd);

impl TimerFd {
    /// A disarmed timer.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Expires every `every` from now on; `None` disarms it.
    pub fn set(&self, every: Option<Duration>) -> io::Result<()> {
        let ts = |d: Duration| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        let d = every.unwrap_or(Duration::ZERO);
        let spec = libc::itimerspec {
            it_interval: ts(d),
            it_value: ts(d),
        };
        // SAFETY: valid fd and itimerspec; the old value is not wanted.
        let r =
            unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes the expirations counted so far (0 if none).
    pub fn take(&self) -> io::Result<u64> {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `n`.
        let r = unsafe { libc::read(self.0.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
        if r == 8 {
            return Ok(u64::from_ne_bytes(n));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => Ok(0),
            _ => Err(e),
        }
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_when_armed_and_not_when_disarmed() {
        let t = TimerFd::new().unwrap();
        assert_eq!(t.take().unwrap(), 0);
        t.set(Some(Duration::from_micros(200))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.take().unwrap() >= 1);
        t.set(None).unwrap();
        t.take().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(t.take().unwrap(), 0);
    }
}
