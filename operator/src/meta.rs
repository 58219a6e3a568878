//! What every object Verbund writes carries, and how Verbund tells whether a child needs
//! writing: common labels, owner references, the field manager, a hash of the desired state,
//! and drift detection from `managedFields`.
//!
//! Children are cached metadata-only. Whether a child must be (re)applied is decided from its
//! metadata alone:
//! - it is missing;
//! - its `verbund.saarland.de/desired-hash` annotation differs from the hash of what Verbund
//!   wants now (the spec changed);
//! - someone else wrote it after Verbund did: a `managedFields` entry of another manager, for
//!   the object itself (not its status or scale), newer than Verbund's own entry. Times have a
//!   resolution of a second, so a write in the same second as Verbund's does not count: else a
//!   tie would be re-applied on every reconcile, an apply that changes nothing never moving
//!   Verbund's time past it.
//!
//! A reconcile that finds nothing to change therefore sends no request at all, and an edit or
//! deletion by someone else is repaired on the next event.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference,
};
use kube::Resource;
use serde::Serialize;

/// The field manager of the operator's own writes at start-up (the tenant admin role).
pub const FIELD_MANAGER: &str = "verbund-operator";

/// One field manager per controller: a controller's apply can only drop fields it applied
/// itself, never silently another controller's, and drift shows who wrote what.
pub mod managers {
    pub const SITE: &str = "verbund-operator/site";
    pub const TENANT: &str = "verbund-operator/tenant";
    pub const PORTAL_SERVICE: &str = "verbund-operator/portal-service";
    pub const BASELINE: &str = "verbund-operator/baseline";
}
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "verbund-operator";
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
pub const PART_OF: &str = "verbund";
pub const TENANT_LABEL: &str = "verbund.saarland.de/tenant";
pub const BASELINE_LABEL: &str = "verbund.saarland.de/baseline";
/// On a pod (or pod template) in a tenant namespace: the protection need (Schutzbedarf) it
/// runs at, `Normal`, `High` or `VeryHigh`; without it, the tenant's highest.
pub const PROTECTION_LEVEL_LABEL: &str = "verbund.saarland.de/protection-level";
/// On a namespace a tenant let go of (Retain), and on the default-deny policy kept in it: the
/// tenant it belonged to. Only that tenant may claim it again until an administrator removes
/// the label.
pub const RELEASED_LABEL: &str = "verbund.saarland.de/released-from";
pub const HASH_ANNOTATION: &str = "verbund.saarland.de/desired-hash";

/// Label selector for everything Verbund manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The labels on every object Verbund creates for `tenant`.
pub fn common_labels(tenant: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY_LABEL, MANAGED_BY),
        (PART_OF_LABEL, PART_OF),
        (TENANT_LABEL, tenant),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An owner object without a uid: it was never stored, so nothing can be owned by it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} {name} has no uid; children need a stored owner")]
pub struct MissingOwner {
    pub kind: String,
    pub name: String,
}

/// The controller owner reference to `owner`.
pub fn owner_reference<K: Resource<DynamicType = ()>>(
    owner: &K,
) -> Result<OwnerReference, MissingOwner> {
    owner.controller_owner_ref(&()).ok_or_else(|| MissingOwner {
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
    })
}

/// A stable 64-bit FNV-1a hash, hex-encoded. Stable across builds and platforms, so a restart
/// with a new binary recognises what the old one wrote.
fn fnv1a(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Writes the hash of `object` (as it is, before the annotation) into its hash annotation and
/// returns it.
pub fn stamp<K: Resource + Serialize>(object: &mut K) -> String {
    let meta = object.meta_mut();
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(HASH_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    let hash = fnv1a(&serde_json::to_vec(object).unwrap_or_default());
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_ANNOTATION.to_string(), hash.clone());
    hash
}

/// The desired-state hash a stored object carries.
pub fn stored_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(HASH_ANNOTATION)
        .map(String::as_str)
}

