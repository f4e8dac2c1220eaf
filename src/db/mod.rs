//! The database: a connection pool and the embedded migrations.
//!
//! Every role calls [`connect`], which creates the database if it is missing and applies the
//! migrations, so roles can start in any order. sqlx's migrator takes an advisory lock, so two
//! roles starting at once do not apply a migration twice.

use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::{DatabaseSettings, ServiceUrl};

/// The SQL files of `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// SQLSTATEs sqlx has no error kind for: "database does not exist", "database already exists".
const INVALID_CATALOG_NAME: &str = "3D000";
const DUPLICATE_DATABASE: &str = "42P04";

/// Opens a pool on the settings' database, creating it if missing, and applies the migrations.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let pool = open_pool(settings).await?;
    migrate(&pool, &settings.database_url).await?;
    Ok(pool)
}

/// Opens a pool without migrating (the database is still created if missing).
///
/// One probe connection comes first, with a short time-out, so an unreachable server is reported
/// at once with its cause ("connection refused") rather than as a pool time-out.
pub async fn open_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let url = &settings.database_url;
    let options = connect_options(url)?;
    match probe(&options, url).await {
        Ok(()) => {}
        Err(ProbeError::NoDatabase) => create_database(&options, url).await?,
        Err(ProbeError::Other(e)) => return Err(e),
    }
    pool_of(settings, options).await
}

/// A pool of `settings.database_pool_size` connections made with `options`.
async fn pool_of(settings: &DatabaseSettings, options: PgConnectOptions) -> anyhow::Result<PgPool> {
    pool_options(settings)
        .connect_with(options)
        .await
        .map_err(|e| unreachable_database(&settings.database_url, e))
}

fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.database_pool_size as u32)
        .acquire_timeout(Duration::from_secs(10))
}

/// How long an API connection may have been idle before it is checked (a round trip) on its
/// way out of the pool.
pub const API_CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The query API's pool: like [`open_pool`] (without migrating), but PostgreSQL cancels any
/// statement of it that runs longer than `statement_timeout`, so no request holds a
/// connection and a backend without bound; and its prepared statements keep one generic plan.
///
/// PostgreSQL plans a prepared statement again for each of its first five executions and
/// then keeps doing so if that plan looks cheaper than the generic one, which over a
/// hypertable it always does (a plan for one set of parameters names the one chunk they
/// reach). So each read of a segment was planned anew: 1.3 ms of planning for 0.5 ms of
/// execution, with pgbench at 16 clients 1,042 reads a second against 4,524 with the generic
/// plan, whose chunks TimescaleDB excludes when it starts. The API's statements are short
/// reads by key and bounded range, so a generic plan fits them all; the pipeline's other
/// statements keep PostgreSQL's choice.
///
/// Its chunks are chosen when a statement is planned, not each time it starts: the cold tier's
/// statements name their window of chunks by constants ([`crate::series::read`]), which
/// PostgreSQL's planner uses to leave the other chunks out of the plan, and TimescaleDB's own
/// appends (ChunkAppend, ConstraintAwareAppend) would still check every chunk of the plan
/// against the parameters when the statement starts, parsing its constraints anew each time:
/// for a year of day segments (14 chunks), 40% of PostgreSQL's time for the read (pgbench of
/// the year's summaries at 16 clients: 1,050 a second with them, 1,410 without; a plain table
/// holding the same rows, 1,640). Hypertables read with parameters alone (the hot tier, the
/// average series) then scan each of their chunks' indexes, which for the few chunks they keep
/// costs what the exclusion did.
///
/// A connection is checked on its way out of the pool only if it sat idle for longer than
/// [`API_CHECK_AFTER_IDLE`] (one that broke while idle, a database restart say, is replaced
/// then): a connection in steady use answered a moment ago, and checking it anyway cost a round
/// trip to PostgreSQL for every statement.
pub async fn open_api_pool(
    settings: &DatabaseSettings,
    statement_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let options = api_connect_options(&settings.database_url, statement_timeout)?;
    api_pool_options(settings)
        .connect_with(options)
        .await
        .map_err(|e| unreachable_database(&settings.database_url, e))
}

