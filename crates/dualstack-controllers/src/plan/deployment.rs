//! The Deployment controller's decisions (upstream `pkg/controller/deployment`): the new
//! ReplicaSet `<deployment>-<pod-template-hash>`, revisions, rolling updates bounded by
//! `maxSurge`/`maxUnavailable` (`rolling.go`), Recreate, and the status with the `Available` and
//! `Progressing` conditions `kubectl rollout status` reads.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::replicaset::{controlled_by, owner_ref};

/// The label (and selector entry) that tells a Deployment's ReplicaSets apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision annotation of Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// `deployment.kubernetes.io/desired-replicas`.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `deployment.kubernetes.io/max-replicas`.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// upstream's `ComputeHash`: FNV-32a of the template (here its JSON; upstream hashes Go's
/// printed struct, so the values differ) and the collision count, in `rand.SafeEncodeString`'s
/// alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The template without the hash label (upstream's `EqualIgnoreHash`).
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(POD_TEMPLATE_HASH);
        if l.is_empty() {
            m.labels = None;
        }
    }
    t
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `intstr.GetScaledValueFromIntOrPercent`.
fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let x = p * i64::from(total);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

/// upstream's `ResolveFenceposts`: (maxSurge, maxUnavailable); both 0 makes unavailable 1.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let ru = spec
        .strategy
        .and_then(|s| s.rolling_update)
        .unwrap_or_default();
    let surge = scaled(ru.max_surge.as_ref(), want, true);
    let unavailable = scaled(ru.max_unavailable.as_ref(), want, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// One change of a ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub enum RsAction {
    /// Create the new ReplicaSet.
    Create(Box<ReplicaSet>),
    /// Set `spec.replicas` and the annotations of an existing one.
    Update {
        /// Its name.
        name: String,
        /// `spec.replicas`.
        replicas: i32,
        /// Annotations to set.
        annotations: BTreeMap<String, String>,
    },
}

/// What one sync does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// ReplicaSet changes.
    pub actions: Vec<RsAction>,
    /// The Deployment's `deployment.kubernetes.io/revision`, when it changes.
    pub revision: Option<String>,
    /// The new status.
    pub status: DeploymentStatus,
}

/// The ReplicaSets a Deployment controls, oldest first.
pub fn owned<'a>(d: &Deployment, rss: &'a [std::sync::Arc<ReplicaSet>]) -> Vec<&'a ReplicaSet> {
    let uid = d.metadata.uid.as_deref().unwrap_or("");
    let mut out: Vec<&ReplicaSet> = rss
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| r.metadata.namespace == d.metadata.namespace)
        .filter(|r| controlled_by(&r.metadata, uid))
        .collect();
    out.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then(a.metadata.name.cmp(&b.metadata.name))
    });
    out
}

/// The ReplicaSet of the current template (`<name>-<hash>`, hash label on template and
/// selector, revision `rev`, the Deployment's annotations).
pub fn new_replica_set(d: &Deployment, replicas: i32, rev: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let hash = template_hash(
        &spec.template,
        d.status.as_ref().and_then(|s| s.collision_count),
    );
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}",
                d.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: d.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(rs_annotations(d, replicas_of(d), rev)),
            owner_references: Some(vec![owner_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The annotations upstream copies to the new ReplicaSet: the Deployment's own (without
/// `kubectl.kubernetes.io/last-applied-configuration` and the revision), then revision, desired
/// and max replicas.
fn rs_annotations(d: &Deployment, desired: i32, rev: i64) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = d
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            k != "kubectl.kubernetes.io/last-applied-configuration"
                && k != REVISION
                && k != "deployment.kubernetes.io/revision-history"
        })
        .collect();
    let (surge, _) = fenceposts(d);
    a.insert(REVISION.into(), rev.to_string());
    a.insert(DESIRED_REPLICAS.into(), desired.to_string());
    a.insert(
        MAX_REPLICAS.into(),
        (desired + if is_recreate(d) { 0 } else { surge }).to_string(),
    );
    a
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// upstream's `SetDeploymentCondition`: the same status and reason changes nothing; the same
/// status keeps `lastTransitionTime`.
fn set_condition(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(old) = conds.iter_mut().find(|o| o.type_ == c.type_) {
        if old.status == c.status && old.reason == c.reason {
            if old.message != c.message {
                old.message = c.message;
                old.last_update_time = c.last_update_time;
            }
            return;
        }
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
        }
        *old = c;
    } else {
        conds.push(c);
    }
}

