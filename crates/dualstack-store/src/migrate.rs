//! `dualstack migrate`: copies every key of one store (the embedded one of a data dir) into
//! another (etcd), objects and allocation records (`IPAddress` objects, NodePort keys) alike.
//! Values are copied byte for byte; resourceVersions become the target's revisions.
//!
//! - A target that already holds objects is refused unless `force` (then existing keys are
//!   overwritten), so a migration never mixes two clusters by accident.
//! - Resumable: a marker key outside the API's keys ([`MARKER`]) says a migration from this
//!   source is under way; a run that finds it (and nothing but what it copied) goes on, copying
//!   each key whose value differs. The marker turns to `complete` at the end.
//! - Keys are written in transactions of at most [`BATCH_OPS`] puts (etcd's default
//!   `--max-txn-ops` is 128) and at most [`BATCH_BYTES`].

use bytes::Bytes;

use crate::{Backend, KeyValue, StoreError, Txn, TxnResult};

/// The marker key (stored as is, outside `/registry`).
pub const MARKER: &str = "/dualstack/migration";
/// Most puts in one transaction.
pub const BATCH_OPS: usize = 100;
/// Most bytes of values in one transaction (below etcd's 1.5 MiB request limit).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// The root of the copied keys.
pub const ROOT: &str = "/registry/";

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target holds objects of another cluster (or of a finished migration).
    #[error(
        "the target already holds {keys} keys under {ROOT} (e.g. {example}); refusing to migrate into a non-empty store without --force"
    )]
    NotEmpty {
        /// How many.
        keys: usize,
        /// One of them.
        example: String,
    },
    /// The target holds a migration from another source.
    #[error(
        "the target holds an unfinished migration from {other}, not from {this}; use --force to overwrite"
    )]
    OtherSource {
        /// The marker's source.
        other: String,
        /// Ours.
        this: String,
    },
    /// Stopped on purpose after some batches (tests of resumption).
    #[error("stopped after {batches} batches ({keys} keys copied); run again to resume")]
    Interrupted {
        /// Batches written.
        batches: usize,
        /// Keys written.
        keys: usize,
    },
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Keys in the source.
    pub source_keys: usize,
    /// Keys written to the target.
    pub copied: usize,
    /// Keys the target already held with the same value (a resumed run).
    pub unchanged: usize,
    /// Whether an unfinished migration was resumed.
    pub resumed: bool,
}

fn marker_value(source: &str, state: &str) -> Bytes {
    Bytes::from(serde_json::json!({"source": source, "state": state}).to_string())
}

/// Copies every key under [`ROOT`] of `source` into `target`. `source_id` names the source in
/// the marker (the data dir). `max_batches` stops early (tests).
pub async fn migrate(
    source: &dyn Backend,
    target: &dyn Backend,
    source_id: &str,
    force: bool,
    max_batches: Option<usize>,
) -> Result<Report, MigrateError> {
    let (items, _) = source.list(ROOT).await?;
    let (existing, _) = target.list(ROOT).await?;
    let marker = target.get(MARKER).await?;
    let marker_state: Option<serde_json::Value> = marker
        .as_ref()
        .and_then(|m| serde_json::from_slice(&m.value).ok());
    let resumed = match &marker_state {
        Some(m) if m["state"] == "in-progress" => {
            let other = m["source"].as_str().unwrap_or("").to_string();
            if other != source_id && !force {
                return Err(MigrateError::OtherSource {
                    other,
                    this: source_id.to_string(),
                });
            }
            true
        }
        _ => false,
    };
    if !existing.is_empty() && !resumed && !force {
        return Err(MigrateError::NotEmpty {
            keys: existing.len(),
            example: existing[0].key.clone(),
        });
    }
    target
        .txn(Txn::new().put(MARKER, marker_value(source_id, "in-progress")))
        .await?;
    let current: std::collections::HashMap<&str, &KeyValue> =
        existing.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    let mut report = Report {
        source_keys: items.len(),
        resumed,
        ..Report::default()
    };
    let mut batch = Txn::new();
    let mut bytes = 0;
    let mut batches = 0;
    for kv in &items {
        if current
            .get(kv.key.as_str())
            .is_some_and(|c| c.value == kv.value)
        {
            report.unchanged += 1;
            continue;
        }
        if batch.ops.len() == BATCH_OPS || bytes + kv.value.len() > BATCH_BYTES {
            if max_batches.is_some_and(|m| batches >= m) {
                return Err(MigrateError::Interrupted {
                    batches,
                    keys: report.copied,
                });
            }
            report.copied += commit(target, std::mem::take(&mut batch)).await?;
            bytes = 0;
            batches += 1;
        }
        bytes += kv.value.len();
        batch = batch.put(kv.key.clone(), kv.value.clone());
    }
    if !batch.ops.is_empty() {
        if max_batches.is_some_and(|m| batches >= m) {
            return Err(MigrateError::Interrupted {
                batches,
                keys: report.copied,
            });
        }
        report.copied += commit(target, batch).await?;
    }
    target
        .txn(Txn::new().put(MARKER, marker_value(source_id, "complete")))
        .await?;
    Ok(report)
}

async fn commit(target: &dyn Backend, batch: Txn) -> Result<usize, MigrateError> {
    let n = batch.ops.len();
    match target.txn(batch).await? {
        TxnResult::Committed { .. } => Ok(n),
        TxnResult::Failed { .. } => {
            Err(StoreError::Backend("unconditional put failed".into()).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::Embedded;

    async fn source_with(n: usize) -> Embedded {
        let s = Embedded::in_memory().unwrap();
        for i in 0..n {
            s.txn(Txn::new().put(
                format!("/registry/configmaps/default/cm-{i:04}"),
                format!("{{\"i\":{i}}}"),
            ))
            .await
            .unwrap();
        }
        s
    }

    #[tokio::test]
    async fn every_key_is_copied_and_a_second_run_is_refused_unless_forced() {
        let src = source_with(250).await;
        let dst = Embedded::in_memory().unwrap();
        let r = migrate(&src, &dst, "dir", false, None).await.unwrap();
        assert_eq!((r.source_keys, r.copied, r.resumed), (250, 250, false));
        let (items, _) = dst.list(ROOT).await.unwrap();
        let (want, _) = src.list(ROOT).await.unwrap();
        let pairs = |v: &[KeyValue]| {
            v.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&items), pairs(&want));
        let again = migrate(&src, &dst, "dir", false, None).await;
        assert!(
            matches!(again, Err(MigrateError::NotEmpty { keys: 250, .. })),
            "{again:?}"
        );
        let forced = migrate(&src, &dst, "dir", true, None).await.unwrap();
        assert_eq!(forced.unchanged, 250);
    }

    #[tokio::test]
    async fn an_interrupted_migration_resumes_where_it_stopped() {
        let src = source_with(250).await;
        let dst = Embedded::in_memory().unwrap();
        let stopped = migrate(&src, &dst, "dir", false, Some(1)).await;
        assert!(
            matches!(
                stopped,
                Err(MigrateError::Interrupted {
                    batches: 1,
                    keys: 100
                })
            ),
            "{stopped:?}"
        );
        // Another source may not take over the half-done target.
        let other = migrate(&src, &dst, "elsewhere", false, None).await;
        assert!(
            matches!(other, Err(MigrateError::OtherSource { .. })),
            "{other:?}"
        );
        let r = migrate(&src, &dst, "dir", false, None).await.unwrap();
        assert_eq!((r.copied, r.unchanged, r.resumed), (150, 100, true));
        assert_eq!(dst.list(ROOT).await.unwrap().0.len(), 250);
    }
}
