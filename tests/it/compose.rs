//! Issue 18: `docker-compose.yml` hard-coded every setting and its roles had no healthcheck.
//! CI validates the file with `docker-compose config`; this checks what it promises.

use std::collections::BTreeSet;

use clap::CommandFactory;
use influencer_analytics::cli::Cli;

fn compose() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .expect("docker-compose.yml")
}

/// Every environment variable some subcommand reads.
fn settings_of_the_binary() -> BTreeSet<String> {
    fn walk(command: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                into.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, into);
        }
    }
    let mut settings = BTreeSet::new();
    walk(&Cli::command(), &mut settings);
    settings
}

/// The `NAME: value` lines of the block that follows `header` (until its indentation ends).
fn block_after<'a>(text: &'a str, header: &str) -> Vec<(&'a str, &'a str)> {
    let mut lines = text.lines().skip_while(|l| !l.contains(header));
    let header_line = lines.next().expect("the block's header");
    let indent = header_line.len() - header_line.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(": "))
        .collect()
}

#[test]
fn every_compose_setting_comes_from_the_environment_with_a_default() {
    let text = compose();
    let known = settings_of_the_binary();
    let settings = block_after(&text, "environment: &app-env");
    assert!(settings.len() >= 12, "{settings:?}");
    for (name, value) in settings {
        // RUST_LOG is read by the log filter, not the command line.
        assert!(
            known.contains(name) || name == "RUST_LOG",
            "{name} is no setting of the binary"
        );
        // METRICS_ADDR is the container's own listener, which the healthchecks and
        // Prometheus's targets name: fixed on purpose.
        if name != "METRICS_ADDR" {
            assert!(
                value.starts_with(&format!("${{{name}:-")) && value.ends_with('}'),
                "{name}: {value} is not overridable as ${{{name}:-default}}"
            );
        }
    }
}

#[test]
fn every_role_container_checks_its_readiness() {
    let text = compose();
    let healthcheck = text
        .split("x-app: &app")
        .nth(1)
        .and_then(|rest| rest.split("services:").next())
        .expect("the shared role definition");
    assert!(
        healthcheck.contains("http://127.0.0.1:9100/readyz"),
        "the roles' shared healthcheck asks METRICS_ADDR's /readyz"
    );
    for role in ["poll", "sink", "classify", "serve"] {
        let service = block_after(&text, &format!("  {role}:"));
        assert!(
            service.contains(&("<<", "*app")),
            "{role} inherits the shared role definition (and its healthcheck): {service:?}"
        );
    }
    let serve = text.split("\n  serve:").nth(1).expect("the serve service");
    let serve = serve.split("\n  # ").next().unwrap();
    assert!(
        serve.contains("http://127.0.0.1:8080/readyz"),
        "serve is checked on the API's /readyz: {serve}"
    );
}
