//! Retries with exponential backoff and jitter, for transient errors only.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::FetchError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: try once).
    pub retries: u32,
    /// Delay before the first retry, before jitter.
    pub base: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (0-based): `base * 2^retry`,
    /// capped at `max`, then "equal jitter" (a uniform pick from its upper
    /// half) so that many pods failing together do not retry in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        let exponential = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exponential / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Runs `operation` until it succeeds, fails permanently, or the
    /// retries are used up. `what` names it in the retry log lines.
    pub async fn run<T, F, Fut>(&self, what: &str, mut operation: F) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FetchError>>,
    {
        let mut retry = 0;
        loop {
            match operation().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_transient() && retry < self.retries => {
                    let delay = self.delay(retry);
                    tracing::warn!(what, %error, retry = retry + 1, of = self.retries, ?delay, "transient failure, retrying");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_and_cap() {
        let policy = RetryPolicy {
            retries: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d0 = policy.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = policy.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d30 = policy.delay(30);
            assert!(d30 >= Duration::from_millis(500) && d30 <= Duration::from_secs(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_after_backoff() {
        let policy = RetryPolicy {
            retries: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result = policy
            .run("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(FetchError::Network("refused".into()))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two pauses: 0.5-1 s, then 1-2 s (virtual time).
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1500) && waited <= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_exhausted_retries_stop() {
        let policy = RetryPolicy {
            retries: 2,
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(FetchError::NotFound("x".into()))
            })
            .await;
        assert!(matches!(result, Err(FetchError::NotFound(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = policy
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(FetchError::Status {
                    status: 503,
                    what: "x".into(),
                })
            })
            .await;
        assert!(matches!(
            result,
            Err(FetchError::Status { status: 503, .. })
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
