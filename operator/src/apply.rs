//! Apply and prune: server-side apply of the desired children with one field manager, skipping
//! objects that are already as rendered, and deletion of children that are no longer desired.
//!
//! "Already as rendered" means: the live object carries the hash annotation of the desired object,
//! and the operator's entry in its managedFields is the one this process saw right after its own
//! last apply. The second part catches edits by others: a field another manager changes moves out
//! of the operator's entry, so drift is still corrected. Status updates, and the autoscalers'
//! replica changes, touch no field of the operator's, so they cause no apply. An unchanged group
//! is therefore reconciled with reads only.
//!
//! What this process saw after its applies is also kept with the group, as one [`fingerprint`] of
//! the operator's entries of all its objects (`status.applied`), so a new process (a restart, a
//! new leader) does not have to apply everything once to learn them: when the live objects' entries
//! hash to the recorded fingerprint, they are still exactly as the last apply left them, and are
//! taken as seen ([`recorded_versions`]). Otherwise (the record is missing or stale: another
//! manager took a field, the status write was lost) the objects are applied as by a fresh process,
//! and the API server keeps those that are unchanged as they are.

use crate::render::meta::{ANNOTATION_APPLIED_HASH, FIELD_MANAGER, children_selector};
use crate::render::{Child, ChildKind};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy,
};
use kube::core::ObjectMeta;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use thiserror::Error;

/// What failed while applying or pruning.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// Listing the existing children failed.
    #[error("listing {kind:?} objects: {source}")]
    List {
        /// Kind listed.
        kind: ChildKind,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Server-side apply of a child failed.
    #[error("applying {kind:?} {name}: {source}")]
    Apply {
        /// Kind applied.
        kind: ChildKind,
        /// Object name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Deleting a child that is no longer desired failed.
    #[error("deleting {kind:?} {name}: {source}")]
    Prune {
        /// Kind deleted.
        kind: ChildKind,
        /// Object name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The API server returned an object that does not decode.
    #[error("decoding {kind:?} {name}: {source}")]
    Decode {
        /// Kind decoded.
        kind: ChildKind,
        /// Object name.
        name: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ApplyError {
    /// CamelCase reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::List { .. } => "ListFailed",
            ApplyError::Apply { .. } => "ApplyFailed",
            ApplyError::Prune { .. } => "PruneFailed",
            ApplyError::Decode { .. } => "DecodeFailed",
        }
    }
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Children written (created or changed).
    pub applied: Vec<(ChildKind, String)>,
    /// Children already as rendered, not written.
    pub unchanged: usize,
    /// Children applied although unchanged (first sync after a start, or after someone else's
    /// edit that the apply turned out not to conflict with): the server kept them as they were.
    pub reapplied: usize,
    /// Children deleted because they are no longer desired.
    pub pruned: Vec<(ChildKind, String)>,
    /// The group's Deployments as of this sync (the apply response where one was applied).
    pub deployments: BTreeMap<String, Deployment>,
    /// The [`fingerprint`] of the desired children as this process last saw them after its own
    /// applies; `None` when it does not know one of them.
    pub fingerprint: Option<String>,
    /// Children taken as seen from the group's recorded fingerprint instead of being applied.
    pub recorded: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: ChildKind,
    namespace: String,
    group: String,
    name: String,
}

/// Fingerprint of the operator's own server-side-apply entry in managedFields (fields and time):
/// it changes when the operator's apply changes the object or someone else takes over one of its
/// fields, and not otherwise. None if the operator has not applied the object.
pub fn version_of(meta: &ObjectMeta) -> Option<String> {
    let ours: Vec<_> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref().unwrap_or("").is_empty()
        })
        .collect();
    if ours.is_empty() {
        return None;
    }
    serde_json::to_vec(&ours)
        .ok()
        .map(|bytes| crate::render::meta::stable_hash(&bytes))
}

/// One hash of the operator's entries ([`version_of`]) of every desired child, in the order
/// given: what `status.applied` records after a sync.
pub fn fingerprint<'a>(
    versions: impl IntoIterator<Item = (ChildKind, &'a str, &'a str)>,
) -> String {
    let mut text = String::new();
    for (kind, name, version) in versions {
        text.push_str(&format!("{kind:?}/{name}={version}\n"));
    }
    crate::render::meta::stable_hash(text.as_bytes())
}

