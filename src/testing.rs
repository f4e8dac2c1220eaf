//! Test support shared by the test binaries (`tests/it`, `tests/faults`): a database of its own
//! for each test, queues of its own, a simulator on port 0, a database relay that can be cut.
//! Part of the `tools` feature, beside the simulator it starts: never in the production core.
//!
//! Each guard cleans up when dropped, even when the test fails: the database is dropped, the
//! queues deleted, the simulator stopped.

use std::net::SocketAddr;

use crate::{
    config::{
        BrokerSettings, BrokerUrls, DatabaseSettings, FaultSettings, ServiceUrl, SimulatorSettings,
    },
    db,
    queue::Broker,
    simulator::Simulator,
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The server the tests use: DATABASE_URL's, or the default of `scripts/services up`.
pub fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/influencer_analytics".into())
}

/// The tests' database server, without a database: `postgres://user@host:port`.
pub fn shared_db_server() -> String {
    let mut url = url::Url::parse(&base_database_url()).expect("DATABASE_URL is a URL");
    url.set_path("");
    url.as_str().trim_end_matches('/').to_string()
}

/// The tests' broker: AMQP_URL's, or the default of `scripts/services up`.
pub fn shared_amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Runs the project's `scripts/services` with `args` (e.g. `faults up`, `tls up DIR`), which
/// must succeed: a failure panics with what the script printed. Returns its standard output.
pub fn services<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let started = std::time::Instant::now();
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services"))
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/services {}: {}{}",
        shown.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "scripts/services {} ({:.1} s)",
        shown.join(" "),
        started.elapsed().as_secs_f64()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh database with the migrations applied, dropped when the test ends.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub settings: DatabaseSettings,
    /// Its URL, for a role started as a process.
    pub url: String,
    server: String,
}

impl TestDb {
    /// On the tests' server ([`shared_db_server`]).
    pub async fn new() -> Self {
        Self::on(&shared_db_server(), 8).await
    }

    /// On `server` (`postgres://user@host:port`), with a pool of `pool_size` connections.
    pub async fn on(server: &str, pool_size: u64) -> Self {
        let name = format!("ia_test_{:016x}", rand::random::<u64>());
        let url = format!("{server}/{name}");
        let settings = DatabaseSettings {
            database_url: ServiceUrl::parse(&url, &["postgres"]).unwrap(),
            database_pool_size: pool_size,
        };
        let pool = db::connect(&settings).await.unwrap_or_else(|e| {
            panic!("the test database at {server} (run `scripts/services up` first): {e:#}")
        });
        Self {
            pool,
            name,
            settings,
            url,
            server: server.into(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = format!("{}/postgres", self.server);
        on_a_runtime_of_its_own(async move {
            if let Ok(mut c) = PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                    .execute(&mut c)
                    .await;
            }
        });
    }
}

/// Runs `cleanup` to its end on a thread with a runtime of its own: a guard is dropped inside
/// the test's runtime, which cannot be blocked on.
fn on_a_runtime_of_its_own(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the clean-up")
            .block_on(cleanup);
    })
    .join();
}

pub fn simulator_settings(population: u64, seed: u64) -> SimulatorSettings {
    SimulatorSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        population,
        seed: Some(seed),
        delay_scale: 0.0,
        churn_share: 0.0,
        spike_share: 0.0,
        spike_every: std::time::Duration::from_secs(3 * 3600),
        capacity: None,
        tls_cert_file: None,
        tls_key_file: None,
        faults: FaultSettings::default(),
    }
}

/// A simulator serving on a free port until the returned token is cancelled (or dropped with
/// the runtime at the end of the test).
pub struct TestSimulator {
    pub simulator: Simulator,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
}

impl TestSimulator {
    pub async fn start(settings: SimulatorSettings) -> Self {
        let simulator = Simulator::new(&settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(Simulator::serve(
            simulator.router(),
            listener,
            None,
            shutdown.clone(),
        ));
        Self {
            simulator,
            addr,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestSimulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Queues of their own for one test (a unique prefix), deleted when the test ends.
pub struct TestBroker {
    pub settings: BrokerSettings,
    /// A connection for the test's own publishing and counting.
    pub broker: Broker,
}

impl TestBroker {
    /// On the tests' broker ([`shared_amqp_url`]).
    pub async fn new() -> Self {
        Self::on(&shared_amqp_url()).await
    }

    /// On the broker at `amqp_url`.
    pub async fn on(amqp_url: &str) -> Self {
        Self::with(BrokerSettings::new(
            BrokerUrls::parse(amqp_url).unwrap(),
            format!("ia_test_{:016x}", rand::random::<u64>()),
        ))
        .await
    }

    /// Quorum queues with `delivery_limit`, on the tests' broker.
    pub async fn quorum(delivery_limit: u32) -> Self {
        let mut settings = BrokerSettings::new(
            BrokerUrls::parse(&shared_amqp_url()).unwrap(),
            format!("ia_test_{:016x}", rand::random::<u64>()),
        );
        settings.queue_type = crate::config::QueueType::Quorum;
        settings.queue_delivery_limit = delivery_limit;
        Self::with(settings).await
    }

    /// With queues as `settings` say.
    pub async fn with(settings: BrokerSettings) -> Self {
        let broker = Broker::connect(&settings)
            .await
            .expect("RabbitMQ (run `scripts/services up` first)");
        Self { settings, broker }
    }

    /// A new connection to the same queues (another process's view).
    pub async fn connect(&self) -> Broker {
        Broker::connect(&self.settings).await.unwrap()
    }

    /// Messages ready in the point queue and its dead-letter queue, counted on a new
    /// connection (the test's own may have been cut by a broker restart).
    pub async fn points_ready(&self) -> (u32, u32) {
        let broker = self.connect().await;
        let t = broker.topology.clone();
        let counts = (
            broker.ready_count(&t.points).await.unwrap(),
            broker.ready_count(&t.points_dead).await.unwrap(),
        );
        broker.close().await;
        counts
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let settings = self.settings.clone();
        on_a_runtime_of_its_own(async move {
            if let Ok(broker) = Broker::connect(&settings).await {
                let _ = broker.delete_all().await;
                broker.close().await;
            }
        });
    }
}

/// A TCP relay to the database that a test can cut: it stages a database outage without
/// stopping the shared server.
pub struct DbProxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    pub async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let target = url::Url::parse(&base_database_url()).unwrap();
        let target = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> =
            Default::default();
        let (down2, connections2) = (down.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if down2.load(Ordering::SeqCst) {
                    drop(client); // refused: the database is "down"
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            port,
            down,
            connections,
            accept,
        }
    }

    /// The database URL of `db`, through this relay.
    pub fn url_for(&self, db: &TestDb) -> ServiceUrl {
        let mut url = url::Url::parse(db.settings.database_url.expose()).unwrap();
        url.set_port(Some(self.port)).unwrap();
        ServiceUrl::parse(url.as_str(), &["postgres"]).unwrap()
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
