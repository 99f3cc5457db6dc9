//! Watch: a chunked stream of newline-delimited `{"type","object"}` events served from the
//! watch cache. Synthetic ADDED events when starting without a revision (or with `0`, or with
//! `sendInitialEvents=true`, which ends them with the `k8s.io/initial-events-end` bookmark);
//! replay from a revision; objects moving in or out of the selectors become ADDED / DELETED;
//! BOOKMARK events when asked; a too-old revision is an in-stream ERROR with a 410 `Status`
//! (never an HTTP 410, which kube-rs would retry forever); the stream ends at `timeoutSeconds`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use dualstack_apimachinery::status::ApiError;
use dualstack_store::EventKind;
use dualstack_store::cache::{CacheEvent, Entry};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{IncludeObject, ListOpts, ResourceApi};
use crate::handlers::{RequestContext, list_revision, table, watch_error};
use crate::request::{ListParams, Rendering};

/// How often bookmarks are sent to watchers that allow them.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// How long before a watch's deadline the last bookmark is sent.
pub const FINAL_BOOKMARK_LEAD: Duration = Duration::from_secs(2);

type Chunk = Result<Bytes, Infallible>;

struct Emitter {
    tx: mpsc::Sender<Chunk>,
    api: Arc<dyn ResourceApi>,
    render: Rendering,
    include: IncludeObject,
    headers_sent: bool,
}

impl Emitter {
    async fn send_raw(&self, line: Vec<u8>) -> bool {
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }

