//! Retrying transient failures: exponential backoff with jitter, and the one
//! rule for which HTTP statuses are worth another attempt.
//!
//! Every retry loop in ferry uses a [`RetryPolicy`]: either
//! [`RetryPolicy::run`] around an operation that starts over on each attempt,
//! or a [`Backoff`] that a loop with its own work between attempts (ferry-init
//! checkpoints a download and resumes it with `Range`) asks for the next
//! pause. Each crate's error type says what is transient by implementing
//! [`Transient`], using [`is_transient_status`] for HTTP answers.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// An error that may or may not go away if the same request is tried again.
pub trait Transient {
    /// Whether trying again may succeed (a dropped connection, a busy
    /// server), as opposed to failing the same way every time (a 404, a
    /// refused token, a wrong digest).
    fn is_transient(&self) -> bool;
}

/// Whether an HTTP answer with `status` may differ on another attempt:
/// 408 Request Timeout, 429 Too Many Requests, and the 5xx answers of a
/// server that is failing, overloaded or restarting.
///
/// Three 5xx statuses are not: 501 Not Implemented and 505 HTTP Version Not
/// Supported answer every attempt alike, and 507 Insufficient Storage
/// (ferry-server's disk is full) waits for an operator, not for a retry.
pub fn is_transient_status(status: u16) -> bool {
    match status {
        408 | 429 => true,
        501 | 505 | 507 => false,
        500..=599 => true,
        _ => false,
    }
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: try once).
    pub retries: u32,
    /// Delay before the first retry, before jitter.
    pub base: Duration,
    /// Longest delay between attempts, before jitter.
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
    /// half) so that many clients failing together do not retry in lockstep.
    pub fn delay(&self, retry: u32) -> Duration {
        let exponential = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exponential / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// A fresh count of retries under this policy, for a loop that does its
    /// own work between attempts.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            used: 0,
        }
    }

    /// Runs `operation` until it succeeds, fails permanently, or the
    /// retries are used up. `what` names it in the retry log lines.
    pub async fn run<T, E, F, Fut>(&self, what: &str, mut operation: F) -> Result<T, E>
    where
        E: Transient + Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = self.backoff();
        loop {
            match operation().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    if !backoff.wait_to_retry(what, &error).await {
                        return Err(error);
                    }
                }
            }
        }
    }
}

/// The retries one operation has used under a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    used: u32,
}

impl Backoff {
    /// The pause before the next retry, counting it; `None` once the
    /// policy's retries are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.used >= self.policy.retries {
            return None;
        }
        let delay = self.policy.delay(self.used);
        self.used += 1;
        Some(delay)
    }

    /// Retries used so far.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// After a failed attempt: if `error` is transient and a retry is left,
    /// logs it, sleeps the pause and returns true (try again); else returns
    /// false at once (give up with `error`).
    pub async fn wait_to_retry<E>(&mut self, what: &str, error: &E) -> bool
    where
        E: Transient + Display + ?Sized,
    {
        if !error.is_transient() {
            return false;
        }
        let Some(delay) = self.next_delay() else {
            return false;
        };
        tracing::warn!(what, %error, retry = self.used, of = self.policy.retries, ?delay, "transient failure, retrying");
        tokio::time::sleep(delay).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A test error: transient or not, as told.
    #[derive(Debug, PartialEq)]
    struct Failure {
        transient: bool,
    }

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.transient
        }
    }

    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transient: {}", self.transient)
        }
    }

    #[test]
    fn the_status_rule_retries_overload_and_server_failures_only() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_transient_status(status), "{status}");
        }
        for status in [200, 206, 301, 400, 401, 403, 404, 410, 416, 501, 505, 507] {
            assert!(!is_transient_status(status), "{status}");
        }
    }

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

    #[test]
    fn a_backoff_counts_its_retries_and_runs_out() {
        let policy = RetryPolicy {
            retries: 2,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut backoff = policy.backoff();
        let first = backoff.next_delay().expect("a first retry");
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let second = backoff.next_delay().expect("a second retry");
        assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
        assert_eq!(backoff.used(), 2);
        assert_eq!(backoff.next_delay(), None);
        assert_eq!(backoff.used(), 2);
        assert_eq!(
            RetryPolicy {
                retries: 0,
                ..policy
            }
            .backoff()
            .next_delay(),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_to_retry_sleeps_only_for_transient_errors_with_retries_left() {
        let policy = RetryPolicy {
            retries: 1,
            base: Duration::from_secs(4),
            max: Duration::from_secs(60),
        };
        let mut backoff = policy.backoff();
        let started = tokio::time::Instant::now();
        assert!(
            !backoff
                .wait_to_retry("x", &Failure { transient: false })
                .await
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(backoff.used(), 0, "a permanent error uses no retry");
        assert!(
            backoff
                .wait_to_retry("x", &Failure { transient: true })
                .await
        );
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited <= Duration::from_secs(4));
        assert!(
            !backoff
                .wait_to_retry("x", &Failure { transient: true })
                .await
        );
        assert_eq!(
            started.elapsed(),
            waited,
            "no pause once retries are used up"
        );
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
                    Err(Failure { transient: true })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result, Ok(7));
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
                Err(Failure { transient: false })
            })
            .await;
        assert_eq!(result, Err(Failure { transient: false }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = policy
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure { transient: true })
            })
            .await;
        assert_eq!(result, Err(Failure { transient: true }));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
