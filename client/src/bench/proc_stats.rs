//! CPU time and memory of the server under test, read from `/proc/{pid}/stat` and
//! `/proc/{pid}/status` (Linux). The load generator and the server share the machine, so the
//! server's own numbers are the only honest measure of what it costs.

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/{pid}/stat` (`sysconf(_SC_CLK_TCK)`): 100 on every Linux
/// configuration this runs on; reading it properly would need libc for one constant.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A starting point for measuring a process.
#[derive(Debug)]
pub(super) struct ProcSampler {
    /// The process measured.
    pid: u32,
    /// User + system ticks at the start, for the CPU share over the run.
    start_ticks: u64,
    /// Wall-clock start, the denominator of the CPU share.
    start: Instant,
    /// Largest resident set seen by [`ProcSampler::sample`], in KiB.
    max_rss_kib: u64,
}

/// What the server cost over a run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ServerStats {
    pub pid: u32,
    /// CPU time over wall time, in percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// `VmHWM`: the peak resident set over the process's whole life, in KiB.
    pub peak_rss_kib: u64,
    /// The largest `VmRSS` sampled during the run, in KiB.
    pub max_sampled_rss_kib: u64,
    /// `VmRSS` at the end of the run, in KiB.
    pub rss_kib: u64,
}

/// User + system CPU ticks of `pid`.
fn cpu_ticks(pid: u32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); field 3 is the first after the name.
    let field = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => Err(std::io::Error::other(format!(
            "unexpected /proc/{pid}/stat"
        ))),
    }
}

/// A `kB` line of `/proc/{pid}/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field(&status, pid, key)
}

/// `key` of one read of `/proc/{pid}/status` (values read together are consistent: `VmHWM`
/// is at least the `VmRSS` beside it, not necessarily one read a moment later).
fn status_field(status: &str, pid: u32, key: &str) -> std::io::Result<u64> {
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| std::io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

impl ProcSampler {
    pub(super) fn start(pid: u32) -> std::io::Result<Self> {
        Ok(Self {
            pid,
            start_ticks: cpu_ticks(pid)?,
            start: Instant::now(),
            max_rss_kib: status_kib(pid, "VmRSS")?,
        })
    }

    /// Samples the resident set (call about once a second).
    pub(super) fn sample(&mut self) {
        if let Ok(rss) = status_kib(self.pid, "VmRSS") {
            self.max_rss_kib = self.max_rss_kib.max(rss);
        }
    }

    pub(super) fn finish(mut self) -> std::io::Result<ServerStats> {
        self.sample();
        let ticks = cpu_ticks(self.pid)?.saturating_sub(self.start_ticks);
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        Ok(ServerStats {
            pid: self.pid,
            cpu_percent: ticks as f64 / CLOCK_TICKS_PER_SECOND / wall * 100.0,
            peak_rss_kib: status_field(&status, self.pid, "VmHWM")?,
            max_sampled_rss_kib: self.max_rss_kib,
            rss_kib: status_field(&status, self.pid, "VmRSS")?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let sampler = ProcSampler::start(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let stats = sampler.finish().unwrap();
        assert!(
            stats.peak_rss_kib >= stats.rss_kib && stats.rss_kib > 0,
            "{stats:?}"
        );
        assert!(stats.cpu_percent >= 0.0);
    }
}
