//! Scenario 7: hostile input to the API. Random ids, epochs, steps, limits, cursors, unknown
//! and repeated parameters, bad percent-encodings and over-long values: never a 500, every
//! refusal is a problem+json body that says what was wrong, and no request costs more than
//! the stated bound: an answer of at most [`MAX_ANSWER_BYTES`] (10,000 points, the cap, at
//! about 80 bytes each), given within [`MAX_ANSWER_TIME`] (the request timeout is 10 s).

use influencer_analytics::testing::{TestDb, shared_db_server};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use influencer_analytics::api::{ApiState, router};
use proptest::prelude::*;
use tower::ServiceExt;

use crate::common::SERIAL;

const KNOWN: i64 = 1_000_001;

/// The most one answer may weigh.
const MAX_ANSWER_BYTES: usize = 1_000_000;
/// The longest one answer may take (typical: a few milliseconds).
const MAX_ANSWER_TIME: Duration = Duration::from_secs(2);

/// Text as it may arrive in a URL: percent-encoded anything, or raw URL characters (including
/// stray `%`, `+`, `=`, `&` and `;`), occasionally very long.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        (-2_000_000_000i64..4_000_000_000).prop_map(|n| n.to_string()),
        Just(String::new()),
        "[0-9]{19,400}",
        "-?[0-9]{1,12}(\\.[0-9]{0,6})?([eE][+-]?[0-9]{1,4})?",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        "[0-9]{1,6}(ms|s|m|h|d|w|y|µs|)",
        "[a-zA-Z0-9%+=&;.~_-]{0,64}",
        any::<String>().prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
        (1usize..20_000).prop_map(|n| "9".repeat(n)),
    ]
}

fn hostile_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(KNOWN.to_string()),
        1 => hostile_text(),
    ]
}

fn hostile_query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(vec!["start_time", "end_time", "step", "limit", "cursor"])
            .prop_map(str::to_string),
        1 => hostile_text(),
    ];
    prop::collection::vec((key, hostile_text(), any::<bool>()), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, bare)| {
                if bare && v.is_empty() {
                    k
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn hostile_path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["range", "latest", "average", "top", "suspicious"]),
        hostile_id(),
        hostile_query(),
    )
        .prop_map(|(route, id, query)| {
            let path = match route {
                "range" => format!("/influencer_analytics/{id}"),
                "latest" => format!("/influencer_analytics/{id}/latest"),
                other => format!("/influencer_analytics/{other}"),
            };
            if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            }
        })
}

#[test]
fn hostile_requests_never_get_a_500_and_always_a_problem_that_explains() {
    let _serial = SERIAL.blocking_lock();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, app) = runtime.block_on(async {
        let db = TestDb::on(&shared_db_server(), 4).await;
        // One known influencer with 8 days of points, so the deeper paths run too and a range
        // may reach the 10,000-point cap.
        sqlx::query("insert into influencers (influencer_id, username) values ($1, 'known')")
            .bind(KNOWN)
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query(
            "insert into influencer_metrics
             select $1, t, t, 1000 + extract(minute from t)::int, 100
             from generate_series(now() - interval '8 days', now(), interval '1 minute') t",
        )
        .bind(KNOWN)
        .execute(&db.pool)
        .await
        .unwrap();
        let app = router(ApiState::new(db.pool.clone(), Duration::from_secs(60)));
        (db, app)
    });

    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    // The longest answer time and the largest answer seen.
    let costliest = std::cell::RefCell::new((Duration::ZERO, 0usize));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 1500,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let outcome = runner.run(&hostile_path(), |path| {
        // What no HTTP server would route (not a valid request target) is not the API's to answer.
        let Ok(uri) = path.parse::<axum::http::Uri>() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let (status, content_type, body) = runtime.block_on(async {
            let request = axum::http::Request::get(uri).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, content_type, body)
        });
        let took = started.elapsed();
        *statuses.borrow_mut().entry(status.as_u16()).or_default() += 1;
        // The first 200 bytes of the path, cut where a character ends (paths may hold
        // multi-byte characters; a cut inside one panicked).
        let mut end = path.len().min(200);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let shown = &path[..end];
        {
            let mut costliest = costliest.borrow_mut();
            costliest.0 = costliest.0.max(took);
            costliest.1 = costliest.1.max(body.len());
        }
        prop_assert!(took <= MAX_ANSWER_TIME, "{shown}: answered in {took:?}");
        prop_assert!(
            body.len() <= MAX_ANSWER_BYTES,
            "{shown}: an answer of {} bytes",
            body.len()
        );
        prop_assert!(!status.is_server_error(), "{shown}: {status} {body:?}");
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| TestCaseError::fail(format!("{shown}: {status}, not JSON ({e})")))?;
        if status.is_client_error() {
            prop_assert_eq!(&content_type, "application/problem+json", "{}", shown);
            prop_assert_eq!(json["status"].as_u64(), Some(status.as_u16() as u64));
            let detail = json["detail"].as_str().unwrap_or_default();
            prop_assert!(!detail.is_empty(), "{shown}: no detail in {json}");
            prop_assert!(
                detail.len() < 1000,
                "{shown}: the detail echoes too much: {} bytes",
                detail.len()
            );
        } else {
            prop_assert!(status.is_success(), "{shown}: {status}");
            prop_assert_eq!(&content_type, "application/json", "{}", shown);
        }
        Ok(())
    });
    let statuses = statuses.into_inner();
    let (slowest, largest) = costliest.into_inner();
    crate::common::report(
        "hostile_api",
        format!(
            "hostile_api: answers by status {statuses:?}; slowest {} ms, largest {largest} bytes (bounds {} ms, {MAX_ANSWER_BYTES} bytes)",
            slowest.as_millis(),
            MAX_ANSWER_TIME.as_millis()
        ),
    );
    drop(db);
    if let Err(e) = outcome {
        panic!("{e}");
    }
    assert!(
        statuses.keys().any(|s| *s == 200),
        "no request got through: {statuses:?}"
    );
    assert!(
        statuses.keys().any(|s| *s == 400),
        "no request was refused: {statuses:?}"
    );
}