/// The operator's entry of each desired child as live, when they hash to `recorded` (the group's
/// `status.applied`): then every one is as the operator's last recorded apply left it. `None` when
/// there is no record, a desired child is missing or has no entry of the operator's, or the
/// entries moved since (an apply by another process of the operator, a field taken by another
/// manager).
pub fn recorded_versions(
    desired: &[Child],
    live: &HashMap<(ChildKind, String), ObjectMeta>,
    recorded: Option<&str>,
) -> Option<Vec<String>> {
    let recorded = recorded?;
    let versions = desired
        .iter()
        .map(|c| version_of(live.get(&(c.kind, c.name.clone()))?))
        .collect::<Option<Vec<String>>>()?;
    let entries = desired
        .iter()
        .zip(&versions)
        .map(|(c, v)| (c.kind, c.name.as_str(), v.as_str()));
    (fingerprint(entries) == recorded).then_some(versions)
}

fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Callback counting each write the applier makes (kind, verb).
pub type WriteCounter = Box<dyn Fn(ChildKind, &'static str) + Send + Sync>;

/// Applies and prunes children; remembers what it applied so unchanged objects are not written.
pub struct Applier {
    client: Client,
    applied: Mutex<HashMap<Key, String>>,
    on_write: WriteCounter,
}

impl Applier {
    /// An applier using `client`; `on_write` is called for every write.
    pub fn new(client: Client, on_write: WriteCounter) -> Self {
        Self {
            client,
            applied: Mutex::new(HashMap::new()),
            on_write,
        }
    }

    fn api(&self, kind: ChildKind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &kind.api_resource())
    }

    fn remembered(&self, key: &Key) -> Option<String> {
        self.applied
            .lock()
            .map(|m| m.get(key).cloned())
            .unwrap_or(None)
    }

    fn remember(&self, key: Key, version: Option<String>) {
        if let Ok(mut m) = self.applied.lock() {
            match version {
                Some(v) => m.insert(key, v),
                None => m.remove(&key),
            };
        }
    }

    /// Forgets everything remembered about the group's children (after the group is deleted).
    pub fn forget_group(&self, namespace: &str, group: &str) {
        if let Ok(mut m) = self.applied.lock() {
            m.retain(|k, _| !(k.namespace == namespace && k.group == group));
        }
    }

    /// Makes the group's children in `namespace` exactly `desired`: applies what differs, deletes
    /// children of kinds in `kinds` that carry the group's labels and controller reference
    /// (`owner_uid`) but are not desired. Kinds not in `kinds` (e.g. ScaledObject without KEDA) are
    /// neither listed nor pruned. `recorded` is the group's `status.applied`: what an earlier
    /// process saw after its applies (see the module docs).
    pub async fn sync(
        &self,
        namespace: &str,
        group: &str,
        owner_uid: &str,
        desired: &[Child],
        kinds: &[ChildKind],
        recorded: Option<&str>,
    ) -> Result<SyncReport, ApplyError> {
        let mut report = SyncReport::default();
        let live = self.list_live(namespace, group, kinds, &mut report).await?;
        let key = |c: &Child| Key {
            kind: c.kind,
            namespace: namespace.to_string(),
            group: group.to_string(),
            name: c.name.clone(),
        };
        if desired.iter().all(|c| self.remembered(&key(c)).is_none())
            && let Some(versions) = recorded_versions(desired, &live, recorded)
        {
            for (child, version) in desired.iter().zip(versions) {
                self.remember(key(child), Some(version));
            }
            report.recorded = desired.len();
        }
        self.apply_changed(namespace, group, desired, &live, &mut report)
            .await?;
        let stale = stale(&live, desired, owner_uid);
        self.prune(namespace, group, stale, &mut report).await?;
        let versions = desired
            .iter()
            .map(|c| self.remembered(&key(c)))
            .collect::<Option<Vec<String>>>();
        report.fingerprint = versions.map(|v| {
            fingerprint(
                desired
                    .iter()
                    .zip(&v)
                    .map(|(c, v)| (c.kind, c.name.as_str(), v.as_str())),
            )
        });
        Ok(report)
    }

    /// The metadata of the group's live children of `kinds`; Deployments whole, into the report.
    async fn list_live(
        &self,
        namespace: &str,
        group: &str,
        kinds: &[ChildKind],
        report: &mut SyncReport,
    ) -> Result<Live, ApplyError> {
        let lp = ListParams::default().labels(&children_selector(group));
        let mut live = Live::new();
        for &kind in kinds {
            // Deployments are read whole: the status is summarised from them.
            if kind == ChildKind::Deployment {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
                let list = api
                    .list(&lp)
                    .await
                    .map_err(|source| ApplyError::List { kind, source })?;
                for d in list.items {
                    let name = d.metadata.name.clone().unwrap_or_default();
                    live.insert((kind, name.clone()), d.metadata.clone());
                    report.deployments.insert(name, d);
                }
            } else {
                let list = match self.api(kind, namespace).list_metadata(&lp).await {
                    Ok(list) => list,
                    // An add-on's CRD removed since discovery took its objects with it.
                    Err(kube::Error::Api(s))
                        if s.code == 404 && ChildKind::OPTIONAL.contains(&kind) =>
                    {
                        continue;
                    }
                    Err(source) => return Err(ApplyError::List { kind, source }),
                };
                for o in list.items {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    live.insert((kind, name), o.metadata);
                }
            }
        }
        Ok(live)
    }

    /// Applies each desired child that is not already as rendered (see the module docs).
    async fn apply_changed(
        &self,
        namespace: &str,
        group: &str,
        desired: &[Child],
        live: &Live,
        report: &mut SyncReport,
    ) -> Result<(), ApplyError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for child in desired {
            let key = Key {
                kind: child.kind,
                namespace: namespace.to_string(),
                group: group.to_string(),
                name: child.name.clone(),
            };
            let current = live.get(&(child.kind, child.name.clone()));
            let up_to_date = current.is_some_and(|m| {
                let hash = m
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_APPLIED_HASH));
                hash == Some(&child.hash)
                    && version_of(m).is_some()
                    && self.remembered(&key) == version_of(m)
            });
            if up_to_date {
                report.unchanged += 1;
                continue;
            }
            let api = self.api(child.kind, namespace);
            let patch = Patch::Apply(&child.object);
            let applied = match api.patch(&child.name, &params, &patch).await {
                Err(kube::Error::Api(s)) if must_replace(child.kind, &s) => {
                    match self.delete_to_replace(&api, child).await {
                        Ok(()) => api.patch(&child.name, &params, &patch).await,
                        Err(e) => Err(e),
                    }
                }
                applied => applied,
            }
            .map_err(|source| ApplyError::Apply {
                kind: child.kind,
                name: child.name.clone(),
                source,
            })?;
            (self.on_write)(child.kind, "apply");
            self.remember(key, version_of(&applied.metadata));
            if child.kind == ChildKind::Deployment {
                let d: Deployment = serde_json::to_value(&applied)
                    .and_then(serde_json::from_value)
                    .map_err(|source| ApplyError::Decode {
                        kind: child.kind,
                        name: child.name.clone(),
                        source,
                    })?;
                report.deployments.insert(child.name.clone(), d);
            }
            let changed = current.and_then(|m| m.resource_version.as_ref())
                != applied.metadata.resource_version.as_ref();
            if changed {
                report.applied.push((child.kind, child.name.clone()));
            } else {
                report.reapplied += 1;
            }
        }
        Ok(())
    }

    /// Deletes the live `child`, to apply it again: for a change the API server refuses as an
    /// update (see [`must_replace`]).
    async fn delete_to_replace(
        &self,
        api: &Api<DynamicObject>,
        child: &Child,
    ) -> Result<(), kube::Error> {
        match api.delete(&child.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        (self.on_write)(child.kind, "delete");
        Ok(())
    }

    /// Deletes `stale` children; one already gone counts as deleted.
    async fn prune(
        &self,
        namespace: &str,
        group: &str,
        stale: Vec<(ChildKind, String)>,
        report: &mut SyncReport,
    ) -> Result<(), ApplyError> {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        for (kind, name) in stale {
            match self.api(kind, namespace).delete(&name, &dp).await {
                Ok(_) => {}
                // Already gone: the goal is reached.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(ApplyError::Prune { kind, name, source }),
            }
            (self.on_write)(kind, "delete");
            self.remember(
                Key {
                    kind,
                    namespace: namespace.to_string(),
                    group: group.to_string(),
                    name: name.clone(),
                },
                None,
            );
            if kind == ChildKind::Deployment {
                report.deployments.remove(&name);
            }
            report.pruned.push((kind, name));
        }
        Ok(())
    }
}

