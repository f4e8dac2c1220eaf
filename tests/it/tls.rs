//! Issue 18: TLS for all three connections, against real servers that accept nothing else.
//!
//! `scripts/services tls up` starts a TimescaleDB (port 5435) and a RabbitMQ node (amqps on port
//! 5674) that take TLS connections only, serving a certificate signed by a CA this test run
//! generates; the simulator serves HTTPS with the same certificate. The system does not trust
//! that CA, so each connection works only where the CA is named: `sslrootcert` in
//! DATABASE_URL, AMQP_CA_FILE, MOCKSTAGRAM_CA_FILE.

use std::{
    io::BufRead,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use influencer_analytics::{
    config::{BrokerSettings, ServiceUrl, UpstreamSettings},
    fetch::client::{FetchOutcome, MockstagramClient, UpstreamError},
    queue::Broker,
    tls::CaFile,
};
use sqlx::Connection;

use crate::cli::binary;

const TLS_DB_SERVER: &str = "postgres://postgres@127.0.0.1:5435";
const TLS_AMQP_URL: &str = "amqps://guest:guest@127.0.0.1:5674/%2f";

/// This run's CA and the servers' certificate, in files; the TLS services serve them.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    fn server_certificate(&self) -> String {
        self.dir.join("server.pem").display().to_string()
    }

    fn server_key(&self) -> String {
        self.dir.join("server.key").display().to_string()
    }
}

/// Generates the CA and a certificate for localhost and 127.0.0.1 signed by it, and starts (or
/// restarts) the TLS services with them: once per test run.
fn certificates() -> &'static Certificates {
    static CERTIFICATES: OnceLock<Certificates> = OnceLock::new();
    CERTIFICATES.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "influencer-analytics test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        influencer_analytics::testing::services(&["tls".as_ref(), "up".as_ref(), dir.as_os_str()]);
        Certificates { dir }
    })
}

/// A database of the test's own on the TLS server, and queues of its own on the TLS broker,
/// both removed when the test ends.
struct TlsScratch {
    name: String,
    prefix: String,
    /// DATABASE_URL with `sslmode=verify-full` and the CA.
    url: String,
}

impl TlsScratch {
    fn new(certificates: &Certificates) -> Self {
        let name = format!("ia_test_tls_{:016x}", rand::random::<u64>());
        let url = format!(
            "{TLS_DB_SERVER}/{name}?sslmode=verify-full&sslrootcert={}",
            certificates.ca()
        );
        let prefix = format!("ia_test_{:016x}", rand::random::<u64>());
        Self { name, prefix, url }
    }

    fn broker(&self) -> BrokerSettings {
        BrokerSettings {
            amqp_ca_file: Some(CaFile::read(certificates().ca()).unwrap()),
            ..BrokerSettings::new(
                ServiceUrl::parse(TLS_AMQP_URL, &["amqps"]).unwrap(),
                &self.prefix,
            )
        }
    }

    fn query_i64(&self, sql: &str) -> i64 {
        block_on(async {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        })
    }
}

impl Drop for TlsScratch {
    fn drop(&mut self) {
        let (admin, name, broker) = (
            self.url.replacen(&self.name, "postgres", 1),
            self.name.clone(),
            self.broker(),
        );
        block_on(async move {
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                    .execute(&mut c)
                    .await;
            }
            if let Ok(broker) = Broker::connect(&broker).await {
                let _ = broker.delete_all().await;
                broker.close().await;
            }
        });
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(future)
}