    async fn event(&mut self, ty: &str, output: &[u8]) -> bool {
        let mut line = Vec::with_capacity(output.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(ty.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        if self.render.table {
            let rows = match self.api.rows_for_output(output, self.include) {
                Ok(r) => r,
                Err(e) => return self.error(&e).await,
            };
            let v: Value = serde_json::from_slice(output).unwrap_or(Value::Null);
            let rv = v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let mut t = table(self.api.def(), rows, &rv, None, None, self.render);
            if self.headers_sent {
                t["columnDefinitions"] = json!([]);
            }
            self.headers_sent = true;
            line.extend_from_slice(&serde_json::to_vec(&t).unwrap_or_default());
        } else {
            line.extend_from_slice(output);
        }
        line.extend_from_slice(b"}\n");
        self.send_raw(line).await
    }

    async fn bookmark(&self, rv: i64, initial_end: bool) -> bool {
        let def = self.api.def();
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let ev = json!({"type": "BOOKMARK", "object": {"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}});
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        self.send_raw(line).await
    }

    async fn error(&self, e: &ApiError) -> bool {
        let ev = json!({"type": "ERROR", "object": e.to_status()});
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        let _ = self.send_raw(line).await;
        false
    }
}

fn matches(p: &ListParams, namespaced: bool, e: &Entry) -> bool {
    crate::api::selected(&p.labels, &p.fields, namespaced, e)
}

/// The previous state of an object with the event's revision (an object leaving the selection
/// is sent as DELETED with its previous content, as kube-apiserver's cacher does).
fn with_revision(prev: &Entry, rev: i64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&prev.output).unwrap_or(Value::Null);
    v["metadata"]["resourceVersion"] = rev.to_string().into();
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn deliver(em: &mut Emitter, p: &ListParams, ev: &CacheEvent) -> bool {
    let namespaced = em.api.def().namespaced;
    let now = matches(p, namespaced, &ev.entry);
    match ev.kind {
        EventKind::Delete => {
            if now {
                return em.event("DELETED", &ev.entry.output).await;
            }
        }
        EventKind::Put => {
            let before = ev.prev.as_ref().map(|e| matches(p, namespaced, e));
            match (now, before) {
                (true, Some(true)) => return em.event("MODIFIED", &ev.entry.output).await,
                (true, _) => return em.event("ADDED", &ev.entry.output).await,
                (false, Some(true)) => {
                    let prev = ev.prev.as_ref().expect("prev");
                    return em
                        .event("DELETED", &with_revision(prev, ev.revision()))
                        .await;
                }
                _ => {}
            }
        }
    }
    true
}

async fn run(mut em: Emitter, rc: RequestContext, ns: Option<String>, p: ListParams) {
    let def = em.api.def().clone();
    let prefix = def.prefix(ns.as_deref());
    let rv = p.resource_version.clone();
    let initial = p.send_initial_events == Some(true) || rv.is_none() || rv.as_deref() == Some("0");
    let timeout = p
        .timeout
        .unwrap_or_else(|| Duration::from_secs(rand::rng().random_range(1800..3600)));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut watcher = if initial {
        let start = if p.send_initial_events == Some(true) || rv.is_some() {
            Ok(rc.storage.cache.revision())
        } else {
            list_revision(&rc.storage, None, None).await
        };
        if let Err(e) = start {
            em.error(&e).await;
            return;
        }
        let page = em.api.list(
            ns.as_deref(),
            &ListOpts {
                labels: p.labels.clone(),
                fields: p.fields.clone(),
                limit: None,
                continue_after: None,
                at_revision: None,
            },
        );
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                em.error(&watch_error(&e)).await;
                return;
            }
        };
        let w = match rc.storage.cache.watch(&prefix, page.revision) {
            Ok(w) => w,
            Err(e) => {
                em.error(&watch_error(&e)).await;
                return;
            }
        };
        for item in &page.items {
            if !em.event("ADDED", &item.output).await {
                return;
            }
        }
        if p.send_initial_events == Some(true) && !em.bookmark(page.revision, true).await {
            return;
        }
        w
    } else {
        let n: i64 = match rv.as_deref().unwrap_or("0").parse() {
            Ok(n) => n,
            Err(_) => {
                em.error(&ApiError::BadRequest(format!(
                    "invalid resource version: {}",
                    rv.unwrap_or_default()
                )))
                .await;
                return;
            }
        };
        if !rc.storage.cache.wait_for(n, Duration::from_secs(3)).await {
            em.error(&ApiError::ResourceVersionTooLarge {
                requested: n,
                current: rc.storage.cache.revision(),
            })
            .await;
            return;
        }
        match rc.storage.cache.watch(&prefix, n) {
            Ok(w) => w,
            Err(e) => {
                em.error(&watch_error(&e)).await;
                return;
            }
        }
    };
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + BOOKMARK_INTERVAL,
        BOOKMARK_INTERVAL,
    );
    // As kube-apiserver's watch cache: one more bookmark shortly before the deadline, so the
    // client resumes from a recent revision.
    let last_bookmark = deadline
        .checked_sub(FINAL_BOOKMARK_LEAD)
        .filter(|_| p.allow_bookmarks);
    let mut final_sent = last_bookmark.is_none();
    loop {
        tokio::select! {
            r = watcher.next() => match r {
                Ok(batch) => {
                    for ev in &batch {
                        if !deliver(&mut em, &p, ev).await {
                            return;
                        }
                    }
                }
                Err(e) => {
                    em.error(&watch_error(&e)).await;
                    return;
                }
            },
            _ = ticker.tick(), if p.allow_bookmarks => {
                if !em.bookmark(watcher.cursor(), false).await {
                    return;
                }
            }
            _ = tokio::time::sleep_until(last_bookmark.unwrap_or(deadline)), if !final_sent => {
                final_sent = true;
                if !em.bookmark(watcher.cursor(), false).await {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = em.tx.closed() => return,
        }
    }
}

/// Starts a watch and returns the streaming response.
pub async fn serve(
    rc: &RequestContext,
    api: Arc<dyn ResourceApi>,
    ns: Option<&str>,
    p: ListParams,
    render: Rendering,
    include: IncludeObject,
) -> Response {
    let (tx, rx) = mpsc::channel::<Chunk>(256);
    let em = Emitter {
        tx,
        api,
        render,
        include,
        headers_sent: false,
    };
    tokio::spawn(run(em, rc.clone(), ns.map(str::to_string), p));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("response")
}
