//! The binary's command-line contract: subcommands, and misconfiguration named in one line.

use std::process::Command;

use crate::helpers::base_database_url;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_influencer-analytics"));
    for var in [
        "DATABASE_URL",
        "AMQP_URL",
        "MOCKSTAGRAM_URL",
        "POLL_INTERVAL",
        "LISTEN_ADDR",
    ] {
        command.env_remove(var);
    }
    command
}

#[test]
fn every_role_has_help() {
    for role in [
        "migrate", "simulate", "seed", "poll", "sink", "serve", "classify", "run",
    ] {
        let output = binary().args([role, "--help"]).output().unwrap();
        assert!(output.status.success(), "{role} --help");
        let help = String::from_utf8(output.stdout).unwrap();
        assert!(
            help.contains("Usage: influencer-analytics"),
            "{role}: {help}"
        );
    }
}

#[test]
fn a_wrong_environment_value_stops_with_one_line_naming_it() {
    let output = binary()
        .arg("poll")
        .env("POLL_INTERVAL", "every minute")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: POLL_INTERVAL (--poll-interval)"),
        "{stderr}"
    );
    assert!(stderr.contains("expected a duration"), "{stderr}");

    let output = binary()
        .arg("serve")
        .env("LISTEN_ADDR", "localhost")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: LISTEN_ADDR (--listen-addr)"),
        "{stderr}"
    );

    let output = binary()
        .arg("migrate")
        .env("DATABASE_URL", "mysql://localhost/x")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: DATABASE_URL (--database-url)"),
        "{stderr}"
    );
    assert!(stderr.contains("postgres://"), "{stderr}");
}

#[test]
fn an_unreachable_database_is_named_with_its_password_hidden() {
    // Port 1 on loopback: nothing listens there.
    let output = binary()
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://app:s3cret@127.0.0.1:1/influencer_analytics",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("postgres://app:***@127.0.0.1:1/influencer_analytics"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(stderr.contains("scripts/services up"), "{stderr}");
}

#[test]
fn migrate_creates_a_missing_database() {
    let name = format!("ia_test_cli_{:016x}", rand::random::<u64>());
    let mut url = url::Url::parse(&base_database_url()).unwrap();
    url.set_path(&name);
    let output = binary()
        .arg("migrate")
        .env("DATABASE_URL", url.as_str())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("migrations applied")
    );
    url.set_path("postgres");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(url.as_str()).await.unwrap();
        sqlx::query(&format!("drop database {name} with (force)"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}
