//! The Mockstagram client: one profile fetch with time-outs, a rate ceiling, a bound on
//! requests in flight, and retries.
//!
//! Retried, with exponential backoff and full jitter, until the caller's deadline: time-outs,
//! connection errors (including a pooled connection the server closed as we used it), 429
//! (waiting at least its `Retry-After`) and 5xx other than not-found. Not retried: a 500 with
//! `InfluencerNotFoundError` (the influencer is gone), a malformed body (the answer is
//! recorded as a failed slot), other 4xx.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::StatusCode;
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    config::UpstreamSettings,
    mockstagram::{NOT_FOUND_ERROR, PROFILE_PATH, Profile},
};

/// What one fetch came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    Fetched {
        follower_count: i32,
        following_count: i32,
    },
    /// The upstream does not know this pk.
    Gone,
    /// No point for this slot; the reason is stored.
    Failed { reason: String, retryable: bool },
}

/// A fetch outcome's label for metrics (few values).
impl FetchOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            FetchOutcome::Fetched { .. } => "fetched",
            FetchOutcome::Gone => "gone",
            FetchOutcome::Failed {
                retryable: false, ..
            } => "malformed",
            FetchOutcome::Failed { .. } => "gave_up",
        }
    }
}

/// One attempt's result, before the retry decision.
enum Attempt {
    Done(FetchOutcome),
    Retry {
        reason: String,
        at_least: Duration,
        label: &'static str,
    },
}

#[derive(Clone)]
pub struct MockstagramClient {
    http: reqwest::Client,
    base: String,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    in_flight: Arc<Semaphore>,
}

/// First backoff step; doubles each attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl MockstagramClient {
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<Self> {
        let concurrency = settings.mockstagram_concurrency as usize;
        let http = reqwest::Client::builder()
            // The real server closes idle connections after 5 s: let ours go first, so a pooled
            // connection rarely races the server's close.
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(concurrency)
            .connect_timeout(Duration::from_secs(2))
            .timeout(settings.mockstagram_timeout)
            .tcp_nodelay(true)
            .build()?;
        let limiter = settings.mockstagram_rps.map(|rps| {
            let rps = NonZeroU32::new(rps.min(u32::MAX as u64) as u32).expect("rps ≥ 1");
            Arc::new(RateLimiter::direct(Quota::per_second(rps)))
        });
        Ok(Self {
            http,
            base: settings
                .mockstagram_url
                .expose()
                .trim_end_matches('/')
                .to_string(),
            limiter,
            in_flight: Arc::new(Semaphore::new(concurrency)),
        })
    }

    /// Fetches `pk`'s profile, retrying until `deadline`.
    pub async fn fetch(&self, pk: i64, deadline: Instant) -> FetchOutcome {
        let url = format!("{}{PROFILE_PATH}{pk}", self.base);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (reason, at_least, label) = match self.attempt(&url, pk, deadline).await {
                Attempt::Done(outcome) => {
                    metrics::counter!("fetches_total", "outcome" => outcome.label()).increment(1);
                    return outcome;
                }
                Attempt::Retry {
                    reason,
                    at_least,
                    label,
                } => (reason, at_least, label),
            };
            let backoff = {
                let cap = BASE_BACKOFF
                    .saturating_mul(1 << attempt.min(16))
                    .min(MAX_BACKOFF);
                rand::rng().random_range(Duration::ZERO..=cap)
            };
            let wait = backoff.max(at_least);
            if Instant::now() + wait >= deadline {
                let outcome = FetchOutcome::Failed {
                    reason: format!("gave up after {attempt} attempts: {reason}"),
                    retryable: true,
                };
                metrics::counter!("fetches_total", "outcome" => outcome.label()).increment(1);
                tracing::warn!(pk, attempt, %reason, "fetch gave up at the slot's deadline");
                return outcome;
            }
            metrics::counter!("fetch_retries_total", "reason" => label).increment(1);
            tracing::debug!(pk, attempt, %reason, wait_ms = wait.as_millis() as u64, "retrying fetch");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, url: &str, pk: i64, deadline: Instant) -> Attempt {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let _permit = self.in_flight.acquire().await.expect("never closed");
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Attempt::Retry {
                reason: "deadline passed".into(),
                at_least: Duration::ZERO,
                label: "deadline",
            };
        }
        let started = Instant::now();
        let sent = self
            .http
            .get(url)
            .timeout(remaining.min(Duration::from_secs(30)))
            .send();
        let response = match sent.await {
            Ok(response) => response,
            Err(e) => {
                let label = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                return Attempt::Retry {
                    reason: error_chain(&e),
                    at_least: Duration::ZERO,
                    label,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("reading the body: {}", error_chain(&e)),
                    at_least: Duration::ZERO,
                    label: if e.is_timeout() {
                        "timeout"
                    } else {
                        "connection"
                    },
                };
            }
        };
        metrics::histogram!("fetch_duration_seconds").record(started.elapsed().as_secs_f64());
        classify(pk, status, retry_after, &body)
    }
}

