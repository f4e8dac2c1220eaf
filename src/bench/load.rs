//! A small HTTP load generator: `clients` keep-alive clients for a fixed time, either each
//! sending its next request as soon as the previous answer is read ([`run`]: the most the
//! server can answer, where latency is only queueing, clients ÷ rate), or together at a fixed
//! rate ([`run_at_rate`]: the latency a given load meets). Latencies are measured per request.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// What a load run measured.
#[derive(Debug, Default)]
pub struct Load {
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another run's requests and time to this one (runs measured in rounds).
    pub(crate) fn absorb(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }
}

/// Sends GETs to the URLs `url(i)` gives (i counts requests per client) for `duration`, each
/// client its next as soon as it has read the previous answer. A non-2xx answer counts as an
/// error unless `ok_status` accepts it.
pub async fn run<F>(
    clients: usize,
    duration: Duration,
    url: F,
    ok_status: fn(u16) -> bool,
) -> anyhow::Result<Load>
where
    F: Fn(usize, u64) -> String + Send + Sync + 'static,
{
    drive(clients, duration, None, url, ok_status).await
}

/// Like [`run`], but the clients together send `rate` requests a second: client c sends its
/// i-th request at `(i × clients + c) ÷ rate` seconds from the start, or as soon as its previous
/// answer is in if that is later. A request's latency counts from the time it was due, not from
/// when it could be sent, so a server that falls behind is charged the wait it caused (what
/// wrk2 calls correcting for coordinated omission); the achieved rate ([`Load::rate`]) shows
/// whether the load was kept.
pub(crate) async fn run_at_rate<F>(
    clients: usize,
    rate: f64,
    duration: Duration,
    url: F,
    ok_status: fn(u16) -> bool,
) -> anyhow::Result<Load>
where
    F: Fn(usize, u64) -> String + Send + Sync + 'static,
{
    anyhow::ensure!(
        rate > 0.0,
        "a fixed-rate load needs a positive rate, not {rate}"
    );
    drive(clients, duration, Some(rate), url, ok_status).await
}

/// When client `client` of `clients` is due to send its `i`-th request at `rate` a second in
/// all, from the start.
fn due_after(client: usize, clients: usize, i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64((i as f64 * clients as f64 + client as f64) / rate)
}