/// Whether the API server refused an apply because it changes a field that cannot change once
/// set, which only deleting and re-creating the object can: a RoleBinding's `roleRef` (older
/// versions bound a per-group Role under the name that now binds the chart's ClusterRole).
fn must_replace(kind: ChildKind, status: &kube::core::Status) -> bool {
    kind == ChildKind::RoleBinding
        && status.code == 422
        && status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .any(|c| c.field == "roleRef")
}

/// The live children by (kind, name).
type Live = HashMap<(ChildKind, String), ObjectMeta>;

/// Live children that are controlled by `owner_uid` but not desired, in a stable order.
fn stale(live: &Live, desired: &[Child], owner_uid: &str) -> Vec<(ChildKind, String)> {
    let wanted: HashSet<(ChildKind, &str)> =
        desired.iter().map(|c| (c.kind, c.name.as_str())).collect();
    let mut stale: Vec<(ChildKind, String)> = live
        .iter()
        .filter(|((kind, name), meta)| {
            !wanted.contains(&(*kind, name.as_str())) && controlled_by(meta, owner_uid)
        })
        .map(|((kind, name), _)| (*kind, name.clone()))
        .collect();
    stale.sort();
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    fn owned_by(uid: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                uid: uid.into(),
                controller: Some(controller),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    fn child(kind: ChildKind, name: &str) -> Child {
        Child {
            kind,
            name: name.into(),
            object: json!({}),
            hash: String::new(),
        }
    }

    #[test]
    fn only_undesired_children_the_group_controls_are_stale_in_a_stable_order() {
        let live: Live = [
            ((ChildKind::Service, "g-products"), owned_by("u1", true)),
            ((ChildKind::Service, "g-old"), owned_by("u1", true)),
            ((ChildKind::ConfigMap, "g-old"), owned_by("u1", true)),
            ((ChildKind::Service, "someone-elses"), owned_by("u2", true)),
            ((ChildKind::Service, "merely-owned"), owned_by("u1", false)),
            ((ChildKind::Service, "orphan"), ObjectMeta::default()),
        ]
        .into_iter()
        .map(|((k, n), m)| ((k, n.to_string()), m))
        .collect();
        let desired = [child(ChildKind::Service, "g-products")];
        assert_eq!(
            stale(&live, &desired, "u1"),
            vec![
                (ChildKind::ConfigMap, "g-old".to_string()),
                (ChildKind::Service, "g-old".to_string()),
            ]
        );
        assert_eq!(stale(&live, &[], "u3"), Vec::new());
    }

    /// Metadata with an entry of the operator's (and one of another manager's) in managedFields.
    fn applied_at(hash: &str, time: &str, fields: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({
            "annotations": {ANNOTATION_APPLIED_HASH: hash},
            "managedFields": [
                {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "v1",
                 "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-01-01T00:00:09Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {}}, "subresource": "status"},
            ],
        }))
        .expect("metadata")
    }

    #[test]
    fn recorded_versions_need_every_desired_child_with_the_recorded_entries() {
        let desired = [
            child(ChildKind::ConfigMap, "g-config"),
            child(ChildKind::Service, "g-products"),
        ];
        let fields = json!({"f:spec": {"f:ports": {}}});
        let live: Live = [
            (
                (ChildKind::ConfigMap, "g-config".to_string()),
                applied_at("h1", "2026-01-01T00:00:01Z", json!({"f:data": {}})),
            ),
            (
                (ChildKind::Service, "g-products".to_string()),
                applied_at("h2", "2026-01-01T00:00:02Z", fields.clone()),
            ),
        ]
        .into_iter()
        .collect();
        let versions: Vec<String> = desired
            .iter()
            .map(|c| version_of(&live[&(c.kind, c.name.clone())]).expect("an entry"))
            .collect();
        let record = fingerprint(
            desired
                .iter()
                .zip(&versions)
                .map(|(c, v)| (c.kind, c.name.as_str(), v.as_str())),
        );
        assert_eq!(
            recorded_versions(&desired, &live, Some(&record)),
            Some(versions.clone())
        );
        // No record, another record, or the record of another order of the same objects.
        assert_eq!(recorded_versions(&desired, &live, None), None);
        assert_eq!(recorded_versions(&desired, &live, Some("0123")), None);
        let reversed = [desired[1].clone(), desired[0].clone()];
        assert_eq!(recorded_versions(&reversed, &live, Some(&record)), None);
        // A field taken by another manager leaves the operator's entry with fewer fields.
        let mut taken = live.clone();
        taken.insert(
            (ChildKind::Service, "g-products".to_string()),
            applied_at("h2", "2026-01-01T00:00:02Z", json!({"f:spec": {}})),
        );
        assert_eq!(recorded_versions(&desired, &taken, Some(&record)), None);
        // A later apply (of another process) moves the entry's time.
        let mut later = live.clone();
        later.insert(
            (ChildKind::Service, "g-products".to_string()),
            applied_at("h2", "2026-01-01T00:00:05Z", fields),
        );
        assert_eq!(recorded_versions(&desired, &later, Some(&record)), None);
        // A desired child that is not live, or was never applied by the operator.
        let mut missing = live.clone();
        missing.remove(&(ChildKind::Service, "g-products".to_string()));
        assert_eq!(recorded_versions(&desired, &missing, Some(&record)), None);
        let mut foreign = live.clone();
        foreign.insert(
            (ChildKind::Service, "g-products".to_string()),
            ObjectMeta::default(),
        );
        assert_eq!(recorded_versions(&desired, &foreign, Some(&record)), None);
        // Status updates by others do not move it: only the operator's entry counts.
        let mut status_moved = live.clone();
        let meta = status_moved
            .get_mut(&(ChildKind::ConfigMap, "g-config".to_string()))
            .expect("live");
        if let Some(entries) = meta.managed_fields.as_mut() {
            entries[1].time = None;
        }
        assert_eq!(
            recorded_versions(&desired, &status_moved, Some(&record)),
            Some(versions)
        );
    }

    #[test]
    fn the_fingerprint_depends_on_each_kind_name_and_version_in_order() {
        let one = fingerprint([
            (ChildKind::Service, "a", "v1"),
            (ChildKind::Service, "b", "v2"),
        ]);
        assert_eq!(
            one,
            fingerprint([
                (ChildKind::Service, "a", "v1"),
                (ChildKind::Service, "b", "v2")
            ])
        );
        for other in [
            fingerprint([
                (ChildKind::Service, "a", "v1"),
                (ChildKind::Service, "b", "v3"),
            ]),
            fingerprint([
                (ChildKind::Service, "a", "v1"),
                (ChildKind::ConfigMap, "b", "v2"),
            ]),
            fingerprint([
                (ChildKind::Service, "a", "v1"),
                (ChildKind::Service, "c", "v2"),
            ]),
            fingerprint([
                (ChildKind::Service, "b", "v2"),
                (ChildKind::Service, "a", "v1"),
            ]),
            fingerprint([(ChildKind::Service, "a", "v1")]),
            fingerprint([]),
        ] {
            assert_ne!(one, other);
        }
    }

    /// The API server's answer to an update of a RoleBinding's roleRef, as it sends it.
    fn refused(code: u16, field: &str) -> kube::core::Status {
        serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": "Invalid",
            "message": "RoleBinding.rbac.authorization.k8s.io \"g-endpointslice-reader\" is invalid: roleRef: Invalid value: ...: cannot change roleRef",
            "details": {
                "name": "g-endpointslice-reader", "group": "rbac.authorization.k8s.io",
                "kind": "RoleBinding",
                "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: ...: cannot change roleRef", "field": field}]
            }
        }))
        .expect("a Status")
    }

    #[test]
    fn only_a_refused_rolebinding_roleref_is_replaced() {
        assert!(must_replace(
            ChildKind::RoleBinding,
            &refused(422, "roleRef")
        ));
        assert!(!must_replace(
            ChildKind::RoleBinding,
            &refused(422, "subjects[0].name")
        ));
        assert!(!must_replace(
            ChildKind::RoleBinding,
            &refused(409, "roleRef")
        ));
        assert!(!must_replace(
            ChildKind::Deployment,
            &refused(422, "roleRef")
        ));
        assert!(!must_replace(
            ChildKind::RoleBinding,
            &kube::core::Status::failure("forbidden", "Forbidden").with_code(403)
        ));
    }
}
