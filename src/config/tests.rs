//! The unit tests of `config`.

use super::*;

#[test]
fn service_url_display_hides_the_password() {
    let url = amqp_url("amqp://guest:secret@127.0.0.1:5672/%2f").unwrap();
    assert_eq!(url.to_string(), "amqp://guest:***@127.0.0.1:5672/%2f");
    assert!(url.expose().contains("secret"));
}

#[test]
fn amqp_url_lists_a_cluster_s_nodes_in_order() {
    let urls = amqp_url(
        "amqp://guest:secret@127.0.0.1:5681/%2f, amqp://guest:secret@127.0.0.2:5682/%2f,127.0.0.3:5683",
    )
    .unwrap();
    let nodes: Vec<String> = urls
        .nodes()
        .iter()
        .map(|n| n.expose().to_string())
        .collect();
    assert_eq!(
        nodes,
        [
            "amqp://guest:secret@127.0.0.1:5681/%2f",
            "amqp://guest:secret@127.0.0.2:5682/%2f",
            // host:port alone takes the first's scheme, user, password and vhost
            "amqp://guest:secret@127.0.0.3:5683/%2f",
        ]
    );
    assert_eq!(
        urls.to_string(),
        "amqp://guest:***@127.0.0.1:5681/%2f,amqp://guest:***@127.0.0.2:5682/%2f,amqp://guest:***@127.0.0.3:5683/%2f"
    );
    // what a child process is handed parses back to the same list
    assert_eq!(amqp_url(&urls.expose()).unwrap(), urls);
    assert_eq!(urls.first().url().port(), Some(5681));
}

#[test]
fn amqp_url_names_the_address_at_fault() {
    let err = amqp_url("amqp://127.0.0.1:5681/%2f,,127.0.0.1:5683").unwrap_err();
    assert!(err.contains("address 2"), "{err}");
    let err = amqp_url("amqp://127.0.0.1:5681/%2f,127.0.0.1:port").unwrap_err();
    assert!(err.contains("address 2 (127.0.0.1:port)"), "{err}");
    let err = amqp_url("amqp://127.0.0.1:5681/%2f,amqps://127.0.0.1:5682/%2f").unwrap_err();
    assert!(
        err.contains("amqps://") && err.contains("address 2"),
        "{err}"
    );
    let err = amqp_url("amqp://127.0.0.1:5681/%2f,http://127.0.0.1/").unwrap_err();
    assert!(err.contains("address 2"), "{err}");
}

#[test]
fn postgres_url_needs_a_database_name() {
    assert!(postgres_url("postgres://postgres@127.0.0.1:5433").is_err());
    assert!(postgres_url("postgres://postgres@127.0.0.1:5433/db").is_ok());
    let err = postgres_url("mysql://127.0.0.1/db").unwrap_err();
    assert!(err.contains("postgres://"), "{err}");
}

#[test]
fn durations_accept_short_test_values_and_reject_zero() {
    assert_eq!(duration("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(duration("1m").unwrap(), Duration::from_secs(60));
    assert!(duration("0s").is_err());
    assert!(duration("soon").is_err());
    assert!(duration("60").is_err(), "a bare number has no unit");
}

#[test]
fn a_poll_interval_under_83_ms_is_refused() {
    assert_eq!(poll_interval("83ms").unwrap(), MIN_POLL_INTERVAL);
    assert_eq!(poll_interval("2s").unwrap(), Duration::from_secs(2));
    let refused = poll_interval("82ms").unwrap_err();
    assert!(refused.contains("at least 83ms"), "{refused}");
    assert!(poll_interval("0s").is_err());
}

#[test]
fn shares_are_between_zero_and_one() {
    assert_eq!(share("0.05").unwrap(), 0.05);
    assert!(share("1.5").is_err());
    assert!(share("-0.1").is_err());
    assert!(share("NaN").is_err());
}

#[test]
fn a_ca_file_goes_only_with_a_url_that_uses_tls() {
    let dir = std::env::temp_dir().join(format!("ia-config-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&path, cert.cert.pem()).unwrap();
    let ca = crate::tls::ca_file(path.to_str().unwrap()).unwrap();

    let mut broker = BrokerSettings::new(amqp_url("amqp://127.0.0.1/%2f").unwrap(), "t");
    assert!(
        broker.ca_file().unwrap().is_none(),
        "no CA file, no TLS: fine"
    );
    broker.amqp_ca_file = Some(ca.clone());
    let error = broker.ca_file().unwrap_err().to_string();
    assert!(
        error.starts_with("AMQP_CA_FILE=") && error.contains("AMQP_URL amqp://127.0.0.1"),
        "{error}"
    );
    assert!(error.contains("use amqps://"), "{error}");
    broker.amqp_url = amqp_url("amqps://127.0.0.1/%2f").unwrap();
    assert!(broker.ca_file().unwrap().is_some());

    let upstream = |url: &str| UpstreamSettings {
        mockstagram_url: http_url(url).unwrap(),
        mockstagram_rps: None,
        mockstagram_timeout: Duration::from_secs(5),
        mockstagram_concurrency: 1,
        mockstagram_ca_file: Some(ca.clone()),
    };
    let error = upstream("http://127.0.0.1:3000")
        .ca_file()
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("MOCKSTAGRAM_CA_FILE=") && error.contains("use https://"),
        "{error}"
    );
    assert!(
        upstream("https://127.0.0.1:3000")
            .ca_file()
            .unwrap()
            .is_some()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_compaction_pace_is_a_share_of_the_time_it_may_work() {
    assert_eq!(pace("0.4").unwrap(), 0.4);
    assert_eq!(pace("1").unwrap(), 1.0);
    for bad in ["0", "0.01", "1.5", "NaN", "fast"] {
        let error = pace(bad).unwrap_err();
        assert!(error.contains("0.05 to 1"), "{bad}: {error}");
    }
}

#[test]
fn times_of_day_are_hours_and_minutes() {
    assert_eq!(
        time_of_day("03:30").unwrap(),
        chrono::NaiveTime::from_hms_opt(3, 30, 0).unwrap()
    );
    assert!(time_of_day("00:00:30").is_ok());
    assert!(time_of_day("24:00").is_err());
    assert!(time_of_day("3pm").is_err());
    assert!(spike_z("2").is_err());
    assert!(spike_z("inf").is_err());
    assert_eq!(spike_z("8").unwrap(), 8.0);
}

#[test]
fn queue_prefix_rejects_characters_rabbitmq_names_should_not_carry() {
    assert!(queue_prefix("test_ab12").is_ok());
    assert!(queue_prefix("has space").is_err());
    assert!(queue_prefix("").is_err());
}

#[test]
fn cors_origins_are_bare_web_origins_or_a_star() {
    assert_eq!(cors_origin("*").unwrap(), CorsOrigin::Any);
    assert_eq!(
        cors_origin("https://Dash.Example.com").unwrap(),
        CorsOrigin::Exact("https://dash.example.com".into())
    );
    assert_eq!(
        cors_origin("http://localhost:5173").unwrap(),
        CorsOrigin::Exact("http://localhost:5173".into())
    );
    assert_eq!(
        cors_origin("https://example.com:443").unwrap(),
        CorsOrigin::Exact("https://example.com".into()),
        "the default port is left out, as browsers send it"
    );
    for bad in [
        "example.com",
        "https://example.com/",
        "https://example.com/app",
        "ftp://example.com",
        "https://example.com?x=1",
    ] {
        assert!(cors_origin(bad).is_err(), "{bad}");
    }
}