async fn drive<F>(
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
    url: F,
    ok_status: fn(u16) -> bool,
) -> anyhow::Result<Load>
where
    F: Fn(usize, u64) -> String + Send + Sync + 'static,
{
    let url = Arc::new(url);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client_no in 0..clients {
        let url = url.clone();
        let http = crate::tls::http_client_builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()?;
        tasks.push(tokio::spawn(async move {
            let mut load = Load::default();
            let mut i = 0u64;
            loop {
                let sent = match rate {
                    Some(rate) => {
                        let due = started + due_after(client_no, clients, i, rate);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                // Requests still due when the time is up are not sent (nor counted).
                if sent >= deadline || Instant::now() >= deadline {
                    break;
                }
                let target = url(client_no, i);
                i += 1;
                match http.get(&target).send().await {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let body = answer.bytes().await;
                        if body.is_ok() && ok_status(status) {
                            load.latencies.push(sent.elapsed());
                        } else {
                            load.errors += 1;
                        }
                    }
                    Err(_) => load.errors += 1,
                }
            }
            load
        }));
    }
    let mut total = Load::default();
    for task in tasks {
        // The clients ran side by side: their requests add up, their time does not.
        total.absorb(Load {
            elapsed: Duration::ZERO,
            ..task.await?
        });
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// 2xx only.
pub fn success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The cumulative buckets `(le, count)` of one series of a Prometheus histogram in a text
/// exposition: the `{metric}_bucket` lines whose labels hold `label` (e.g.
/// `route="/influencer_analytics/{id}"`), in the order of their bounds (`+Inf` last).
pub(crate) fn histogram_buckets(exposition: &str, metric: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{metric}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = exposition
        .lines()
        .filter_map(|line| {
            let labels_and_value = line.strip_prefix(&prefix)?;
            let (labels, value) = labels_and_value.rsplit_once("} ")?;
            if !labels.split(',').any(|l| l == label) {
                return None;
            }
            let le = labels.split(',').find_map(|l| l.strip_prefix("le=\""))?;
            let le = le.trim_end_matches('"');
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// What was observed between two scrapes of the same histogram: `after`'s counts less
/// `before`'s, bucket by bucket (a bucket missing before counts from zero).
pub(crate) fn histogram_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, count)| {
            let earlier = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, count - earlier)
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated within its bucket as Prometheus'
/// `histogram_quantile` does (a quantile in the `+Inf` bucket is the highest finite bound);
/// none without observations.
pub(crate) fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histograms_quantile_is_read_from_its_buckets_between_two_scrapes() {
        let route = r#"route="/influencer_analytics/{id}""#;
        let scrape = |counts: [u32; 4]| {
            format!(
                "# TYPE http_request_duration_seconds histogram\n\
                 http_request_duration_seconds_bucket{{route=\"/other\",le=\"0.01\"}} 999\n\
                 http_request_duration_seconds_bucket{{{route},le=\"0.01\"}} {}\n\
                 http_request_duration_seconds_bucket{{{route},le=\"+Inf\"}} {}\n\
                 http_request_duration_seconds_bucket{{{route},le=\"0.001\"}} {}\n\
                 http_request_duration_seconds_bucket{{{route},le=\"0.1\"}} {}\n\
                 http_request_duration_seconds_sum{{{route}}} 1.5\n",
                counts[1], counts[3], counts[0], counts[2]
            )
        };
        let metric = "http_request_duration_seconds";
        let before = histogram_buckets(&scrape([10, 20, 20, 20]), metric, route);
        assert_eq!(
            before,
            vec![
                (0.001, 10.0),
                (0.01, 20.0),
                (0.1, 20.0),
                (f64::INFINITY, 20.0)
            ]
        );
        // 100 more: 50 under 1 ms, 30 in 1-10 ms, 20 in 10-100 ms
        let after = histogram_buckets(&scrape([60, 100, 120, 120]), metric, route);
        let delta = histogram_delta(&before, &after);
        assert_eq!(
            delta,
            vec![
                (0.001, 50.0),
                (0.01, 80.0),
                (0.1, 100.0),
                (f64::INFINITY, 100.0)
            ]
        );
        let near = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-12;
        assert!(near(histogram_quantile(&delta, 0.25), 0.0005));
        // rank 65: 15 of the 30 in (1 ms, 10 ms]
        assert!(near(histogram_quantile(&delta, 0.65), 0.0055));
        // rank 99: 19 of the 20 in (10 ms, 100 ms]
        assert!(near(histogram_quantile(&delta, 0.99), 0.0955));
        // beyond the last finite bound: that bound
        let slow = [(0.1, 0.0), (f64::INFINITY, 5.0)];
        assert!(near(histogram_quantile(&slow, 0.99), 0.1));
        assert_eq!(
            histogram_quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5),
            None
        );
        assert_eq!(histogram_quantile(&[], 0.5), None);
    }

    #[test]
    fn fixed_rate_clients_take_turns_at_even_intervals() {
        // 4 clients at 100 a second: one request every 10 ms, client by client.
        let dues: Vec<Duration> = (0..2u64)
            .flat_map(|i| (0..4).map(move |c| due_after(c, 4, i, 100.0)))
            .collect();
        let ms: Vec<u128> = dues.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 10, 20, 30, 40, 50, 60, 70]);
    }

    /// A stand-in server that answers every request after `delay`.
    async fn slow_server(delay: Duration) -> String {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move {
                tokio::time::sleep(delay).await;
                "ok"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_server_behind_a_fixed_rate_is_charged_the_wait_it_caused() {
        // One client due every 10 ms against a server that takes 40 ms: request k is due at
        // 10k ms but cannot be sent before the k answers ahead of it, at 40k ms or later, so
        // its latency is at least 30k + 40 ms (sending as soon as possible would measure each
        // at about 40 ms). None is sent once the time is up.
        let url = slow_server(Duration::from_millis(40)).await;
        let at_rate = run_at_rate(
            1,
            100.0,
            Duration::from_millis(600),
            move |_, _| url.clone(),
            success,
        )
        .await
        .unwrap();
        assert_eq!(at_rate.errors, 0);
        let n = at_rate.latencies.len();
        // At least two (the second is due 10 ms in); at most one every 40 ms of the 600.
        assert!((2..=16).contains(&n), "{n} requests");
        for (k, latency) in at_rate.latencies.iter().enumerate() {
            let floor = Duration::from_millis(30 * k as u64 + 40);
            assert!(*latency >= floor, "request {k}: {latency:?} < {floor:?}");
        }
    }

    #[test]
    fn rounds_absorbed_into_one_load_give_the_rate_over_their_summed_time() {
        let round = |requests: usize, errors: u64, seconds: u64| Load {
            latencies: vec![Duration::from_millis(5); requests],
            errors,
            elapsed: Duration::from_secs(seconds),
        };
        let mut total = Load::default();
        total.absorb(round(300, 1, 2));
        total.absorb(round(100, 2, 2));
        assert_eq!(total.latencies.len(), 400);
        assert_eq!(total.errors, 3);
        assert_eq!(total.elapsed, Duration::from_secs(4));
        assert!((total.rate() - 100.0).abs() < 1e-9, "{}", total.rate());
    }
}
