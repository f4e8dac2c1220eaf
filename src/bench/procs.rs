//! CPU time and memory of processes, read from /proc (Linux).

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// /proc/<pid>/stat counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) of one process, or `None` if it is gone.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Resident memory now and at its peak, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Pids of the processes whose command name (`comm`) is `name`.
pub(crate) fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm"))
                .map(|comm| comm.trim() == name)
                .unwrap_or(false)
        })
        .collect()
}

/// A group of processes watched over a measurement: CPU seconds used between `start` and
/// `sample`s, and the largest total resident memory seen.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    start_cpu: HashMap<u32, f64>,
    last_cpu: HashMap<u32, f64>,
    pub peak_rss: u64,
}

impl Watch {
    pub fn start(pids: &[u32]) -> Self {
        let start_cpu: HashMap<u32, f64> = pids
            .iter()
            .filter_map(|&pid| Some((pid, cpu_seconds(pid)?)))
            .collect();
        let mut watch = Self {
            last_cpu: start_cpu.clone(),
            start_cpu,
            peak_rss: 0,
        };
        watch.sample(pids);
        watch
    }

    /// Reads CPU and memory now (pids that appeared since the start count from zero).
    pub fn sample(&mut self, pids: &[u32]) {
        let mut rss = 0;
        for &pid in pids {
            if let Some(cpu) = cpu_seconds(pid) {
                self.start_cpu.entry(pid).or_insert(0.0);
                self.last_cpu.insert(pid, cpu);
            }
            rss += rss_bytes(pid).map(|(now, _)| now).unwrap_or(0);
        }
        self.peak_rss = self.peak_rss.max(rss);
    }

    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.last_cpu
            .iter()
            .map(|(pid, last)| last - self.start_cpu.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

/// A process's Prometheus `/metrics` page, read again on each [`MetricsPage::read`] through one
/// HTTP client kept for every read.
pub struct MetricsPage {
    http: reqwest::Client,
    url: String,
}

impl MetricsPage {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            http: crate::tls::http_client(),
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The page as it stands now.
    pub async fn read(&self) -> anyhow::Result<String> {
        let answer = self.http.get(&self.url).send().await?.error_for_status()?;
        Ok(answer.text().await?)
    }
}

/// The sum of the samples of the counter `name` in a `/metrics` page whose line `keep` accepts
/// (e.g. one label's value); 0 if there are none.
pub fn counter_sum(page: &str, name: &str, keep: impl Fn(&str) -> bool) -> anyhow::Result<f64> {
    let prefix = format!("{name}{{");
    page.lines()
        .filter(|l| (l.starts_with(&prefix) || l.split(' ').next() == Some(name)) && keep(l))
        .map(|l| l.rsplit(' ').next().unwrap_or("0").parse::<f64>())
        .sum::<Result<f64, _>>()
        .with_context(|| format!("unreadable {name} in a /metrics page"))
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The role processes a scenario started (this binary's subcommands); killed when dropped.
#[derive(Default)]
pub struct Roles {
    children: Vec<(String, Child)>,
}

impl Roles {
    pub fn spawn(
        &mut self,
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.children.push((name.into(), child));
        Ok(())
    }

    /// The simulator (`simulate --seed 1`) with `population` influencers, as "simulator", on
    /// a free port; the port.
    pub(crate) fn spawn_simulator(&mut self, population: i64) -> anyhow::Result<u16> {
        let port = free_port()?;
        self.spawn(
            "simulator",
            &["simulate", "--seed", "1"],
            &[
                ("SIMULATOR_LISTEN", format!("127.0.0.1:{port}")),
                ("SIMULATOR_POPULATION", population.to_string()),
            ],
        )?;
        Ok(port)
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .expect("a started role")
    }

    /// Fails if a role exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited during the benchmark: {status}");
            }
        }
        Ok(())
    }

    /// Waits until `url` answers 2xx (a role's /healthz or /metrics), failing if a role exits.
    pub async fn wait_ready(&mut self, url: &str) -> anyhow::Result<()> {
        let http = crate::tls::http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(answer) = http.get(url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            self.check()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{url} did not answer within 60 s")
    }

    /// SIGINT to each, poll first, then waits.
    pub fn stop(&mut self) {
        for (_, child) in self.children.iter().rev() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
        }
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_the_kept_lines_of_their_own_name() {
        let page = "# TYPE fetches_total counter\n\
                    fetches_total{outcome=\"fetched\"} 12\n\
                    fetches_total{outcome=\"failed\"} 3\n\
                    fetches_total_other{outcome=\"fetched\"} 100\n\
                    plain_total 7\n";
        assert_eq!(counter_sum(page, "fetches_total", |_| true).unwrap(), 15.0);
        let fetched = |l: &str| l.contains("outcome=\"fetched\"");
        assert_eq!(counter_sum(page, "fetches_total", fetched).unwrap(), 12.0);
        assert_eq!(counter_sum(page, "plain_total", |_| true).unwrap(), 7.0);
        assert_eq!(counter_sum(page, "absent_total", |_| true).unwrap(), 0.0);
        let broken = "fetches_total{outcome=\"fetched\"} many\n";
        assert!(counter_sum(broken, "fetches_total", |_| true).is_err());
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        // Busy for 300 ms of wall time: the process's CPU time must grow by a good part of it
        // (at least 50 ms, a sixth, however busy the box; it is counted in 10 ms ticks).
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let burned = cpu_seconds(me).unwrap() - before;
        assert!(burned >= 0.05, "{burned} s of CPU for 0.3 s of spinning");
        let (rss, peak) = rss_bytes(me).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(cpu_seconds(u32::MAX).is_none());
    }
}
