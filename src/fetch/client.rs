//! The Mockstagram client: one profile fetch with time-outs, a rate ceiling, a bound on
//! requests in flight, and retries.
//!
//! Retried, with exponential backoff and full jitter, until the caller's deadline: time-outs,
//! connection errors (including a pooled connection the server closed as we used it), 429
//! (waiting at least its `Retry-After`) and 5xx other than not-found. Not retried: a 500 with
//! `InfluencerNotFoundError` (the influencer is gone), a malformed body (the answer is
//! recorded as a failed slot), other 4xx.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use reqwest::StatusCode;
use tokio::{sync::Semaphore, time::Instant};

use super::{ceiling::RateCeiling, http1::Http1Client};
use crate::{
    config::UpstreamSettings,
    mockstagram::{
        IS_SUSPICIOUS_PATH, NOT_FOUND_ERROR, PROFILE_PATH, Profile, SuspiciousRequest,
        SuspiciousResponse,
    },
    retry::Backoff,
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
    /// No point for this slot; the error (as text) is stored as the slot's reason.
    Failed(UpstreamError),
}

/// Why the upstream gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Every attempt until the deadline was retryable (time-outs, 429, 5xx, connections).
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    /// A 200 whose body is not a valid answer for the pk asked (not retried: the same
    /// question would get the same kind of answer).
    #[error("malformed body: {0}")]
    Malformed(String),
    /// A status the API does not answer (a 4xx other than 429): not retried.
    #[error("unexpected HTTP {0}")]
    UnexpectedStatus(u16),
}

impl UpstreamError {
    /// A label for metrics (few values).
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::GaveUp { .. } => "gave_up",
            UpstreamError::Malformed(_) => "malformed",
            UpstreamError::UnexpectedStatus(_) => "unexpected_status",
        }
    }
}

/// Every `fetches_total` outcome, at 0: a series that exists before its first count lets an
/// alert on its rate see that count.
pub(crate) fn register_metrics() {
    for outcome in [
        "fetched",
        "gone",
        "gave_up",
        "malformed",
        "unexpected_status",
    ] {
        metrics::counter!("fetches_total", "outcome" => outcome).increment(0);
    }
}

/// A fetch outcome's label for metrics (few values).
impl FetchOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            FetchOutcome::Fetched { .. } => "fetched",
            FetchOutcome::Gone => "gone",
            FetchOutcome::Failed(error) => error.label(),
        }
    }
}

/// One attempt's result, before the retry decision.
enum Attempt<T> {
    Done(T),
    Retry(Retry),
}

/// Why an attempt should be made again, and how long to wait at least.
struct Retry {
    reason: String,
    at_least: Duration,
    label: &'static str,
}

/// An HTTP answer, read whole.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

/// One request to the upstream.
enum Request<'a> {
    Get(&'a str),
    PostJson(&'a str, &'a [u8]),
}

#[derive(Clone)]
pub struct MockstagramClient {
    http: Http1Client,
    /// `MOCKSTAGRAM_TIMEOUT`: one request's time-out (retried after).
    timeout: Duration,
    /// `MOCKSTAGRAM_RPS`, shared with the fleet's other pollers ([`RateCeiling`]).
    ceiling: Option<Arc<RateCeiling>>,
    in_flight: Arc<Semaphore>,
}

/// Between attempts: 100 ms after the first failure, doubling up to 2 s, with full jitter so
/// that many fetches failing at once (a 503 burst) do not come back at once.
const RETRY_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2)).with_full_jitter();

impl MockstagramClient {
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<Self> {
        let concurrency = settings.mockstagram_concurrency as usize;
        let ca = settings.ca_file()?;
        let http = Http1Client::new(settings.mockstagram_url.expose(), ca, concurrency)
            .map_err(|e| anyhow::anyhow!("MOCKSTAGRAM_URL: {e:#}"))?;
        let ceiling = settings.mockstagram_rps.map(|rps| {
            let rps = NonZeroU32::new(rps.min(u32::MAX as u64) as u32).expect("rps ≥ 1");
            Arc::new(RateCeiling::new(rps))
        });
        Ok(Self {
            http,
            timeout: settings.mockstagram_timeout,
            ceiling,
            in_flight: Arc::new(Semaphore::new(concurrency)),
        })
    }

