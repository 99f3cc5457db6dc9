//! The garbage collector's decisions (upstream `pkg/controller/garbagecollector`) over the
//! owner graph of every kind: dependents whose owners are all gone are deleted (background),
//! dangling owner references are removed, dependents of an owner deleted in the foreground are
//! deleted before the owner's `foregroundDeletion` finalizer goes, and an owner with the
//! `orphan` finalizer has its references removed from its dependents before that finalizer goes.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// `metav1.FinalizerOrphanDependents`.
pub const ORPHAN: &str = "orphan";
/// `metav1.FinalizerDeleteDependents`.
pub const FOREGROUND: &str = "foregroundDeletion";

/// One object of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GcObject<R> {
    /// How the edge addresses it (resource, namespace, name).
    pub at: R,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.ownerReferences`.
    pub owners: Vec<OwnerReference>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
}

impl<R> GcObject<R> {
    fn has(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction<R> {
    /// Delete the object (uid precondition) with this `propagationPolicy`.
    Delete {
        /// The object.
        at: R,
        /// Its uid.
        uid: String,
        /// `Background` or `Foreground`.
        propagation: &'static str,
    },
    /// Remove the owner references with these uids.
    RemoveOwners {
        /// The dependent.
        at: R,
        /// The owners' uids.
        uids: Vec<String>,
    },
    /// Remove a finalizer from an owner.
    RemoveFinalizer {
        /// The owner.
        at: R,
        /// `orphan` or `foregroundDeletion`.
        finalizer: &'static str,
    },
}

/// Decides one pass over the graph.
pub fn plan<R: Clone>(objects: &[GcObject<R>]) -> Vec<GcAction<R>> {
    let by_uid: HashMap<&str, &GcObject<R>> = objects.iter().map(|o| (o.uid.as_str(), o)).collect();
    let mut has_dependents: HashSet<&str> = HashSet::new();
    let mut blocking: HashSet<&str> = HashSet::new();
    for o in objects {
        for r in &o.owners {
            has_dependents.insert(r.uid.as_str());
            if r.block_owner_deletion == Some(true) {
                blocking.insert(r.uid.as_str());
            }
        }
    }
    let mut out = Vec::new();
    for o in objects.iter().filter(|o| !o.owners.is_empty()) {
        let present: Vec<&GcObject<R>> = o
            .owners
            .iter()
            .filter_map(|r| by_uid.get(r.uid.as_str()).copied())
            .collect();
        let absent: Vec<String> = o
            .owners
            .iter()
            .filter(|r| !by_uid.contains_key(r.uid.as_str()))
            .map(|r| r.uid.clone())
            .collect();
        let orphaning: Vec<String> = present
            .iter()
            .filter(|p| p.deleting && p.has(ORPHAN))
            .map(|p| p.uid.clone())
            .collect();
        let foreground = |p: &&GcObject<R>| p.deleting && p.has(FOREGROUND);
        if present.is_empty() {
            if !o.deleting {
                out.push(GcAction::Delete {
                    at: o.at.clone(),
                    uid: o.uid.clone(),
                    propagation: "Background",
                });
            }
            continue;
        }
        if !orphaning.is_empty() {
            out.push(GcAction::RemoveOwners {
                at: o.at.clone(),
                uids: orphaning.iter().chain(absent.iter()).cloned().collect(),
            });
            continue;
        }
        if present.iter().all(foreground) {
            if !o.deleting {
                let propagation = if has_dependents.contains(o.uid.as_str()) {
                    "Foreground"
                } else {
                    "Background"
                };
                out.push(GcAction::Delete {
                    at: o.at.clone(),
                    uid: o.uid.clone(),
                    propagation,
                });
            }
            continue;
        }
        if !absent.is_empty() {
            out.push(GcAction::RemoveOwners {
                at: o.at.clone(),
                uids: absent,
            });
        }
    }
    for o in objects.iter().filter(|o| o.deleting) {
        if o.has(FOREGROUND) && !blocking.contains(o.uid.as_str()) {
            out.push(GcAction::RemoveFinalizer {
                at: o.at.clone(),
                finalizer: FOREGROUND,
            });
        }
        if o.has(ORPHAN) && !has_dependents.contains(o.uid.as_str()) {
            out.push(GcAction::RemoveFinalizer {
                at: o.at.clone(),
                finalizer: ORPHAN,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(
        name: &'static str,
        owners: &[&str],
        deleting: bool,
        fins: &[&str],
    ) -> GcObject<&'static str> {
        GcObject {
            at: name,
            uid: format!("uid-{name}"),
            owners: owners
                .iter()
                .map(|o| OwnerReference {
                    uid: format!("uid-{o}"),
                    name: o.to_string(),
                    block_owner_deletion: Some(true),
                    controller: Some(true),
                    ..Default::default()
                })
                .collect(),
            deleting,
            finalizers: fins.iter().map(|s| s.to_string()).collect(),
        }
    }

    type Case = (
        &'static str,
        Vec<GcObject<&'static str>>,
        Vec<GcAction<&'static str>>,
    );

    fn del(at: &'static str, propagation: &'static str) -> GcAction<&'static str> {
        GcAction::Delete {
            at,
            uid: format!("uid-{at}"),
            propagation,
        }
    }

    #[test]
    fn gc_decisions_follow_upstreams_propagation_modes() {
        let cases: Vec<Case> = vec![
            (
                "background: the owner is gone, its dependent goes",
                vec![
                    obj("rs", &["deploy"], false, &[]),
                    obj("pod", &["rs"], false, &[]),
                ],
                vec![del("rs", "Background")],
            ),
            (
                "an owner still there keeps its dependents",
                vec![
                    obj("deploy", &[], false, &[]),
                    obj("rs", &["deploy"], false, &[]),
                ],
                vec![],
            ),
            (
                "a dependent already being deleted is not deleted again",
                vec![obj("pod", &["rs"], true, &[])],
                vec![],
            ),
            (
                "one owner gone of two: only its reference goes",
                vec![obj("a", &[], false, &[]), obj("x", &["a", "b"], false, &[])],
                vec![GcAction::RemoveOwners {
                    at: "x",
                    uids: vec!["uid-b".into()],
                }],
            ),
            (
                "foreground: dependents go first, in the foreground when they own others",
                vec![
                    obj("deploy", &[], true, &[FOREGROUND]),
                    obj("rs", &["deploy"], false, &[]),
                    obj("pod", &["rs"], false, &[]),
                ],
                vec![del("rs", "Foreground")],
            ),
            (
                "foreground: the finalizer goes once no blocking dependent is left",
                vec![obj("deploy", &[], true, &[FOREGROUND])],
                vec![GcAction::RemoveFinalizer {
                    at: "deploy",
                    finalizer: FOREGROUND,
                }],
            ),
            (
                "orphan: references go, then the finalizer",
                vec![
                    obj("deploy", &[], true, &[ORPHAN]),
                    obj("rs", &["deploy"], false, &[]),
                ],
                vec![GcAction::RemoveOwners {
                    at: "rs",
                    uids: vec!["uid-deploy".into()],
                }],
            ),
            (
                "orphan: with no dependent left the finalizer goes",
                vec![
                    obj("deploy", &[], true, &[ORPHAN]),
                    obj("rs", &[], false, &[]),
                ],
                vec![GcAction::RemoveFinalizer {
                    at: "deploy",
                    finalizer: ORPHAN,
                }],
            ),
        ];
        for (name, objects, want) in cases {
            assert_eq!(plan(&objects), want, "{name}");
        }
    }
}
