//! A small HTTP load generator: `clients` keep-alive clients, each sending its next request as
//! soon as the previous answer is read, for a fixed time. Latencies are measured per request.

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
    pub fn absorb(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }
}

/// Sends GETs to the URLs `url(i)` gives (i counts requests per client) for `duration`.
/// A non-2xx answer counts as an error unless `ok_status` accepts it.
pub async fn run<F>(
    clients: usize,
    duration: Duration,
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
            while Instant::now() < deadline {
                let target = url(client_no, i);
                i += 1;
                let sent = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;

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
