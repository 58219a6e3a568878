//! Keeps the [`Book`] equal to the caches: each PortalService change updates its entry, and a
//! periodic pass catches what a change does not carry (a namespace moving to another tenant).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;

use super::Book;
use super::entry::{entry, key};
use crate::api::PortalService;
use crate::cache::{Stores, Subscription};
use crate::meta::TENANT_LABEL;

/// How often the whole catalogue is compared with the caches.
const FULL_PASS: Duration = Duration::from_secs(30);

fn tenant_of(stores: &Stores, namespace: &str) -> String {
    stores
        .namespaces
        .get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(namespace))
        .and_then(|ns| ns.labels().get(TENANT_LABEL).cloned())
        .unwrap_or_default()
}

/// Every entry the caches hold now.
pub fn entries(stores: &Stores) -> BTreeMap<String, super::proto::Service> {
    stores
        .portal_services
        .state()
        .iter()
        .filter_map(|ps| {
            let namespace = ps.namespace().unwrap_or_default();
            let e = entry(ps, &tenant_of(stores, &namespace))?;
            Some((e.name.clone(), e))
        })
        .collect()
}

/// Brings the entry of `service` up to date from the cache (absent there: removed).
fn refresh(book: &Book, stores: &Stores, service: &PortalService) {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let current = stores
        .portal_services
        .get(&ObjectRef::new(&name).within(&namespace));
    let entry = current.and_then(|ps| entry(&ps, &tenant_of(stores, &namespace)));
    book.set(&key(&namespace, &name), entry);
}

/// Runs until `shutdown`: waits until `caches_synced` (every cache has its first list),
/// fills the book, calls `on_synced`, then follows every change.
pub async fn run(
    book: Arc<Book>,
    size: prometheus::IntGauge,
    stores: Stores,
    mut changes: Subscription<PortalService>,
    caches_synced: CancellationToken,
    on_synced: impl std::future::Future<Output = ()>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = caches_synced.cancelled() => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    book.replace_all(entries(&stores));
    size.set(book.len() as i64);
    on_synced.await;
    let mut pass = tokio::time::interval(FULL_PASS);
    pass.tick().await;
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(service) => refresh(&book, &stores, &service),
                // The caches stop on shutdown, ending the changes: only an end before
                // that is a failure.
                None if shutdown.is_cancelled() => return Ok(()),
                None => anyhow::bail!("the portal service changes ended"),
            },
            _ = pass.tick() => {
                book.replace_all(entries(&stores));
            }
            _ = shutdown.cancelled() => return Ok(()),
        }
        size.set(book.len() as i64);
    }
}
