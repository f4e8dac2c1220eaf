//! Issue 18: monitoring with the real Prometheus (Debian's `prometheus` package, which
//! `scripts/test` installs). The repository's configuration and rules load (`promtool
//! check`); a Prometheus with the same jobs and rules, its targets pointed at running role
//! processes, finds every target up, every recorded signal of `monitoring/rules.yml` and every
//! query of the Grafana dashboard with data, and every rule healthy.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::cli::{Scratch, binary, closed_port, run_ok};

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("monitoring")
        .join(file)
}

/// Child processes killed when the test ends, however it ends.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Processes {
    fn role(&mut self, scratch: &Scratch, args: &[&str], env: &[(&str, String)]) {
        let child = binary()
            .args(args)
            .env("DATABASE_URL", scratch.url.as_str())
            .env("QUEUE_PREFIX", &scratch.prefix)
            .env("POLL_INTERVAL", "2s")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.0.push(child);
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The recorded series of the rules file (`- record: name`).
fn recorded_series(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_string)
        .collect()
}

/// Every query of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring("grafana/dashboards/pipeline.json")).unwrap(),
    )
    .unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect()
}

async fn prometheus_get(base: &str, path: &str, query: &[(&str, &str)]) -> Option<Value> {
    let mut url = url::Url::parse(&format!("{base}{path}")).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    let answer = influencer_analytics::tls::http_client()
        .get(url)
        .send()
        .await
        .ok()?;
    answer.json().await.ok()
}

#[test]
fn prometheus_scrapes_every_role_and_every_rule_and_dashboard_query_has_data() {
    let config = monitoring("prometheus.yml");
    let rules = monitoring("rules.yml");
    promtool(&["check", "config", config.to_str().unwrap()]);
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let recorded = recorded_series(&rules_text);
    assert!(recorded.len() >= 8, "{recorded:?}");
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");

    let scratch = Scratch::new();
    run_ok(&["migrate"], &scratch.url);
    let mut processes = Processes::default();
    let port = |_: &str| format!("127.0.0.1:{}", closed_port());
    let (simulator, poll, sink, serve_ops, classify, api) = (
        port("simulator"),
        port("poll"),
        port("sink"),
        port("serve"),
        port("classify"),
        port("api"),
    );
    let upstream = ("MOCKSTAGRAM_URL", format!("http://{simulator}"));
    processes.role(
        &scratch,
        &["simulate"],
        &[
            ("SIMULATOR_LISTEN", simulator.clone()),
            ("SIMULATOR_POPULATION", "200".into()),
        ],
    );
    let seeded = binary()
        .args(["seed", "--count", "200"])
        .env("DATABASE_URL", scratch.url.as_str())
        .env("QUEUE_PREFIX", &scratch.prefix)
        .env("POLL_INTERVAL", "2s")
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    processes.role(
        &scratch,
        &["poll"],
        &[
            upstream.clone(),
            ("MOCKSTAGRAM_RPS", "1000".into()),
            ("METRICS_ADDR", poll.clone()),
        ],
    );
    processes.role(&scratch, &["sink"], &[("METRICS_ADDR", sink.clone())]);
    processes.role(
        &scratch,
        &["serve"],
        &[
            ("LISTEN_ADDR", api.clone()),
            ("METRICS_ADDR", serve_ops.clone()),
        ],
    );
    processes.role(
        &scratch,
        &["classify", "--daily"],
        &[upstream.clone(), ("METRICS_ADDR", classify.clone())],
    );

    // The repository's configuration with its targets here, scraping and evaluating every
    // second; the rules file itself.
    let dir = tempfile::tempdir().unwrap();
    let mut local = std::fs::read_to_string(&config).unwrap();
    for (target, here) in [
        ("poll:9100", &poll),
        ("sink:9100", &sink),
        ("serve:9100", &serve_ops),
        ("classify:9100", &classify),
        ("simulator:3000", &simulator),
    ] {
        assert!(local.contains(target), "{target} in prometheus.yml");
        local = local.replace(target, here);
    }
    local = local
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("  - rules.yml", &format!("  - {}", rules.display()));
    let local_config = dir.path().join("prometheus.yml");
    std::fs::write(&local_config, local).unwrap();
    let prometheus_addr = port("prometheus");
    processes.0.push(
        Command::new("prometheus")
            .arg(format!("--config.file={}", local_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/test installs it)"),
    );
    let base = format!("http://{prometheus_addr}");
    // On a runtime of its own, so that the scratch database is dropped outside it.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(everything_answers(
            &base,
            &api,
            &recorded,
            &queries,
            &rules_text,
        ));
}

/// Waits until every target is up and every recorded series and dashboard query has data
/// (with API requests meanwhile, for the API's series); then every rule is healthy.
async fn everything_answers(
    base: &str,
    api: &str,
    recorded: &[String],
    queries: &[String],
    rules_text: &str,
) {
    // Until everything answers, with API requests for the API's series.
    let deadline = Instant::now() + Duration::from_secs(120);
    let http = influencer_analytics::tls::http_client();
    let missing = loop {
        for path in [
            "/influencer_analytics/average",
            "/influencer_analytics/1000001",
            "/nope",
        ] {
            let _ = http.get(format!("http://{api}{path}")).send().await;
        }
        let mut missing = Vec::new();
        match prometheus_get(base, "/api/v1/targets", &[]).await {
            Some(targets) => {
                let active = targets["data"]["activeTargets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if active.len() != 5 {
                    missing.push(format!("{} active targets of 5", active.len()));
                }
                for target in active {
                    if target["health"] != "up" {
                        missing.push(format!(
                            "target {} is {}: {}",
                            target["labels"]["job"], target["health"], target["lastError"]
                        ));
                    }
                }
            }
            None => missing.push("Prometheus does not answer".into()),
        }
        for query in recorded.iter().chain(queries) {
            let answer = prometheus_get(base, "/api/v1/query", &[("query", query)]).await;
            let results = answer
                .as_ref()
                .and_then(|a| a["data"]["result"].as_array())
                .map_or(0, Vec::len);
            if results == 0 {
                missing.push(format!("no data for {query}"));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(missing.is_empty(), "{missing:#?}");

    let rules = prometheus_get(base, "/api/v1/rules", &[]).await.unwrap();
    let mut seen = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            seen += 1;
            assert_eq!(rule["health"], "ok", "{rule}");
        }
    }
    assert_eq!(
        seen,
        rules_text.matches("- record: ").count() + rules_text.matches("- alert: ").count()
    );
}
