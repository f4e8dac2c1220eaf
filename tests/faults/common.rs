//! What every scenario needs: the suite's own services, databases and queues of its own, the
//! pipeline's roles as real child processes (so they can be killed), and their metrics.

use influencer_analytics::{
    bench::procs::{MetricsPage, counter_sum},
    testing::TestBroker,
};
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

/// The scenarios run one at a time: they stop shared instances and time slots on two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The suite's own TimescaleDB and RabbitMQ (`scripts/services faults up`), which it stops.
pub const FAULTS_DB_SERVER: &str = "postgres://postgres@127.0.0.1:5434";
pub const FAULTS_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5673/%2f";
/// The faults broker's consumer_timeout (the script's default).
pub const FAULTS_CONSUMER_TIMEOUT: Duration = Duration::from_secs(8);

/// `scripts/services faults <command>`, which must succeed.
pub fn fault_services(command: &str) {
    influencer_analytics::testing::services(&["faults", command]);
}

/// Starts the suite's own services once per run.
pub fn fault_services_up() {
    static UP: Once = Once::new();
    UP.call_once(|| fault_services("up"));
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One role of the binary (`poll`, `sink`, ...) as a child process, with its log in
/// `target/faults/<scenario>/<role>.log` and its /metrics on a port of its own.
pub struct Role {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    metrics_port: u16,
    child: Option<Child>,
    pub starts: u32,
}

impl Role {
    pub fn start(scenario: &str, name: &str, args: &[&str], env: &[(String, String)]) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("faults")
            .join(scenario);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut role = Self {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.to_vec(),
            log,
            metrics_port: free_port(),
            child: None,
            starts: 0,
        };
        role.spawn();
        role
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_influencer-analytics"));
        command
            .args(&self.args)
            .env("RUST_LOG", "info")
            // `run` serves /metrics with its API, on LISTEN_ADDR.
            .env(
                if self.args[0] == "run" {
                    "LISTEN_ADDR"
                } else {
                    "METRICS_ADDR"
                },
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.child = Some(command.spawn().expect("the binary starts"));
        self.starts += 1;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Fails the test if the process is gone (it must never crash).
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("started");
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}); its log: {}",
                self.name,
                self.log.display()
            );
        }
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill_nine(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.spawn();
    }

    /// SIGINT, then waits for a clean exit.
    pub fn interrupt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{} exited with {status} after SIGINT; its log: {}",
                    self.name,
                    self.log.display()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not stop within 30 s of SIGINT", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until its /metrics answers.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if influencer_analytics::tls::http_client()
                .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{}'s /metrics did not answer within 30 s", self.name);
    }

    /// The sum of the samples of `metric` whose labels contain `labels` (e.g. `role="sink"`),
    /// 0 when it has none yet.
    pub async fn metric(&self, metric: &str, labels: &str) -> f64 {
        let page = MetricsPage::new(format!("http://127.0.0.1:{}/metrics", self.metrics_port));
        counter_sum(&page.read().await.unwrap(), metric, |line| {
            line.contains(labels)
        })
        .unwrap()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pipeline's processes for one scenario: `seed --count N` first, then `sink` and `poll`,
/// all against one database, one set of queues and one simulator.
pub struct Pipeline {
    pub poll: Role,
    pub sink: Role,
    /// When the first slots were due (seed time): the ledger starts after it.
    pub seeded_at: chrono::DateTime<chrono::Utc>,
}

pub struct PipelineSetup<'a> {
    pub scenario: &'static str,
    pub database_url: &'a str,
    pub queues: &'a TestBroker,
    pub mockstagram_url: String,
    pub interval: Duration,
    pub influencers: i64,
    pub poll_env: Vec<(&'static str, String)>,
    pub sink_env: Vec<(&'static str, String)>,
}

impl Pipeline {
    pub async fn start(setup: PipelineSetup<'_>) -> Self {
        let env = vec![
            ("DATABASE_URL".to_string(), setup.database_url.to_string()),
            (
                "AMQP_URL".into(),
                setup.queues.settings.amqp_url.expose().to_string(),
            ),
            (
                "QUEUE_PREFIX".into(),
                setup.queues.settings.queue_prefix.clone(),
            ),
            (
                "QUEUE_TYPE".into(),
                setup.queues.settings.queue_type.name().into(),
            ),
            (
                "QUEUE_DELIVERY_LIMIT".into(),
                setup.queues.settings.queue_delivery_limit.to_string(),
            ),
            ("MOCKSTAGRAM_URL".into(), setup.mockstagram_url.clone()),
            (
                "POLL_INTERVAL".into(),
                format!("{}ms", setup.interval.as_millis()),
            ),
        ];
        let seeded_at = chrono::Utc::now();
        let seed = Command::new(env!("CARGO_BIN_EXE_influencer-analytics"))
            .args(["seed", "--count", &setup.influencers.to_string()])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            seed.status.success(),
            "seed: {}",
            String::from_utf8_lossy(&seed.stderr)
        );
        let with = |extra: &[(&'static str, String)]| {
            let mut all = env.clone();
            all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
            all
        };
        let mut sink = Role::start(setup.scenario, "sink", &["sink"], &with(&setup.sink_env));
        let mut poll = Role::start(setup.scenario, "poll", &["poll"], &with(&setup.poll_env));
        sink.wait_ready().await;
        poll.wait_ready().await;
        Self {
            poll,
            sink,
            seeded_at,
        }
    }

    /// Stops polling, lets the sink write everything queued, then stops it; returns what the
    /// two processes counted.
    pub async fn drain_and_stop(&mut self, queues: &TestBroker) -> Finals {
        let poll_skipped = self.poll.metric("schedule_slots_skipped_total", "").await;
        let poll_restarts = self
            .poll
            .metric("role_restarts_total", "role=\"poll\"")
            .await;
        self.poll.interrupt();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.sink.assert_running();
            let (ready, _) = queues.points_ready().await;
            if ready == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ready} point messages still queued"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // What the sink holds goes in within its batch wait (1 s); SIGINT flushes the rest.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let finals = Finals {
            poll_skipped,
            poll_restarts,
            sink_restarts: self
                .sink
                .metric("role_restarts_total", "role=\"sink\"")
                .await,
            sink_requeued: self.sink.metric("sink_requeued_messages_total", "").await,
            sink_pid: self.sink.pid(),
        };
        self.sink.interrupt();
        finals
    }
}