/// One sync of `d` over its ReplicaSets `rss` (oldest first) at `now`.
pub fn sync(d: &Deployment, rss: &[&ReplicaSet], now: jiff::Timestamp) -> Plan {
    let spec = d.spec.clone().unwrap_or_default();
    let want = replicas_of(d);
    let template = spec.template.clone();
    let new_rs = rss.iter().copied().rfind(|r| {
        r.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| without_hash(t) == without_hash(&template))
    });
    let olds: Vec<&ReplicaSet> = rss
        .iter()
        .copied()
        .filter(|r| new_rs.is_none_or(|n| n.metadata.uid != r.metadata.uid))
        .collect();
    let max_old_rev = olds
        .iter()
        .map(|r| revision(&r.metadata))
        .max()
        .unwrap_or(0);
    let mut actions = Vec::new();
    // Replicas as they will be after this sync (what the status and later steps see).
    let mut planned: BTreeMap<String, i32> = rss
        .iter()
        .map(|r| (r.metadata.name.clone().unwrap_or_default(), replicas(r)))
        .collect();
    let paused = spec.paused.unwrap_or(false);
    let (surge, max_unavailable) = fenceposts(d);
    let mut created_name = None;
    let new_rev;
    let new_name = match new_rs {
        Some(n) => {
            let rev = revision(&n.metadata);
            new_rev = if rev <= max_old_rev {
                max_old_rev + 1
            } else {
                rev
            };
            n.metadata.name.clone().unwrap_or_default()
        }
        None => {
            new_rev = max_old_rev + 1;
            let current: i32 = olds.iter().map(|r| replicas(r)).sum();
            let initial = if paused {
                0
            } else if is_recreate(d) {
                if olds
                    .iter()
                    .all(|r| replicas(r) == 0 && r.status.as_ref().is_none_or(|s| s.replicas == 0))
                {
                    want
                } else {
                    0
                }
            } else {
                (want + surge - current).clamp(0, want)
            };
            let rs = new_replica_set(d, initial, new_rev);
            let name = rs.metadata.name.clone().unwrap_or_default();
            planned.insert(name.clone(), initial);
            created_name = Some(name.clone());
            actions.push(RsAction::Create(Box::new(rs)));
            name
        }
    };
    if !paused {
        if is_recreate(d) {
            // Scale every old ReplicaSet down; the new one up once no old pod runs.
            for o in &olds {
                if replicas(o) != 0 {
                    planned.insert(o.metadata.name.clone().unwrap_or_default(), 0);
                }
            }
            let old_running: i32 = olds
                .iter()
                .map(|r| r.status.as_ref().map_or(0, |s| s.replicas))
                .sum();
            if old_running == 0 && olds.iter().all(|r| replicas(r) == 0) {
                planned.insert(new_name.clone(), want);
            }
        } else {
            // reconcileNewReplicaSet
            let all: i32 = planned.values().sum();
            let new_current = planned[&new_name];
            if new_current > want {
                planned.insert(new_name.clone(), want);
            } else if new_current < want && created_name.is_none() {
                let max_total = want + surge;
                if all < max_total {
                    let up = (max_total - all).min(want - new_current);
                    planned.insert(new_name.clone(), new_current + up);
                }
            }
            // reconcileOldReplicaSets
            let old_count: i32 = olds
                .iter()
                .map(|r| planned[r.metadata.name.as_deref().unwrap_or_default()])
                .sum();
            if old_count > 0 {
                let all: i32 = planned.values().sum();
                let min_available = want - max_unavailable;
                let new_unavailable =
                    planned[&new_name] - new_rs.map_or(0, available).min(planned[&new_name]);
                let mut max_scaled_down = all - min_available - new_unavailable;
                if max_scaled_down > 0 {
                    // cleanupUnhealthyReplicas: the old pods that are not available go first.
                    for o in &olds {
                        let name = o.metadata.name.clone().unwrap_or_default();
                        let cur = planned[&name];
                        let unhealthy = (cur - available(o)).max(0);
                        let down = unhealthy.min(max_scaled_down).min(cur);
                        if down > 0 {
                            planned.insert(name, cur - down);
                            max_scaled_down -= down;
                        }
                    }
                    // scaleDownOldReplicaSetsForRollingUpdate
                    let available_all: i32 = rss
                        .iter()
                        .map(|r| {
                            available(r)
                                .min(planned[r.metadata.name.as_deref().unwrap_or_default()])
                        })
                        .sum();
                    let mut total_down = available_all - min_available;
                    for o in &olds {
                        if total_down <= 0 {
                            break;
                        }
                        let name = o.metadata.name.clone().unwrap_or_default();
                        let cur = planned[&name];
                        let down = cur.min(total_down);
                        if down > 0 {
                            planned.insert(name, cur - down);
                            total_down -= down;
                        }
                    }
                }
            }
        }
    }
    // Updates of existing ReplicaSets: replicas and the annotations.
    for r in rss {
        let name = r.metadata.name.clone().unwrap_or_default();
        let target = planned[&name];
        let is_new = Some(&name) == new_rs.and_then(|n| n.metadata.name.as_ref());
        let mut annotations = BTreeMap::new();
        let current = r.metadata.annotations.clone().unwrap_or_default();
        if is_new {
            for (k, v) in rs_annotations(d, want, new_rev) {
                if current.get(&k) != Some(&v) {
                    annotations.insert(k, v);
                }
            }
        } else if target != replicas(r) && current.get(DESIRED_REPLICAS) != Some(&want.to_string())
        {
            annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        }
        if target != replicas(r) || !annotations.is_empty() {
            actions.push(RsAction::Update {
                name,
                replicas: target,
                annotations,
            });
        }
    }
    // Status from what the ReplicaSets report (upstream's calculateStatus).
    let status_of = |f: &dyn Fn(&ReplicaSet) -> i32| rss.iter().map(|r| f(r)).sum::<i32>();
    let total = status_of(&|r| r.status.as_ref().map_or(0, |s| s.replicas));
    let ready = status_of(&|r| {
        r.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let avail = status_of(&available);
    let updated = new_rs.map_or(0, |n| n.status.as_ref().map_or(0, |s| s.replicas));
    let old_status = d.status.clone().unwrap_or_default();
    let mut conds = old_status.conditions.clone().unwrap_or_default();
    let min_available = want - max_unavailable.min(want);
    if avail >= min_available {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    let complete = updated == want
        && total == want
        && avail == want
        && new_rs.is_some_and(|n| {
            n.status.as_ref().and_then(|s| s.observed_generation) >= n.metadata.generation
                && replicas(n) == want
        })
        && planned.iter().all(|(k, v)| *k == new_name || *v == 0);
    if let Some(name) = &created_name {
        set_condition(
            &mut conds,
            condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set {name:?}"),
                now,
            ),
        );
    } else if complete {
        set_condition(
            &mut conds,
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet {new_name:?} has successfully progressed."),
                now,
            ),
        );
    } else if !paused {
        let deadline = spec.progress_deadline_seconds.unwrap_or(600);
        let last = conds
            .iter()
            .find(|c| c.type_ == "Progressing")
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0);
        let changed = !actions.is_empty();
        let expired = !changed
            && last.is_some_and(|t| t + jiff::SignedDuration::from_secs(deadline.into()) < now);
        if expired {
            set_condition(
                &mut conds,
                condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet {new_name:?} has timed out progressing."),
                    now,
                ),
            );
        } else if changed || conds.iter().all(|c| c.type_ != "Progressing") {
            let mut c = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet {new_name:?} is progressing."),
                now,
            );
            // Progress resets the deadline even when the reason stays.
            if let Some(old) = conds.iter_mut().find(|o| o.type_ == "Progressing")
                && old.status == "True"
                && old.reason.as_deref() == Some("ReplicaSetUpdated")
            {
                old.last_update_time = c.last_update_time.take();
                old.message = c.message;
            } else {
                set_condition(&mut conds, c);
            }
        }
    }
    conds.sort_by_key(|c| c.type_ != "Available");
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(avail),
        unavailable_replicas: Some((want - avail).max(0)),
        conditions: Some(conds),
        collision_count: old_status.collision_count,
        terminating_replicas: None,
    };
    let revision = new_rev.to_string();
    let current_rev = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION));
    Plan {
        actions,
        revision: (current_rev != Some(&revision)).then_some(revision),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, surge: &str, unavailable: &str, image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}},
        }))
        .unwrap()
    }

    /// A ReplicaSet of `d`'s template as the controller made it, with `replicas` of which
    /// `avail` are available, created at `t`.
    fn rs_of(d: &Deployment, replicas: i32, avail: i32, rev: i64, t: i64) -> ReplicaSet {
        let mut rs = new_replica_set(d, replicas, rev);
        rs.metadata.uid = Some(format!("uid-{t}"));
        rs.metadata.generation = Some(1);
        rs.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(t).unwrap()));
        rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
            replicas,
            available_replicas: Some(avail),
            ready_replicas: Some(avail),
            observed_generation: Some(1),
            ..Default::default()
        });
        rs
    }

    fn targets(p: &Plan) -> Vec<(String, i32)> {
        p.actions
            .iter()
            .map(|a| match a {
                RsAction::Create(rs) => (
                    "create".to_string(),
                    rs.spec.as_ref().unwrap().replicas.unwrap(),
                ),
                RsAction::Update { name, replicas, .. } => (name.clone(), *replicas),
            })
            .collect()
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        for (replicas, surge, unavail, want) in [
            (10, "25%", "25%", (3, 2)),
            (3, "25%", "25%", (1, 0)),
            (1, "0%", "0%", (0, 1)),
            (4, "1", "0", (1, 0)),
        ] {
            assert_eq!(
                fenceposts(&deployment(replicas, surge, unavail, "a")),
                want,
                "{replicas} {surge} {unavail}"
            );
        }
    }

    #[test]
    fn a_new_deployment_creates_its_replica_set_at_full_size_with_revision_1() {
        let d = deployment(3, "25%", "25%", "a");
        let p = sync(&d, &[], jiff::Timestamp::UNIX_EPOCH);
        let RsAction::Create(rs) = &p.actions[0] else {
            panic!()
        };
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
        assert_eq!(
            rs.spec
                .as_ref()
                .unwrap()
                .selector
                .match_labels
                .as_ref()
                .unwrap()[POD_TEMPLATE_HASH],
            hash
        );
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION], "1");
        assert_eq!(p.revision.as_deref(), Some("1"));
        let progressing = p
            .status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetCreated"));
    }

    #[test]
    fn rolling_update_steps_honour_max_surge_and_max_unavailable() {
        // Upstream's example: 10 replicas, maxSurge 3 (25% up), maxUnavailable 2 (25% down).
        let old_d = deployment(10, "25%", "25%", "a");
        let d = deployment(10, "25%", "25%", "b");
        let old = rs_of(&old_d, 10, 10, 1, 1);
        let old_name = old.metadata.name.clone().unwrap();
        // Step 1: the new ReplicaSet starts at 3 (10 + 3 - 10), the old goes down by 2.
        let p = sync(&d, &[&old], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            targets(&p),
            vec![("create".into(), 3), (old_name.clone(), 8)]
        );
        // Step 2: 3 new not yet available: nothing more may go down, nothing more may come up.
        let new = rs_of(&d, 3, 0, 2, 2);
        let old8 = rs_of(&old_d, 8, 8, 1, 1);
        let p = sync(&d, &[&old8, &new], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(targets(&p), vec![(new.metadata.name.clone().unwrap(), 5)]);
        // Step 3: 5 new available, 8 old: 13 total → old down to 5 (keep 8 available).
        let new5 = rs_of(&d, 5, 5, 2, 2);
        let p = sync(&d, &[&old8, &new5], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(targets(&p), vec![(old_name.clone(), 3)]);
        // Done: all new and available, old at 0: complete.
        let new10 = rs_of(&d, 10, 10, 2, 2);
        let old0 = rs_of(&old_d, 0, 0, 1, 1);
        let p = sync(&d, &[&old0, &new10], jiff::Timestamp::UNIX_EPOCH);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        let c = p.status.conditions.unwrap();
        assert_eq!(c[0].reason.as_deref(), Some("MinimumReplicasAvailable"));
        assert_eq!(c[1].reason.as_deref(), Some("NewReplicaSetAvailable"));
    }

    #[test]
    fn max_unavailable_zero_waits_for_new_pods_before_scaling_old_down() {
        let old_d = deployment(3, "1", "0", "a");
        let d = deployment(3, "1", "0", "b");
        let old = rs_of(&old_d, 3, 3, 1, 1);
        let p = sync(&d, &[&old], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(targets(&p), vec![("create".into(), 1)]);
        let new = rs_of(&d, 1, 1, 2, 2);
        let p = sync(&d, &[&old, &new], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(targets(&p), vec![(old.metadata.name.clone().unwrap(), 2)]);
    }

    #[test]
    fn rollback_to_an_old_template_reuses_its_replica_set_with_a_new_revision() {
        let a = deployment(2, "25%", "25%", "a");
        let b = deployment(2, "25%", "25%", "b");
        let rs_a = rs_of(&a, 0, 0, 1, 1);
        let rs_b = rs_of(&b, 2, 2, 2, 2);
        let p = sync(&a, &[&rs_a, &rs_b], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(p.revision.as_deref(), Some("3"));
        let up = p
            .actions
            .iter()
            .find_map(|x| match x {
                RsAction::Update {
                    name,
                    replicas,
                    annotations,
                } if Some(name) == rs_a.metadata.name.as_ref() => {
                    Some((*replicas, annotations.get(REVISION).cloned()))
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(up, (1, Some("3".into())));
    }

    #[test]
    fn recreate_scales_old_to_zero_before_the_new_replica_set_grows() {
        let mut old_d = deployment(2, "25%", "25%", "a");
        let mut d = deployment(2, "25%", "25%", "b");
        for x in [&mut old_d, &mut d] {
            x.spec.as_mut().unwrap().strategy =
                Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
        }
        let old = rs_of(&old_d, 2, 2, 1, 1);
        let p = sync(&d, &[&old], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            targets(&p),
            vec![
                ("create".into(), 0),
                (old.metadata.name.clone().unwrap(), 0)
            ]
        );
    }
}