/// The API's pool on a streaming replica (DATABASE_READ_URL), as [`open_api_pool`] makes it
/// but connecting lazily: the API starts while the replica is down, reading the primary.
pub fn open_replica_pool(
    read_url: &ServiceUrl,
    pool_size: u64,
    statement_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let settings = DatabaseSettings {
        database_url: read_url.clone(),
        database_pool_size: pool_size,
    };
    let options = api_connect_options(read_url, statement_timeout)?;
    Ok(api_pool_options(&settings)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options))
}

fn api_connect_options(
    url: &ServiceUrl,
    statement_timeout: Duration,
) -> anyhow::Result<PgConnectOptions> {
    Ok(connect_options(url)?.options([
        (
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis().max(1)),
        ),
        ("plan_cache_mode", "force_generic_plan".to_string()),
        ("timescaledb.enable_chunk_append", "off".to_string()),
        (
            "timescaledb.enable_constraint_aware_append",
            "off".to_string(),
        ),
    ]))
}

fn api_pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    pool_options(settings)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > API_CHECK_AFTER_IDLE {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
}

enum ProbeError {
    NoDatabase,
    Other(anyhow::Error),
}

async fn probe(options: &PgConnectOptions, url: &ServiceUrl) -> Result<(), ProbeError> {
    match tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await {
        Err(_) => Err(ProbeError::Other(anyhow::anyhow!(
            "cannot reach TimescaleDB at {url} (no answer within {PROBE_TIMEOUT:?}); start it with `scripts/services up`, or set DATABASE_URL"
        ))),
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some(INVALID_CATALOG_NAME) => {
            Err(ProbeError::NoDatabase)
        }
        Ok(Err(e)) => Err(ProbeError::Other(unreachable_database(url, e))),
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn connect_options(url: &ServiceUrl) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = url
        .expose()
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL {url} is not a valid PostgreSQL URL: {e}"))?;
    Ok(options
        .application_name("influencer-analytics")
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(5)))
}

fn unreachable_database(url: &ServiceUrl, e: sqlx::Error) -> anyhow::Error {
    // A certificate the client does not trust comes as an I/O error from the handshake.
    let tls_failed = matches!(e, sqlx::Error::Tls(_)) || crate::tls::is_refused_certificate(&e);
    let hint = match &e {
        _ if tls_failed => {
            "the TLS handshake failed: if a CA of your own signed the server's certificate, name its PEM file with sslrootcert=<file> in DATABASE_URL"
        }
        sqlx::Error::Database(db) if db.message().contains("no encryption") => {
            "the server accepts TLS connections only: add sslmode=verify-full (with sslrootcert=<CA file> for a CA of your own) to DATABASE_URL"
        }
        _ => "start it with `scripts/services up`, or set DATABASE_URL",
    };
    anyhow::anyhow!("cannot reach TimescaleDB at {url} ({e}); {hint}")
}

async fn create_database(options: &PgConnectOptions, url: &ServiceUrl) -> anyhow::Result<()> {
    let name = options
        .get_database()
        .context("DATABASE_URL names no database")?
        .to_string();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(|e| unreachable_database(url, e))?;
    ensure_timescaledb(&mut admin, url).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&format!("create database {quoted}"))
        .execute(&mut admin)
        .await
    {
        Ok(_) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        // Another role created it in the meantime.
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some(DUPLICATE_DATABASE) || e.is_unique_violation() =>
        {
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create the database {name} at {url}")),
    }
}

/// Applies the embedded migrations, after checking the server offers TimescaleDB.
pub async fn migrate(pool: &PgPool, url: &ServiceUrl) -> anyhow::Result<()> {
    ensure_timescaledb(&mut *pool.acquire().await?, url).await?;
    match MIGRATOR.run(pool).await {
        Ok(()) => Ok(()),
        // Migrations 0001-0006 of the first development versions were folded into one baseline
        // before any deployment; a database they made has a history this binary does not know.
        Err(
            e @ (sqlx::migrate::MigrateError::VersionMissing(_)
            | sqlx::migrate::MigrateError::VersionMismatch(_)),
        ) => Err(anyhow::anyhow!(
            "the database at {url} was migrated by a development version whose migrations were folded into one baseline ({e}); drop it and start again (its data cannot be carried over), or point DATABASE_URL at a new database"
        )),
        Err(e) => Err(e).with_context(|| format!("cannot apply the migrations to {url}")),
    }
}