/// Whether a child must be applied, given the hash of what Verbund wants and the metadata of
/// what is stored (None: it does not exist).
pub fn needs_apply(desired_hash: &str, stored: Option<&ObjectMeta>, manager: &str) -> bool {
    match stored {
        None => true,
        Some(meta) => stored_hash(meta) != Some(desired_hash) || written_by_others(meta, manager),
    }
}

/// True when another manager wrote the object itself (not a subresource) after `manager`
/// did: in a later second, or in the same second with a write to the spec (managedFields
/// times have one-second resolution, so a same-second edit would otherwise go unseen until
/// the next change). A same-second write elsewhere (the Deployment controller's revision
/// annotation after each rollout) is not an edit; nor is a tie after Verbund's own no-op
/// apply, which the writer remembers (`Writer::known_unchanged`).
pub fn written_by_others(meta: &ObjectMeta, manager: &str) -> bool {
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    let ours = entries
        .iter()
        .filter(|e| e.manager.as_deref() == Some(manager) && is_main_resource(e))
        .filter_map(|e| e.time.as_ref())
        .max();
    let Some(ours) = ours else {
        // Verbund never wrote it: someone else created it, or it predates Verbund.
        return true;
    };
    entries.iter().any(|e| {
        e.manager.as_deref() != Some(manager)
            && is_main_resource(e)
            && e.time
                .as_ref()
                .is_some_and(|t| t > ours || (t == ours && touches_spec(e)))
    })
}

/// Who last wrote the object itself, and when (the newest entry per manager, subresources
/// left out): equal on a full object and on its cached, stripped copy.
pub fn main_writes(meta: &ObjectMeta) -> Vec<(String, String)> {
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for e in meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| is_main_resource(e))
    {
        let time = e.time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        let manager = e.manager.clone().unwrap_or_default();
        match newest.get(&manager) {
            Some(kept) if *kept >= time => {}
            _ => {
                newest.insert(manager, time);
            }
        }
    }
    newest.into_iter().collect()
}

/// Whether a managedFields entry owns anything under `spec`.
fn touches_spec(entry: &ManagedFieldsEntry) -> bool {
    entry
        .fields_v1
        .as_ref()
        .is_some_and(|f| f.0.get("f:spec").is_some())
}

/// The controller owner reference of an object, if it has one.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// When Verbund wants `desired` to be controlled by an object and the stored object of that
/// name is not controlled by it, the stored object belongs to someone else: who (its
/// controller's kind and name, or "nobody"). Verbund never applies over such an object.
pub fn foreign_controller(desired: &ObjectMeta, stored: &ObjectMeta) -> Option<String> {
    let controller = |m: &ObjectMeta| controller_of(m).cloned();
    let wanted = controller(desired)?;
    let released = stored
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(RELEASED_LABEL));
    if controller(stored).is_none() && released {
        // What Verbund left behind when a tenant let the namespace go (its default-deny):
        // the namespace's tenant takes it over.
        return None;
    }
    match controller(stored) {
        Some(owner) if owner.uid == wanted.uid => None,
        Some(owner) => Some(format!("{} {}", owner.kind, owner.name)),
        None => Some("nobody (created by hand)".into()),
    }
}

fn is_main_resource(entry: &ManagedFieldsEntry) -> bool {
    entry.subresource.as_deref().is_none_or(str::is_empty)
}

/// Shrinks `managedFields` to what [`written_by_others`] and [`main_writes`] read: entries for
/// the object itself (a subresource's, such as status, are dropped), only the newest per
/// manager, and of each only its manager, time and whether it reaches into the spec. Applied to
/// every cached object (DESIGN §7: memory per object).
pub fn strip_managed_fields(meta: &mut ObjectMeta) {
    let Some(entries) = meta.managed_fields.take() else {
        return;
    };
    let mut newest: BTreeMap<String, ManagedFieldsEntry> = BTreeMap::new();
    for entry in entries.into_iter().filter(is_main_resource) {
        let manager = entry.manager.clone().unwrap_or_default();
        if newest
            .get(&manager)
            .is_some_and(|kept| kept.time >= entry.time)
        {
            continue;
        }
        let slim = ManagedFieldsEntry {
            fields_v1: touches_spec(&entry).then(|| FieldsV1(serde_json::json!({ "f:spec": {} }))),
            manager: entry.manager,
            time: entry.time,
            ..Default::default()
        };
        newest.insert(manager, slim);
    }
    meta.managed_fields = Some(newest.into_values().collect());
}

