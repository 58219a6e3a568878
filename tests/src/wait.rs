//! Waiting for the cluster to reach a state, under a timeout, never with a fixed sleep.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often a long wait reports its progress.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Re-evaluates `probe` until it returns `Ok(value)`, or panics after `timeout` with `what`
/// and the last thing `probe` reported. For state that no single watch event describes (counts
/// across many objects); single objects are better awaited with `kube::runtime::wait`.
pub async fn until<T, E, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut interval = Duration::from_millis(100);
    // A long wait says how it stands every minute, so a slow run shows where it waited.
    let mut next_report = start + REPORT_EVERY;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}");
                }
                if now >= next_report {
                    eprintln!(
                        "still waiting for {what} after {:.0?}: {last:?}",
                        now - start
                    );
                    next_report = now + REPORT_EVERY;
                }
            }
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
}

/// What the waits can watch and report on: a kind that serialises both ways.
pub trait Watchable:
    kube::Resource + Clone + Debug + serde::de::DeserializeOwned + serde::Serialize + Send + 'static
{
}

impl<K> Watchable for K where
    K: kube::Resource
        + Clone
        + Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static
{
}

/// Waits until `name` reports condition `Ready` = True for its current generation
/// (`status.observedGeneration` and the condition's `observedGeneration` both equal
/// `metadata.generation`). Returns the object as it was then.
pub async fn ready<K>(api: &kube::Api<K>, name: &str, timeout: Duration) -> K
where
    K: Watchable,
{
    until_object(api, name, timeout, "Ready", is_ready_now).await
}

/// Waits until `name`'s status has been written for its current generation
/// (`status.observedGeneration` = `metadata.generation`), whatever it says: the controller
/// has reconciled it at least once since its last change.
pub async fn observed<K>(api: &kube::Api<K>, name: &str, timeout: Duration) -> K
where
    K: Watchable,
{
    let observed = |value: &serde_json::Value| {
        !value["metadata"]["generation"].is_null()
            && value["status"]["observedGeneration"] == value["metadata"]["generation"]
    };
    until_object(api, name, timeout, "a status for its generation", observed).await
}

/// Watches `name` until `holds` is true of it (serialised); panics with `what` and its last
/// status otherwise.
async fn until_object<K>(
    api: &kube::Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    holds: fn(&serde_json::Value) -> bool,
) -> K
where
    K: Watchable,
{
    let condition = move |object: Option<&K>| {
        object.is_some_and(|o| holds(&serde_json::to_value(o).unwrap_or_default()))
    };
    match tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api.clone(), name, condition),
    )
    .await
    {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting for {what}"),
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => {
            let last = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .map(|o| serde_json::to_value(&o).unwrap_or_default());
            let status = last
                .as_ref()
                .map(|v| v["status"].to_string())
                .unwrap_or_else(|| "absent".into());
            panic!("{name} without {what} within {timeout:?}; status: {status}")
        }
    }
}

/// Waits until `name`'s `Ready` condition is False with `reason`; returns its message.
pub async fn not_ready_because<K>(
    api: &kube::Api<K>,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> String
where
    K: Watchable,
{
    until(
        timeout,
        &format!("{name} Ready=False, {reason}"),
        || async {
            let object = api.get(name).await.map_err(|e| e.to_string())?;
            let value = serde_json::to_value(&object).unwrap_or_default();
            let ready = value["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .cloned();
            match ready {
                Some(c) if c["status"] == "False" && c["reason"] == reason => {
                    Ok(c["message"].as_str().unwrap_or_default().to_string())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// True when a serialised object's Ready condition is True for its current generation.
pub fn is_ready_now(object: &serde_json::Value) -> bool {
    let generation = &object["metadata"]["generation"];
    let status = &object["status"];
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True" && &c["observedGeneration"] == generation);
    ready && &status["observedGeneration"] == generation
}