/// Fails with a clear message when the server does not offer the timescaledb extension.
async fn ensure_timescaledb(connection: &mut PgConnection, url: &ServiceUrl) -> anyhow::Result<()> {
    let available = sqlx::query_scalar!(
        r#"select exists (select 1 from pg_available_extensions where name = 'timescaledb') as "available!""#,
    )
    .fetch_one(connection)
    .await
    .with_context(|| format!("cannot query the database at {url}"))?;
    if !available {
        bail!(
            "the PostgreSQL server at {url} has no timescaledb extension; start the project's with `scripts/services up`, or point DATABASE_URL at a TimescaleDB server"
        );
    }
    Ok(())
}

/// The fencing token of work held under a [`SessionLock`] (migration 0009): what lets each of
/// its transactions commit only while its holder still owns the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    key: i64,
    token: i64,
}

/// Another process holds the work now: the session that held its lock ended.
#[derive(Debug, thiserror::Error)]
#[error(
    "the work of advisory lock {key:#x} was taken over by another process (this one's lock session ended): token {ours} is not the current {current}"
)]
pub struct FenceLost {
    pub key: i64,
    pub ours: i64,
    pub current: i64,
}

impl Fence {
    /// Takes the next token of `key` (call it once the lock is held).
    pub(crate) async fn claim(pool: &PgPool, key: i64) -> sqlx::Result<Self> {
        let token = sqlx::query_scalar!(
            "insert into work_fences (lock_key, token) values ($1, 1)
             on conflict (lock_key) do update set token = work_fences.token + 1
             returning token",
            key,
        )
        .fetch_one(pool)
        .await?;
        Ok(Self { key, token })
    }

    /// The first statement of each transaction of the work: holds the token's row under a
    /// share lock until the transaction ends (a new holder's claim waits for it), and fails
    /// with [`FenceLost`] once another holder has claimed a newer token (the error is that, or
    /// the database's `sqlx::Error`, for callers to tell apart by downcasting).
    pub async fn check(&self, tx: &mut PgConnection) -> anyhow::Result<()> {
        let current = sqlx::query_scalar!(
            "select token from work_fences where lock_key = $1 for share",
            self.key
        )
        .fetch_one(&mut *tx)
        .await?;
        if current != self.token {
            return Err(FenceLost {
                key: self.key,
                ours: self.token,
                current,
            }
            .into());
        }
        Ok(())
    }
}

/// A session-level advisory lock, held on a connection of its own for work longer than one
/// transaction (a classification pass, compaction): one process at a time does it. Work whose
/// writes must never overlap another holder's also takes a [`Fence`].
pub struct SessionLock {
    connection: PgConnection,
    key: i64,
}

impl SessionLock {
    /// Takes the lock `key` if no other session holds it.
    pub async fn try_take(pool: &PgPool, key: i64) -> Result<Option<Self>, sqlx::Error> {
        let mut connection = pool.acquire().await?.detach();
        let taken = sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "taken!""#, key)
            .fetch_one(&mut connection)
            .await?;
        if taken {
            Ok(Some(Self { connection, key }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Releases the lock now. Unlocks before closing: a closed session's locks are freed only
    /// when the server has ended its backend, a moment later, and another process asking in
    /// that moment would be told the work is still running. (If the connection is gone, so is
    /// the lock.)
    pub async fn release(mut self) {
        let _ = sqlx::query_scalar!("select pg_advisory_unlock($1)", self.key)
            .fetch_one(&mut self.connection)
            .await;
        let _ = self.connection.close().await;
    }
}

/// Drops the chunks of hypertable `table` whose every row is older than `secs` before the
/// transaction's start; returns how many.
pub(crate) async fn drop_chunks_older(
    tx: &mut sqlx::PgConnection,
    table: &str,
    secs: f64,
) -> sqlx::Result<u64> {
    let dropped = sqlx::query_scalar!(
        "select drop_chunks($1::text::regclass, older_than => now() - make_interval(secs => $2))::text",
        table,
        secs,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(dropped.len() as u64)
}