/// Drops every annotation but Verbund's own (`verbund.saarland.de/...`: the desired-state
/// hash, a quota's share), the only ones a reader of the caches looks at. Others can be large
/// (`kubectl.kubernetes.io/last-applied-configuration` repeats the whole object).
pub fn keep_own_annotations(meta: &mut ObjectMeta) {
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(OWN_ANNOTATION_PREFIX));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The prefix of Verbund's annotations.
const OWN_ANNOTATION_PREFIX: &str = "verbund.saarland.de/";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn entry(manager: &str, second: i64, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            subresource: subresource.map(Into::into),
            time: Some(Time(
                Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH),
            )),
            ..Default::default()
        }
    }

    fn meta(hash: &str, entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            annotations: Some([(HASH_ANNOTATION.to_string(), hash.to_string())].into()),
            managed_fields: Some(entries),
            ..Default::default()
        }
    }

    #[test]
    fn the_hash_is_stable_and_changes_with_the_object() {
        let mut a = ConfigMap::default();
        a.metadata.name = Some("a".into());
        let mut b = a.clone();
        let first = stamp(&mut a);
        assert_eq!(
            stamp(&mut a),
            first,
            "restamping an object gives the same hash"
        );
        assert_eq!(stamp(&mut b), first, "equal objects, equal hashes");
        b.data = Some([("k".to_string(), "v".to_string())].into());
        assert_ne!(stamp(&mut b), first);
    }

    #[test]
    fn nothing_to_do_when_the_hash_matches_and_nobody_else_wrote() {
        let m = meta(
            "h1",
            vec![
                entry(FIELD_MANAGER, 100, None),
                entry("kube-controller-manager", 200, Some("status")),
            ],
        );
        assert!(!needs_apply("h1", Some(&m), FIELD_MANAGER));
    }

    #[test]
    fn applies_when_missing_changed_or_edited_by_someone_else() {
        assert!(needs_apply("h1", None, FIELD_MANAGER));
        let ours = meta("h1", vec![entry(FIELD_MANAGER, 100, None)]);
        assert!(
            needs_apply("h2", Some(&ours), FIELD_MANAGER),
            "spec changed"
        );
        let edited = meta(
            "h1",
            vec![
                entry(FIELD_MANAGER, 100, None),
                entry("kubectl-edit", 150, None),
            ],
        );
        assert!(
            needs_apply("h1", Some(&edited), FIELD_MANAGER),
            "edited after Verbund wrote it"
        );
        let same_second = meta(
            "h1",
            vec![
                entry(FIELD_MANAGER, 100, None),
                entry("verbund-tests", 100, None),
            ],
        );
        assert!(
            !needs_apply("h1", Some(&same_second), FIELD_MANAGER),
            "a tie is not an edit: re-applying would change nothing and tie again"
        );
        let older_edit = meta(
            "h1",
            vec![
                entry(FIELD_MANAGER, 200, None),
                entry("kubectl-edit", 150, None),
            ],
        );
        assert!(
            !needs_apply("h1", Some(&older_edit), FIELD_MANAGER),
            "Verbund already took it back"
        );
        let foreign = meta("h1", vec![entry("kubectl-create", 50, None)]);
        assert!(
            needs_apply("h1", Some(&foreign), FIELD_MANAGER),
            "never written by Verbund"
        );
    }

    #[test]
    fn a_same_second_edit_of_the_spec_is_seen_and_other_ties_are_not() {
        let mut edit = entry("kollege", 100, None);
        edit.fields_v1 = Some(FieldsV1(serde_json::json!({
            "f:spec": { "f:template": {} }
        })));
        let mut revision = entry("kube-controller-manager", 100, None);
        revision.fields_v1 = Some(FieldsV1(serde_json::json!({
            "f:metadata": { "f:annotations": {} }
        })));
        let spec_edit = meta("h1", vec![entry(FIELD_MANAGER, 100, None), edit]);
        assert!(needs_apply("h1", Some(&spec_edit), FIELD_MANAGER));
        let annotated = meta("h1", vec![entry(FIELD_MANAGER, 100, None), revision]);
        assert!(!needs_apply("h1", Some(&annotated), FIELD_MANAGER));
        // The cache keeps only that mark of the field set, and the verdicts stay.
        for (mut m, verdict) in [(spec_edit, true), (annotated, false)] {
            strip_managed_fields(&mut m);
            assert_eq!(written_by_others(&m, FIELD_MANAGER), verdict);
        }
    }

    #[test]
    fn another_controllers_write_is_someone_elses() {
        let m = meta(
            "h1",
            vec![
                entry(managers::TENANT, 100, None),
                entry(managers::PORTAL_SERVICE, 150, None),
            ],
        );
        assert!(written_by_others(&m, managers::TENANT));
        assert!(!written_by_others(&m, managers::PORTAL_SERVICE));
    }

    #[test]
    fn an_object_controlled_by_another_owner_is_foreign() {
        let owned_by = |uid: &str, name: &str| ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "verbund.saarland.de/v1alpha1".into(),
                kind: "Tenant".into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        };
        let desired = owned_by("u1", "igb");
        assert_eq!(foreign_controller(&desired, &owned_by("u1", "igb")), None);
        assert_eq!(
            foreign_controller(&desired, &owned_by("u2", "other")).as_deref(),
            Some("Tenant other")
        );
        assert_eq!(
            foreign_controller(&desired, &ObjectMeta::default()).as_deref(),
            Some("nobody (created by hand)")
        );
        assert_eq!(
            foreign_controller(&ObjectMeta::default(), &ObjectMeta::default()),
            None,
            "an object Verbund does not own (a namespace) is judged elsewhere"
        );
    }

    #[test]
    fn stripping_keeps_what_drift_detection_needs() {
        let mut m = meta(
            "h",
            vec![
                entry(FIELD_MANAGER, 100, None),
                entry(FIELD_MANAGER, 90, None),
                entry("kubectl-edit", 150, None),
            ],
        );
        let before = written_by_others(&m, FIELD_MANAGER);
        let writes = main_writes(&m);
        strip_managed_fields(&mut m);
        assert_eq!(m.managed_fields.as_ref().map(Vec::len), Some(2));
        assert_eq!(written_by_others(&m, FIELD_MANAGER), before);
        assert_eq!(main_writes(&m), writes);
    }

    #[test]
    fn stripping_drops_subresource_entries_and_all_but_what_drift_detection_reads() {
        let mut m = meta(
            "h",
            vec![
                entry(FIELD_MANAGER, 100, None),
                entry("kube-controller-manager", 120, Some("status")),
            ],
        );
        let before = written_by_others(&m, FIELD_MANAGER);
        strip_managed_fields(&mut m);
        let kept = m.managed_fields.clone().unwrap_or_default();
        assert_eq!(kept.len(), 1, "the status entry is gone: {kept:?}");
        assert_eq!(kept[0].manager.as_deref(), Some(FIELD_MANAGER));
        assert_eq!(kept[0].operation, None);
        assert_eq!(written_by_others(&m, FIELD_MANAGER), before);
    }

    #[test]
    fn only_verbunds_annotations_stay_in_the_caches() {
        let mut m = ObjectMeta {
            annotations: Some(BTreeMap::from([
                (HASH_ANNOTATION.to_string(), "abc".to_string()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".repeat(500),
                ),
            ])),
            ..Default::default()
        };
        keep_own_annotations(&mut m);
        assert_eq!(stored_hash(&m), Some("abc"));
        assert_eq!(m.annotations.as_ref().map(BTreeMap::len), Some(1));
        let mut foreign_only = ObjectMeta {
            annotations: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
            ..Default::default()
        };
        keep_own_annotations(&mut foreign_only);
        assert_eq!(foreign_only.annotations, None);
    }
}
