//! CPU time and memory of a process, as Linux's `/proc` shows them.
//!
//! - CPU: `utime` (user space) and `stime` (the kernel, on the process's behalf) of
//!   `/proc/PID/stat`, in clock ticks (`CLK_TCK`, read from this process's auxiliary vector; 100 on
//!   every common Linux). A tick is 10 ms, so CPU figures need runs of a second or more to mean
//!   anything. With tick-based accounting (the common kernel configuration) the sum is the
//!   scheduler's exact run time, but the split between the two is sampled: each tick is charged to
//!   whichever side was running. Work done in a softirq that interrupted the process (on loopback,
//!   the receiving socket's TCP processing during a send) is kernel time of the process unless
//!   the kernel has `CONFIG_IRQ_TIME_ACCOUNTING`.
//! - Memory: `VmRSS` (resident now) and `VmHWM` (peak resident) of `/proc/PID/status`, in KiB.
//! - Write calls: `syscw` of `/proc/PID/io`, the `write`, `writev` and `pwrite` system calls the
//!   process made on any file — sockets, pipes, the eventfd a runtime wakes its threads with — but
//!   not `send`/`sendmsg` (Rust's `TcpStream::write` is a `send`; h2's vectored writes are
//!   `writev`). Reading it needs the right to trace the process (the same user, or root).

use std::io;

/// `CLK_TCK` when the auxiliary vector cannot be read.
const DEFAULT_CLOCK_TICKS_PER_SECOND: u64 = 100;
/// `AT_CLKTCK` in the auxiliary vector (`<elf.h>`).
const AT_CLKTCK: u64 = 17;

/// One reading of a process's CPU time and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// CPU time in user space (`utime`), in clock ticks.
    pub user_ticks: u64,
    /// CPU time in the kernel on the process's behalf (`stime`), in clock ticks.
    pub sys_ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub peak_rss_kib: u64,
    /// Write-type system calls since the process started; `None` when `/proc/PID/io` cannot be
    /// read.
    pub write_calls: Option<u64>,
}

impl ProcSample {
    /// Reads process `pid`. Errors: the process does not exist (or this is not Linux).
    pub fn read(pid: u32) -> io::Result<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} of {pid}"));
        let (user_ticks, sys_ticks) = cpu_ticks(&stat).ok_or_else(|| bad("/proc stat"))?;
        Ok(ProcSample {
            cpu_ticks: user_ticks + sys_ticks,
            user_ticks,
            sys_ticks,
            rss_kib: proc_field(&status, "VmRSS:").ok_or_else(|| bad("VmRSS"))?,
            peak_rss_kib: proc_field(&status, "VmHWM:").ok_or_else(|| bad("VmHWM"))?,
            write_calls: std::fs::read_to_string(format!("/proc/{pid}/io"))
                .ok()
                .and_then(|io| proc_field(&io, "syscw:")),
        })
    }

    /// Reads this process.
    pub fn read_self() -> io::Result<ProcSample> {
        ProcSample::read(std::process::id())
    }

    /// CPU seconds spent between `earlier` and this sample.
    pub fn cpu_seconds_since(&self, earlier: &ProcSample) -> f64 {
        self.cpu_since(earlier).total_s
    }

    /// CPU time spent between `earlier` and this sample, in all and split by side.
    pub fn cpu_since(&self, earlier: &ProcSample) -> CpuTime {
        let secs =
            |now: u64, then: u64| now.saturating_sub(then) as f64 / clock_ticks_per_second() as f64;
        CpuTime {
            total_s: secs(self.cpu_ticks, earlier.cpu_ticks),
            user_s: secs(self.user_ticks, earlier.user_ticks),
            sys_s: secs(self.sys_ticks, earlier.sys_ticks),
        }
    }
}

/// CPU time between two samples of one process, in seconds. `user_s + sys_s == total_s`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    /// User plus kernel.
    pub total_s: f64,
    /// In user space.
    pub user_s: f64,
    /// In the kernel on the process's behalf (system calls, page faults, softirqs it ran).
    pub sys_s: f64,
}

/// `(utime, stime)` from the text of `/proc/PID/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The number after `field` at the start of a line of a `/proc` file (`VmRSS:  123 kB` of
/// `/proc/PID/status`, in KiB; `syscw: 45` of `/proc/PID/io`).
fn proc_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`).
pub fn clock_ticks_per_second() -> u64 {
    if usize::BITS != 64 {
        return DEFAULT_CLOCK_TICKS_PER_SECOND;
    }
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| {
            // Pairs of native words: (type, value), ending with type 0.
            auxv.chunks_exact(16).find_map(|pair| {
                let word = |b: &[u8]| b.try_into().ok().map(u64::from_ne_bytes);
                let (key, value) = (word(&pair[..8])?, word(&pair[8..])?);
                (key == AT_CLKTCK).then_some(value)
            })
        })
        .filter(|&t| t > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS_PER_SECOND)
}

/// This process's soft limit on open files (`ulimit -n`), from `/proc/self/limits`; `None` when
/// unlimited or unknown.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_fields_after_the_name() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 200 300";
        assert_eq!(cpu_ticks(stat), Some((250, 50)));
        assert_eq!(cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let s = ProcSample::read_self().expect("read /proc/self");
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib);
        assert!(clock_ticks_per_second() >= 1);
        assert_eq!(s.cpu_ticks, s.user_ticks + s.sys_ticks);
        assert!(
            s.write_calls.is_some(),
            "a process may read its own /proc/PID/io"
        );
    }

    #[test]
    fn proc_fields_are_found_by_name() {
        let io = "rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 42\n";
        assert_eq!(proc_field(io, "syscw:"), Some(42));
        assert_eq!(proc_field("VmRSS:\t  1024 kB\n", "VmRSS:"), Some(1024));
        assert_eq!(proc_field(io, "VmHWM:"), None);
    }

    #[test]
    fn cpu_time_is_split_into_user_and_kernel() {
        let at = |user_ticks, sys_ticks| ProcSample {
            cpu_ticks: user_ticks + sys_ticks,
            user_ticks,
            sys_ticks,
            ..ProcSample::default()
        };
        let hz = clock_ticks_per_second() as f64;
        let spent = at(130, 70).cpu_since(&at(100, 20));
        assert_eq!(spent.user_s, 30.0 / hz);
        assert_eq!(spent.sys_s, 50.0 / hz);
        assert_eq!(spent.total_s, 80.0 / hz);
        assert_eq!(at(130, 70).cpu_seconds_since(&at(100, 20)), 80.0 / hz);
    }
}
