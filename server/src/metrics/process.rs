//! The process's own figures as Prometheus names them (`process_*`), read from `/proc` at
//! scrape time (Linux; elsewhere nothing is reported).

use std::fs;

/// One reading of the process's figures; `None` where `/proc` did not tell.
#[derive(Debug, Default)]
pub struct ProcessFigures {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<f64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<f64>,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads the figures (blocking file reads: call off the async runtime).
pub fn read() -> ProcessFigures {
    let mut figures = ProcessFigures {
        open_fds: fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as f64),
        max_fds: fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l)),
        ..ProcessFigures::default()
    };
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if ticks <= 0 || page <= 0 {
        return figures;
    }
    let Some(stat) = fs::read_to_string("/proc/self/stat").ok() else {
        return figures;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return figures;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let ticks = ticks as f64;
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        figures.cpu_seconds = Some((user + system) / ticks);
    }
    figures.virtual_bytes = field(23);
    figures.resident_bytes = field(24).map(|pages| pages * page as f64);
    let boot = fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        figures.start_time_seconds = Some(boot + start / ticks);
    }
    figures
}

/// Appends the figures to a Prometheus text exposition. Written here rather than through the
/// recorder: CPU seconds are a fractional counter, which the recorder's counters cannot hold.
pub fn render(f: &ProcessFigures, out: &mut String) {
    use std::fmt::Write as _;
    let rows = [
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            f.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            f.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size, in bytes.",
            f.virtual_bytes,
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            f.open_fds,
        ),
        (
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors.",
            f.max_fds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time since the Unix epoch, in seconds.",
            f.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in rows {
        if let Some(v) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
            );
        }
    }
}

/// The soft limit in `/proc/self/limits`' "Max open files" line.
fn max_open_files(limits: &str) -> Option<f64> {
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
    fn reads_this_process() {
        let figures = read();
        assert!(figures.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(figures.resident_bytes.is_some_and(|b| b > 1e5));
        assert!(figures.open_fds.is_some_and(|n| n >= 3.0));
        assert!(figures
            .max_fds
            .is_some_and(|n| n >= figures.open_fds.unwrap()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(figures
            .start_time_seconds
            .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0 * 365.0));
    }
}