/// Decides what an answer means.
fn classify(pk: i64, status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Attempt {
    if status == StatusCode::OK {
        return Attempt::Done(match parse_profile(pk, body) {
            Ok((follower_count, following_count)) => FetchOutcome::Fetched {
                follower_count,
                following_count,
            },
            Err(reason) => {
                tracing::warn!(pk, %reason, "malformed answer from Mockstagram");
                FetchOutcome::Failed {
                    reason,
                    retryable: false,
                }
            }
        });
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR
        && std::str::from_utf8(body).is_ok_and(|b| b.contains(NOT_FOUND_ERROR))
    {
        return Attempt::Done(FetchOutcome::Gone);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            reason: "HTTP 429".into(),
            at_least: retry_after.unwrap_or(Duration::from_secs(1)),
            label: "throttled",
        };
    }
    if status.is_server_error() {
        return Attempt::Retry {
            reason: format!("HTTP {}", status.as_u16()),
            at_least: Duration::ZERO,
            label: "server_error",
        };
    }
    Attempt::Done(FetchOutcome::Failed {
        reason: format!("unexpected HTTP {}", status.as_u16()),
        retryable: false,
    })
}

/// Parses and checks a profile: the pk must be the one asked for, counts whole and ≥ 0.
pub fn parse_profile(pk: i64, body: &[u8]) -> Result<(i32, i32), String> {
    let profile: Profile =
        serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))?;
    if profile.pk != pk {
        return Err(format!("malformed body: answer is for pk {}", profile.pk));
    }
    let count = |name: &str, v: i64| {
        i32::try_from(v)
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| format!("malformed body: {name} {v} out of range"))
    };
    Ok((
        count("followerCount", profile.follower_count)?,
        count("followingCount", profile.following_count)?,
    ))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_must_be_for_the_pk_asked_with_counts_in_range() {
        let ok = br#"{"pk":5,"username":"influencer-5","followerCount":10,"followingCount":2}"#;
        assert_eq!(parse_profile(5, ok), Ok((10, 2)));
        assert!(parse_profile(6, ok).unwrap_err().contains("pk 5"));
        let negative = br#"{"pk":5,"username":"u","followerCount":-10,"followingCount":2}"#;
        assert!(parse_profile(5, negative).is_err());
        let huge = br#"{"pk":5,"username":"u","followerCount":99999999999,"followingCount":2}"#;
        assert!(parse_profile(5, huge).is_err());
        let text = br#"{"pk":5,"username":"u","followerCount":"10","followingCount":2}"#;
        assert!(parse_profile(5, text).is_err());
        assert!(parse_profile(5, br#"{"pk":5,"username":"u","followerCou"#).is_err());
    }

    #[test]
    fn not_found_is_final_and_other_500s_are_retried() {
        let gone = classify(
            5,
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            br#"{"error":{"name":"InfluencerNotFoundError"}}"#,
        );
        assert!(matches!(gone, Attempt::Done(FetchOutcome::Gone)));
        let other = classify(5, StatusCode::INTERNAL_SERVER_ERROR, None, b"{}");
        assert!(matches!(other, Attempt::Retry { .. }));
        let throttled = classify(
            5,
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"",
        );
        assert!(
            matches!(throttled, Attempt::Retry { at_least, .. } if at_least == Duration::from_secs(3))
        );
        let bad_request = classify(5, StatusCode::BAD_REQUEST, None, b"");
        assert!(matches!(
            bad_request,
            Attempt::Done(FetchOutcome::Failed {
                retryable: false,
                ..
            })
        ));
    }
}