    /// A client for another job against the same upstream (the classification pass in `run`):
    /// its own bound on requests in flight, the same rate ceiling (shared), connection pool
    /// and retry policy.
    pub(crate) fn with_in_flight(&self, concurrency: usize) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(concurrency.max(1))),
            ..self.clone()
        }
    }

    /// The rate ceiling, when `MOCKSTAGRAM_RPS` sets one.
    pub fn ceiling(&self) -> Option<&Arc<RateCeiling>> {
        self.ceiling.as_ref()
    }

    /// Fetches `pk`'s profile, retrying until `deadline`.
    pub async fn fetch(&self, pk: i64, deadline: Instant) -> FetchOutcome {
        let path = format!("{PROFILE_PATH}{pk}");
        let outcome = self
            .retrying(pk, deadline, || async {
                match self.exchange(Request::Get(&path), deadline).await {
                    Ok(answer) => classify(pk, answer),
                    Err(retry) => Attempt::Retry(retry),
                }
            })
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(pk, %error, "fetch gave up at the slot's deadline");
                FetchOutcome::Failed(error)
            });
        metrics::counter!("fetches_total", "outcome" => outcome.label()).increment(1);
        outcome
    }

    /// Asks the upstream's classifier about one influencer, retrying until `deadline`.
    pub async fn is_suspicious(
        &self,
        request: &SuspiciousRequest,
        deadline: Instant,
    ) -> Result<bool, UpstreamError> {
        let json = serde_json::to_vec(request).expect("a profile serializes");
        self.retrying(request.pk, deadline, || async {
            match self
                .exchange(Request::PostJson(IS_SUSPICIOUS_PATH, &json), deadline)
                .await
            {
                Ok(answer) => classify_verdict(request.pk, answer),
                Err(retry) => Attempt::Retry(retry),
            }
        })
        .await
        .and_then(|verdict| verdict)
    }

    /// Runs `attempt` until it is done, waiting between attempts (exponential backoff with full
    /// jitter, at least a 429's Retry-After); gives up when the next wait would pass `deadline`.
    async fn retrying<T, F, Fut>(
        &self,
        pk: i64,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let retry = match attempt().await {
                Attempt::Done(done) => return Ok(done),
                Attempt::Retry(retry) => retry,
            };
            let wait = RETRY_BACKOFF.wait(attempts).max(retry.at_least);
            if Instant::now() + wait >= deadline {
                return Err(UpstreamError::GaveUp {
                    attempts,
                    last: retry.reason,
                });
            }
            metrics::counter!("fetch_retries_total", "reason" => retry.label).increment(1);
            tracing::debug!(pk, attempts, reason = %retry.reason, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One request under the rate ceiling and the in-flight bound, its answer read whole.
    async fn exchange(&self, request: Request<'_>, deadline: Instant) -> Result<Answer, Retry> {
        let deadline_passed = || Retry {
            reason: "deadline passed".into(),
            at_least: Duration::ZERO,
            label: "deadline",
        };
        // A place in flight first, then a token of the rate ceiling, each waited for until the
        // deadline at most: a token is spent only on a request sent at once. (Taken first, a
        // token was spent on requests that then waited past their deadline and were never
        // sent: under overload the upstream saw about half the ceiling.)
        let Ok(permit) = tokio::time::timeout_at(deadline, self.in_flight.acquire()).await else {
            return Err(deadline_passed());
        };
        let _permit = permit.expect("never closed");
        if let Some(ceiling) = &self.ceiling
            && tokio::time::timeout_at(deadline, ceiling.until_ready())
                .await
                .is_err()
        {
            return Err(deadline_passed());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(deadline_passed());
        }
        let started = Instant::now();
        // One request's time-out: `MOCKSTAGRAM_TIMEOUT`, or the time left if less.
        let timeout = remaining.min(self.timeout);
        let answered = match request {
            Request::Get(path) => self.http.get(path, timeout).await,
            Request::PostJson(path, json) => self.http.post_json(path, json, timeout).await,
        };
        let answer = answered.map_err(|e| Retry {
            reason: e.to_string(),
            at_least: Duration::ZERO,
            label: if e.is_timeout() {
                "timeout"
            } else {
                "connection"
            },
        })?;
        metrics::histogram!("fetch_duration_seconds").record(started.elapsed().as_secs_f64());
        let status = StatusCode::from_u16(answer.status).map_err(|_| Retry {
            reason: format!("HTTP status {}", answer.status),
            at_least: Duration::ZERO,
            label: "connection",
        })?;
        Ok(Answer {
            status,
            retry_after: answer.retry_after,
            body: answer.body,
        })
    }
}

/// Answers every endpoint treats alike: 429 and 5xx are retried.
fn retry_for(answer: &Answer) -> Option<Retry> {
    if answer.status == StatusCode::TOO_MANY_REQUESTS {
        return Some(Retry {
            reason: "HTTP 429".into(),
            at_least: answer.retry_after.unwrap_or(Duration::from_secs(1)),
            label: "throttled",
        });
    }
    if answer.status.is_server_error() {
        return Some(Retry {
            reason: format!("HTTP {}", answer.status.as_u16()),
            at_least: Duration::ZERO,
            label: "server_error",
        });
    }
    None
}

/// What an is_suspicious answer means.
fn classify_verdict(pk: i64, answer: Answer) -> Attempt<Result<bool, UpstreamError>> {
    if answer.status == StatusCode::OK {
        return Attempt::Done(
            serde_json::from_slice::<SuspiciousResponse>(&answer.body)
                .map(|r| r.suspicious)
                .map_err(|e| {
                    tracing::warn!(pk, error = %e, "malformed is_suspicious answer");
                    UpstreamError::Malformed(e.to_string())
                }),
        );
    }
    match retry_for(&answer) {
        Some(retry) => Attempt::Retry(retry),
        None => Attempt::Done(Err(UpstreamError::UnexpectedStatus(answer.status.as_u16()))),
    }
}

/// Decides what a profile answer means.
fn classify(pk: i64, answer: Answer) -> Attempt<FetchOutcome> {
    if answer.status == StatusCode::OK {
        return Attempt::Done(match parse_profile(pk, &answer.body) {
            Ok((follower_count, following_count)) => FetchOutcome::Fetched {
                follower_count,
                following_count,
            },
            Err(error) => {
                tracing::warn!(pk, %error, "malformed answer from Mockstagram");
                FetchOutcome::Failed(error)
            }
        });
    }
    if answer.status == StatusCode::INTERNAL_SERVER_ERROR
        && std::str::from_utf8(&answer.body).is_ok_and(|b| b.contains(NOT_FOUND_ERROR))
    {
        return Attempt::Done(FetchOutcome::Gone);
    }
    match retry_for(&answer) {
        Some(retry) => Attempt::Retry(retry),
        None => Attempt::Done(FetchOutcome::Failed(UpstreamError::UnexpectedStatus(
            answer.status.as_u16(),
        ))),
    }
}

/// Parses and checks a profile: the pk must be the one asked for, counts whole and ≥ 0.
pub fn parse_profile(pk: i64, body: &[u8]) -> Result<(i32, i32), UpstreamError> {
    let malformed = UpstreamError::Malformed;
    let profile: Profile = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    if profile.pk != pk {
        return Err(malformed(format!("answer is for pk {}", profile.pk)));
    }
    let count = |name: &str, v: i64| {
        i32::try_from(v)
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| malformed(format!("{name} {v} out of range")))
    };
    Ok((
        count("followerCount", profile.follower_count)?,
        count("followingCount", profile.following_count)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_must_be_for_the_pk_asked_with_counts_in_range() {
        let ok = br#"{"pk":5,"username":"influencer-5","followerCount":10,"followingCount":2}"#;
        assert_eq!(parse_profile(5, ok), Ok((10, 2)));
        let wrong_pk = parse_profile(6, ok).unwrap_err();
        assert_eq!(wrong_pk.to_string(), "malformed body: answer is for pk 5");
        assert_eq!(wrong_pk.label(), "malformed");
        let negative = br#"{"pk":5,"username":"u","followerCount":-10,"followingCount":2}"#;
        assert!(parse_profile(5, negative).is_err());
        let huge = br#"{"pk":5,"username":"u","followerCount":99999999999,"followingCount":2}"#;
        assert!(parse_profile(5, huge).is_err());
        let text = br#"{"pk":5,"username":"u","followerCount":"10","followingCount":2}"#;
        assert!(parse_profile(5, text).is_err());
        assert!(parse_profile(5, br#"{"pk":5,"username":"u","followerCou"#).is_err());
    }

    fn answer(status: StatusCode, retry_after: Option<u64>, body: &'static [u8]) -> Answer {
        Answer {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: body.to_vec(),
        }
    }

    #[test]
    fn not_found_is_final_and_other_500s_are_retried() {
        let not_found = br#"{"error":{"name":"InfluencerNotFoundError"}}"#;
        let gone = classify(
            5,
            answer(StatusCode::INTERNAL_SERVER_ERROR, None, not_found),
        );
        assert!(matches!(gone, Attempt::Done(FetchOutcome::Gone)));
        let other = classify(5, answer(StatusCode::INTERNAL_SERVER_ERROR, None, b"{}"));
        assert!(matches!(other, Attempt::Retry(_)));
        let throttled = classify(5, answer(StatusCode::TOO_MANY_REQUESTS, Some(3), b""));
        assert!(matches!(throttled, Attempt::Retry(r) if r.at_least == Duration::from_secs(3)));
        let bad_request = classify(5, answer(StatusCode::BAD_REQUEST, None, b""));
        let Attempt::Done(outcome) = bad_request else {
            panic!("a 400 is not retried");
        };
        assert_eq!(
            outcome,
            FetchOutcome::Failed(UpstreamError::UnexpectedStatus(400))
        );
        assert_eq!(
            outcome.label(),
            "unexpected_status",
            "not counted as malformed"
        );
    }

    #[test]
    fn a_verdict_is_read_from_the_answer_and_errors_are_retried() {
        let yes = classify_verdict(
            5,
            answer(StatusCode::OK, None, br#"{"pk":5,"suspicious":true}"#),
        );
        assert!(matches!(yes, Attempt::Done(Ok(true))));
        let garbage = classify_verdict(5, answer(StatusCode::OK, None, b"{"));
        assert!(matches!(garbage, Attempt::Done(Err(_))));
        let busy = classify_verdict(5, answer(StatusCode::SERVICE_UNAVAILABLE, None, b""));
        assert!(matches!(busy, Attempt::Retry(_)));
    }
}
