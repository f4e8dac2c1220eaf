//! Shared set-up: a database of its own for each test, a simulator on port 0.

use std::net::SocketAddr;

use influencer_analytics::{
    config::{DatabaseSettings, FaultSettings, ServiceUrl, SimulatorSettings},
    db,
    simulator::Simulator,
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The server the tests use: DATABASE_URL's, or the default of `scripts/services up`.
pub fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/influencer_analytics".into())
}

fn url_with_database(name: &str) -> String {
    let mut url = url::Url::parse(&base_database_url()).expect("DATABASE_URL is a URL");
    url.set_path(name);
    url.to_string()
}

/// A fresh database with the migrations applied, dropped when the test ends.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub settings: DatabaseSettings,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("ia_test_{:016x}", rand::random::<u64>());
        let settings = DatabaseSettings {
            database_url: ServiceUrl::parse(&url_with_database(&name), &["postgres"]).unwrap(),
            database_pool_size: 8,
        };
        let pool = db::connect(&settings)
            .await
            .expect("the test database (run `scripts/services up` first)");
        Self {
            pool,
            name,
            settings,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = url_with_database("postgres");
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

pub fn simulator_settings(population: u64, seed: u64) -> SimulatorSettings {
    SimulatorSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        population,
        seed: Some(seed),
        delay_scale: 0.0,
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