/// What the roles counted, read just before they stopped.
#[derive(Debug)]
pub struct Finals {
    /// Slots the poller skipped (their schedule arrived too late to poll).
    pub poll_skipped: f64,
    /// Times a role failed and was started again inside its process (a lost connection).
    pub poll_restarts: f64,
    pub sink_restarts: f64,
    /// Deliveries the sink handed back to the queue (held past SINK_MAX_HOLD).
    pub sink_requeued: f64,
    pub sink_pid: u32,
}

/// The influencers without a point fetched after `from` by `deadline`, with their first point
/// after `from` if they have one (later than `deadline`).
pub async fn not_polled_between(
    pool: &sqlx::PgPool,
    from: chrono::DateTime<chrono::Utc>,
    deadline: chrono::DateTime<chrono::Utc>,
) -> Vec<(i64, Option<chrono::DateTime<chrono::Utc>>)> {
    sqlx::query_as(
        "select i.influencer_id, min(m.fetched_at)
         from influencers i
         left join influencer_metrics m on m.influencer_id = i.influencer_id and m.fetched_at > $1
         group by i.influencer_id
         having min(m.fetched_at) is null or min(m.fetched_at) > $2",
    )
    .bind(from)
    .bind(deadline)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Prints a scenario's counts and keeps them in `target/tmp/faults/<scenario>/report.txt`
/// (which `scripts/test` shows at the end, since a passing test's output is captured).
pub fn report(scenario: &str, line: String) {
    use std::io::Write;
    static STARTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    println!("{line}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("faults")
        .join(scenario);
    std::fs::create_dir_all(&dir).unwrap();
    let mut started = STARTED.lock().unwrap();
    let first = !started.iter().any(|s| s == scenario);
    if first {
        started.push(scenario.to_string());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!first)
        .truncate(first)
        .open(dir.join("report.txt"))
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}