/// `simulate` serving HTTPS with the test's certificate on a free port; the process and its
/// `https://127.0.0.1:port`.
fn spawn_https_simulator(certificates: &Certificates) -> (KillOnDrop, String) {
    let mut child = binary()
        .arg("simulate")
        .env("SIMULATOR_LISTEN", "127.0.0.1:0")
        .env("SIMULATOR_POPULATION", "1000")
        .env("SIMULATOR_DELAY_SCALE", "0")
        .env("SIMULATOR_TLS_CERT_FILE", certificates.server_certificate())
        .env("SIMULATOR_TLS_KEY_FILE", certificates.server_key())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split("simulator at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("simulate prints its address: {line}"))
        .to_string();
    (KillOnDrop(child), url)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The whole pipeline (`run`: seed, poll, sink, API) with every connection over TLS: the
/// database and the broker accept nothing else, and the simulator speaks HTTPS only.
#[test]
fn the_pipeline_runs_over_tls_to_the_database_the_broker_and_mockstagram() {
    let certificates = certificates();
    let scratch = TlsScratch::new(certificates);
    let (_simulator, mockstagram_url) = spawn_https_simulator(certificates);
    assert!(mockstagram_url.starts_with("https://"), "{mockstagram_url}");
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls-run.log");
    let mut run = KillOnDrop(
        binary()
            .args(["run", "--seed-count", "20", "--poll-interval", "2s"])
            .args(["--listen-addr", "127.0.0.1:0"])
            .env("DATABASE_URL", &scratch.url)
            .env("AMQP_URL", TLS_AMQP_URL)
            .env("AMQP_CA_FILE", certificates.ca())
            .env("MOCKSTAGRAM_URL", &mockstagram_url)
            .env("MOCKSTAGRAM_CA_FILE", certificates.ca())
            .env("QUEUE_PREFIX", &scratch.prefix)
            .env("METRICS_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let polled = loop {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = run.0.try_wait().unwrap() {
            panic!(
                "run exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        let polled = block_on(async {
            let mut c = sqlx::PgConnection::connect(&scratch.url).await.ok()?;
            sqlx::query_scalar::<_, i64>(
                "select count(*) from (select influencer_id from influencer_metrics
                 group by 1 having count(*) >= 2) twice",
            )
            .fetch_one(&mut c)
            .await
            .ok()
        })
        .unwrap_or(0);
        if polled == 20 || Instant::now() > deadline {
            break polled;
        }
    };
    // Every connection `run` holds to the database is encrypted (the server would refuse a
    // plain one, and says so in pg_stat_ssl).
    let (connections, encrypted) = (
        scratch.query_i64(&format!(
            "select count(*) from pg_stat_activity a join pg_stat_ssl s using (pid)
             where a.datname = '{}' and a.application_name = 'influencer-analytics'",
            scratch.name
        )),
        scratch.query_i64(&format!(
            "select count(*) from pg_stat_activity a join pg_stat_ssl s using (pid)
             where a.datname = '{}' and a.application_name = 'influencer-analytics' and s.ssl",
            scratch.name
        )),
    );
    Command::new("kill")
        .args(["-INT", &run.0.id().to_string()])
        .status()
        .unwrap();
    let status = run.0.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        polled, 20,
        "every influencer polled twice over HTTPS, queued over amqps, stored over TLS: {logged}"
    );
    assert!(connections > 0, "run holds connections to the database");
    assert_eq!(encrypted, connections, "every one over TLS");
    assert!(status.success(), "run stops cleanly: {logged}");
}

