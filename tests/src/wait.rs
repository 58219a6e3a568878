//! Waiting for the cluster to reach a state, under a timeout, never with a fixed sleep.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// Re-evaluates `probe` until it returns `Ok(value)`, or panics after `timeout` with `what`
/// and the last thing `probe` reported. For state that no single watch event describes (counts
/// across many objects); single objects are better awaited with `kube::runtime::wait`.
pub async fn until<T, E, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(100);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                if tokio::time::Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}");
                }
            }
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
}
