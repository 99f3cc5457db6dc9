//! The behaviour every [`Backend`] shares, as test bodies run against each backend
//! ([`backend_tests!`] in the embedded and etcd test modules).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::{Backend, Compare, EventKind, Txn, TxnResult};

fn put(key: &str, v: &str) -> Txn {
    Txn::new().put(key, Bytes::from(v.to_string()))
}

pub async fn revisions_start_at_one_and_increase_per_transaction(s: Arc<dyn Backend>) {
    assert_eq!(s.current_revision().await.unwrap(), 1);
    let r = s.txn(put("/a", "1").put("/b", "2")).await.unwrap();
    assert_eq!(r, TxnResult::Committed { revision: 2 });
    let a = s.get("/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (2, 2));
    s.txn(put("/a", "3")).await.unwrap();
    let a = s.get("/a").await.unwrap().unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, &a.value[..]),
        (2, 3, &b"3"[..])
    );
}

pub async fn failed_compare_writes_nothing_and_reports_current_value(s: Arc<dyn Backend>) {
    s.txn(put("/a", "1")).await.unwrap();
    let r = s
        .txn(put("/a", "2").put("/b", "x").when(Compare::absent("/a")))
        .await
        .unwrap();
    match r {
        TxnResult::Failed {
            index: 0,
            current: Some(kv),
        } => assert_eq!(&kv.value[..], b"1"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.get("/b").await.unwrap().is_none());
    assert_eq!(s.current_revision().await.unwrap(), 2);
    let stale = s
        .txn(put("/a", "2").when(Compare::mod_revision("/a", 1)))
        .await
        .unwrap();
    assert!(matches!(stale, TxnResult::Failed { .. }));
    let ok = s
        .txn(put("/a", "2").when(Compare::mod_revision("/a", 2)))
        .await
        .unwrap();
    assert_eq!(ok, TxnResult::Committed { revision: 3 });
}

pub async fn concurrent_creates_of_one_key_have_exactly_one_winner(s: Arc<dyn Backend>) {
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.txn(put("/k", &i.to_string()).when(Compare::absent("/k")))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), TxnResult::Committed { .. }) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

pub async fn list_returns_prefix_sorted_with_revision(s: Arc<dyn Backend>) {
    s.txn(put("/r/b", "1").put("/r/a", "2").put("/rx", "3"))
        .await
        .unwrap();
    let (items, rev) = s.list("/r/").await.unwrap();
    let keys: Vec<_> = items.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, vec!["/r/a", "/r/b"]);
    assert_eq!(rev, 2);
}

pub async fn watch_replays_history_then_follows_live_changes(s: Arc<dyn Backend>) {
    s.txn(put("/w/a", "1")).await.unwrap(); // rev 2
    s.txn(put("/other", "1")).await.unwrap(); // rev 3
    s.txn(Txn::new().delete("/w/a")).await.unwrap(); // rev 4
    let mut w = s.watch("/w/", 1).unwrap();
    let backlog = w.next().await.unwrap().unwrap();
    assert_eq!(backlog.len(), 2);
    assert_eq!(
        (backlog[0].kind, backlog[0].revision()),
        (EventKind::Put, 2)
    );
    let e2 = &backlog[1];
    assert_eq!(
        (e2.kind, e2.revision(), &e2.kv.value[..]),
        (EventKind::Delete, 4, &b"1"[..])
    );
    s.txn(put("/w/b", "2")).await.unwrap(); // rev 5
    let live = w.next().await.unwrap().unwrap();
    assert_eq!((live[0].kv.key.as_str(), live[0].revision()), ("/w/b", 5));
}

/// One `#[tokio::test]` per shared behaviour; `$fixture` is an async closure returning the
/// backend and a guard kept alive for the test (e.g. the etcd process).
macro_rules! backend_tests {
    ($fixture:expr) => {
        #[tokio::test]
        async fn revisions_start_at_one_and_increase_per_transaction() {
            let (s, _guard) = ($fixture)().await;
            $crate::conformance::revisions_start_at_one_and_increase_per_transaction(s).await;
        }

        #[tokio::test]
        async fn failed_compare_writes_nothing_and_reports_current_value() {
            let (s, _guard) = ($fixture)().await;
            $crate::conformance::failed_compare_writes_nothing_and_reports_current_value(s).await;
        }

        #[tokio::test]
        async fn concurrent_creates_of_one_key_have_exactly_one_winner() {
            let (s, _guard) = ($fixture)().await;
            $crate::conformance::concurrent_creates_of_one_key_have_exactly_one_winner(s).await;
        }

        #[tokio::test]
        async fn list_returns_prefix_sorted_with_revision() {
            let (s, _guard) = ($fixture)().await;
            $crate::conformance::list_returns_prefix_sorted_with_revision(s).await;
        }

        #[tokio::test]
        async fn watch_replays_history_then_follows_live_changes() {
            let (s, _guard) = ($fixture)().await;
            $crate::conformance::watch_replays_history_then_follows_live_changes(s).await;
        }
    };
}
pub(crate) use backend_tests;