/// PostgreSQL: a server whose CA the system does not trust is refused (sslmode=verify-full
/// without `sslrootcert`), and a plain connection is refused by a TLS-only server; each error
/// says what to put in DATABASE_URL.
#[test]
fn the_database_is_reached_only_over_tls_with_its_ca_named() {
    let certificates = certificates();
    let scratch = TlsScratch::new(certificates);
    let migrate = |url: &str| {
        let output = binary()
            .arg("migrate")
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let untrusted = migrate(&format!(
        "{TLS_DB_SERVER}/{}?sslmode=verify-full",
        scratch.name
    ));
    let plain = migrate(&format!("{TLS_DB_SERVER}/{}?sslmode=disable", scratch.name));
    let missing_ca = migrate(&format!(
        "{TLS_DB_SERVER}/{}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        scratch.name
    ));
    let trusted = migrate(&scratch.url);

    assert!(!untrusted.0, "the system's roots do not hold the test CA");
    assert!(untrusted.1.contains("certificate"), "{}", untrusted.1);
    assert!(untrusted.1.contains("sslrootcert="), "{}", untrusted.1);
    assert!(!plain.0, "a TLS-only server refuses a plain connection");
    assert!(
        plain.1.contains("accepts TLS connections only"),
        "{}",
        plain.1
    );
    assert!(!missing_ca.0);
    assert!(missing_ca.1.contains("DATABASE_URL"), "{}", missing_ca.1);
    assert!(trusted.0, "with sslrootcert: {}", trusted.1);
    assert_eq!(
        scratch.query_i64("select count(*) from pg_stat_ssl where pid = pg_backend_pid() and ssl"),
        1,
        "the test's own connection is encrypted too"
    );
}

/// RabbitMQ: amqps works with AMQP_CA_FILE; without it the broker is refused with the setting
/// named; a CA file with a plain amqp:// URL is a misconfiguration that names both.
#[test]
fn the_broker_is_reached_over_amqps_with_amqp_ca_file() {
    let certificates = certificates();
    let scratch = TlsScratch::new(certificates);
    let seed = |amqp_url: &str, ca: Option<&str>| {
        let mut command = binary();
        command
            .args(["seed", "--count", "3"])
            .env("DATABASE_URL", &scratch.url)
            .env("AMQP_URL", amqp_url)
            .env("QUEUE_PREFIX", &scratch.prefix)
            .env_remove("AMQP_CA_FILE");
        if let Some(ca) = ca {
            command.env("AMQP_CA_FILE", ca);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let untrusted = seed(TLS_AMQP_URL, None);
    let plain_url = seed(
        "amqp://guest:guest@127.0.0.1:5674/%2f",
        Some(&certificates.ca()),
    );
    let no_file = seed(TLS_AMQP_URL, Some("/nonexistent/ca.pem"));
    let trusted = seed(TLS_AMQP_URL, Some(&certificates.ca()));

    assert!(!untrusted.0, "the system's roots do not hold the test CA");
    assert!(untrusted.1.contains("certificate"), "{}", untrusted.1);
    assert!(untrusted.1.contains("AMQP_CA_FILE"), "{}", untrusted.1);
    assert!(!plain_url.0);
    assert!(
        plain_url.1.contains("AMQP_CA_FILE") && plain_url.1.contains("amqps://"),
        "{}",
        plain_url.1
    );
    assert!(!no_file.0);
    assert!(
        no_file.1.contains("AMQP_CA_FILE") && no_file.1.contains("/nonexistent/ca.pem"),
        "{}",
        no_file.1
    );
    assert!(trusted.0, "with AMQP_CA_FILE: {}", trusted.1);
    assert_eq!(
        scratch.query_i64("select count(*) from influencers"),
        3,
        "seeded and scheduled over amqps"
    );
}

/// Mockstagram over HTTPS: the client fetches with MOCKSTAGRAM_CA_FILE; without it each
/// attempt fails on the certificate, which the slot's reason records. A CA file with an
/// http:// URL is a misconfiguration; the simulator needs its key with its certificate.
#[test]
fn mockstagram_is_fetched_over_https_with_mockstagram_ca_file() {
    let certificates = certificates();
    let (_simulator, url) = spawn_https_simulator(certificates);
    let settings = |url: &str, ca: Option<CaFile>| UpstreamSettings {
        mockstagram_url: ServiceUrl::parse(url, &["http", "https"]).unwrap(),
        mockstagram_rps: None,
        mockstagram_timeout: Duration::from_secs(2),
        mockstagram_concurrency: 4,
        mockstagram_ca_file: ca,
    };
    let ca = CaFile::read(certificates.ca()).unwrap();
    let (trusted, untrusted) = block_on(async {
        let deadline = || tokio::time::Instant::now() + Duration::from_secs(2);
        let trusted = MockstagramClient::new(&settings(&url, Some(ca.clone())))
            .unwrap()
            .fetch(1_000_001, deadline())
            .await;
        let untrusted = MockstagramClient::new(&settings(&url, None))
            .unwrap()
            .fetch(1_000_001, deadline())
            .await;
        (trusted, untrusted)
    });
    assert!(
        matches!(trusted, FetchOutcome::Fetched { .. }),
        "{trusted:?}"
    );
    match untrusted {
        FetchOutcome::Failed(UpstreamError::GaveUp { last, .. }) => {
            assert!(last.contains("certificate"), "{last}")
        }
        other => panic!("expected a failure on the certificate, got {other:?}"),
    }
    let plain =
        MockstagramClient::new(&settings(&url.replacen("https://", "http://", 1), Some(ca)))
            .err()
            .expect("a CA file with an http:// URL is refused");
    assert!(plain.to_string().contains("MOCKSTAGRAM_CA_FILE"), "{plain}");

    let half = binary()
        .arg("simulate")
        .env("SIMULATOR_LISTEN", "127.0.0.1:0")
        .env("SIMULATOR_TLS_CERT_FILE", certificates.server_certificate())
        .env_remove("SIMULATOR_TLS_KEY_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(!half.status.success());
    assert!(stderr.contains("SIMULATOR_TLS_KEY_FILE"), "{stderr}");

    // `run --simulate` polls its own simulator over plain HTTP: a certificate for it is refused
    // by name rather than ignored.
    let run = binary()
        .args(["run", "--simulate"])
        .env("SIMULATOR_TLS_CERT_FILE", certificates.server_certificate())
        .env("SIMULATOR_TLS_KEY_FILE", certificates.server_key())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("SIMULATOR_TLS_CERT_FILE is for `simulate`"),
        "{stderr}"
    );
}
