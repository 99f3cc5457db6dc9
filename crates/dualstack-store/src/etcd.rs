//! The etcd v3 backend (`dualstack server --etcd-servers=...`), through the `etcd-client` crate.
//!
//! The mapping is direct, as kube-apiserver's `storage/etcd3`:
//! - a [`Txn`] is one etcd transaction: [`Condition::Absent`] is `version(key) = 0`,
//!   [`Condition::Present`] `version(key) > 0`, [`Condition::ModRevision`] `mod(key) = r`; the
//!   puts and deletes run when every compare holds, and otherwise a get of every compared key
//!   tells which compare failed first and what the key holds now;
//! - the revision etcd gives the write is the [`Revision`] (the object's `resourceVersion`);
//! - a watch is an etcd watch with `prev_kv` from `after + 1`; one that starts at a compacted
//!   revision ends with [`StoreError::Compacted`] in the stream (the API's in-stream `410 Gone`);
//! - [`compaction_loop`] is upstream's compactor: every interval, one server (whichever wins a
//!   compare-and-swap on `compact_rev_key`) compacts the revision it saw an interval earlier.
//!
//! Keys: the API server's keys start with `/registry`; `--etcd-prefix` replaces that root (the
//! default `/registry` keeps kube-apiserver's layout). Every request has a deadline
//! ([`EtcdConfig::request_timeout`]): with etcd unreachable, a write fails with
//! [`StoreError::Backend`] in bounded time instead of hanging.
//!
//! [`local`] starts real etcd members on loopback (tests, benchmarks, `dualstack up --ha`).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions,
    Identity, TlsOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use crate::{
    Backend, Compare, Condition, Event, EventKind, KeyValue, Op, ProgressStream, Revision,
    StoreError, Txn, TxnResult, WatchItem, WatchStream,
};

pub mod local;

/// The root of the API server's keys, which `--etcd-prefix` replaces.
pub const API_ROOT: &str = "/registry";

/// The key upstream's compactor coordinates on (outside the prefix, as upstream's).
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// How to reach etcd: kube-apiserver's `--etcd-*` flags.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `--etcd-servers`: client URLs (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// `--etcd-cafile`: the CA that signed the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// `--etcd-certfile`: the client certificate.
    pub cert_file: Option<PathBuf>,
    /// `--etcd-keyfile`: the client certificate's key.
    pub key_file: Option<PathBuf>,
    /// `--etcd-prefix`: the root of every key (default `/registry`).
    pub prefix: String,
    /// Deadline of one request (a get, list or transaction).
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Plain-HTTP endpoints with the defaults (prefix `/registry`, 10 s per request).
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: API_ROOT.to_string(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The etcd backend. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Etcd {
    /// One client per endpoint: requests go to `current` and move to the next endpoint when
    /// it cannot be reached (etcd-client's balancer keeps sending to a dead member).
    clients: std::sync::Arc<Vec<Client>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    keys: KeyMap,
    timeout: Duration,
    /// Bumped to ask every open watch for a progress report.
    progress: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.keys.etcd_root)
            .finish()
    }
}

/// API keys ↔ etcd keys: `/registry/x` ↔ `<prefix>/x`. Keys outside `/registry` (only the
/// store's own tests use them) are stored as they are.
#[derive(Debug, Clone)]
struct KeyMap {
    etcd_root: String,
}

impl KeyMap {
    fn etcd_key(&self, key: &str) -> String {
        match key.strip_prefix(API_ROOT) {
            Some(rest) => format!("{}{rest}", self.etcd_root),
            None => key.to_string(),
        }
    }

    fn api_key(&self, key: &[u8]) -> Result<String, StoreError> {
        let key = std::str::from_utf8(key)
            .map_err(|_| StoreError::Backend("etcd returned a key that is not UTF-8".into()))?;
        Ok(match key.strip_prefix(self.etcd_root.as_str()) {
            Some(rest) => format!("{API_ROOT}{rest}"),
            None => key.to_string(),
        })
    }
}

fn etcd_err(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// Whether a request certainly never reached etcd's state machine (safe to send elsewhere).
fn not_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable
                && (s.message().contains("connect") || s.message().contains("no leader"))
        }
        _ => false,
    }
}

fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Backend(format!(
        "etcd: no answer within {}s (is etcd reachable?)",
        timeout.as_secs_f32()
    ))
}

fn read_file(path: &PathBuf, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path)
        .map_err(|e| StoreError::Backend(format!("reading {what} {}: {e}", path.display())))
}

impl Etcd {
    /// Connects to the endpoints (TLS when a CA or client certificate is given).
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_require_leader(true);
        if config.ca_file.is_some() || config.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_file(ca, "--etcd-cafile")?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        read_file(cert, "--etcd-certfile")?,
                        read_file(key, "--etcd-keyfile")?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Backend(
                        "--etcd-certfile and --etcd-keyfile must be given together".into(),
                    ));
                }
            }
            options = options.with_tls(tls);
        }
        let mut clients = Vec::new();
        for endpoint in &config.endpoints {
            // Connections are made lazily: a member that is down now is tried when needed.
            let client = tokio::time::timeout(
                config.request_timeout,
                Client::connect([endpoint], Some(options.clone())),
            )
            .await
            .map_err(|_| timed_out(config.request_timeout))?
            .map_err(etcd_err)?;
            clients.push(client);
        }
        Ok(Self {
            clients: std::sync::Arc::new(clients),
            current: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            keys: KeyMap {
                etcd_root: config.prefix.trim_end_matches('/').to_string(),
            },
            timeout: config.request_timeout,
            progress: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// The endpoint requests go to now.
    fn client(&self) -> (usize, Client) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Endpoint `i` failed: move on to the next one (unless another request already did).
    fn failed(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self.current.compare_exchange(
            i,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Runs one request under the deadline. A request that could not be sent (connection
    /// refused, a member without a leader) is tried on the next endpoint; one that may have
    /// reached etcd is never repeated (a transaction could have been applied), and its
    /// endpoint is left for the next request.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last = None;
        for _ in 0..self.clients.len() {
            let (i, c) = self.client();
            match tokio::time::timeout_at(deadline, f(c)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if not_sent(&e) => {
                    self.failed(i);
                    last = Some(e);
                }
                Ok(Err(e)) => return Err(etcd_err(e)),
                Err(_) => {
                    self.failed(i);
                    return Err(timed_out(self.timeout));
                }
            }
        }
        Err(last.map_or_else(|| timed_out(self.timeout), etcd_err))
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        convert_kv(&self.keys, kv)
    }

    /// Compacts etcd's history up to `revision`: watches from before it end with
    /// [`StoreError::Compacted`].
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call(|mut c| async move { c.compact(revision, None).await })
            .await
            .map(|_| ())
    }

    /// One round of upstream's compactor: whoever moves `compact_rev_key` from version `seen`
    /// compacts `last_rev` (the revision recorded a round earlier). Returns the key's version and
    /// the current revision for the next round.
    pub async fn compact_round(
        &self,
        seen: i64,
        last_rev: Revision,
    ) -> Result<(i64, Revision), StoreError> {
        let txn = EtcdTxn::new()
            .when([EtcdCompare::version(
                COMPACT_REV_KEY,
                CompareOp::Equal,
                seen,
            )])
            .and_then([TxnOp::put(COMPACT_REV_KEY, last_rev.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let resp = self
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let current = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            let version = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(0);
            return Ok((version, current));
        }
        if last_rev > 0 {
            self.compact(last_rev).await?;
            tracing::info!(revision = last_rev, "compacted etcd");
        }
        Ok((seen + 1, current))
    }

    /// Whether etcd answers a read under the prefix (kube-apiserver's `etcd` health check
    /// reads `<prefix>/health`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let key = self.keys.etcd_key(&format!("{API_ROOT}/health"));
        self.call(|mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await
        .map(|_| ())
    }
}

/// Runs upstream's compaction loop until the task is dropped: every `interval` one server
/// compacts etcd to the revision seen one interval earlier. `interval` zero disables it.
pub async fn compaction_loop(etcd: Etcd, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let (mut seen, mut last_rev) = (0, 0);
    loop {
        tokio::time::sleep(interval).await;
        match etcd.compact_round(seen, last_rev).await {
            Ok((v, rev)) => (seen, last_rev) = (v, rev),
            Err(e) => tracing::warn!(error = %e, "etcd compaction failed"),
        }
    }
}

fn compare_of(keys: &KeyMap, c: &Compare) -> EtcdCompare {
    let key = keys.etcd_key(&c.key);
    match c.condition {
        Condition::Absent => EtcdCompare::version(key, CompareOp::Equal, 0),
        Condition::Present => EtcdCompare::version(key, CompareOp::Greater, 0),
        Condition::ModRevision(r) => EtcdCompare::mod_revision(key, CompareOp::Equal, r),
    }
}

fn range_end(prefix: &str) -> Vec<u8> {
    // etcd's prefix range end: the prefix with its last byte below 0xff incremented.
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait::async_trait]
impl Backend for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = self.keys.etcd_key(key);
        let resp = self
            .call(|mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        resp.kvs().first().map(|kv| self.convert(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let start = self.keys.etcd_key(prefix);
        let end = range_end(&start);
        let resp = self
            .call(|mut c| {
                let (start, end) = (start.clone(), end.clone());
                async move { c.get(start, Some(GetOptions::new().with_range(end))).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let items = resp
            .kvs()
            .iter()
            .map(|kv| self.convert(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        txn.check_value_sizes()?;
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| compare_of(&self.keys, c))
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(self.keys.etcd_key(key), value.to_vec(), None),
                Op::Delete { key } => TxnOp::delete(self.keys.etcd_key(key), None),
            })
            .collect();
        let reads: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(self.keys.etcd_key(&c.key), None))
            .collect();
        let request = EtcdTxn::new().when(compares).and_then(ops).or_else(reads);
        let resp = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.txn(request).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(TxnResult::Committed { revision });
        }
        // The reads ran at the same revision as the compares: find the first that fails.
        let currents: Vec<Option<KeyValue>> = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.convert(kv)).transpose(),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let index = txn
            .compares
            .iter()
            .zip(&currents)
            .position(|(c, cur)| !c.holds(cur.as_ref()))
            .unwrap_or(0);
        Ok(TxnResult::Failed {
            index,
            current: currents.into_iter().nth(index).flatten(),
        })
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        // A count-only read of one key returns the store's revision in its header.
        let key = self.keys.etcd_key(&format!("{API_ROOT}/health"));
        let resp = self
            .call(|mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        // Watches report how far they have got, so the watch cache reaches this revision even
        // when the last writes were outside its prefix.
        self.progress.send_modify(|n| *n += 1);
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        Ok(self
            .watch_with_progress(prefix, after)?
            .filter_map(|item| async move {
                match item {
                    Ok(WatchItem::Events(events)) => Some(Ok(events)),
                    Ok(WatchItem::Progress(_)) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .boxed())
    }

    fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<ProgressStream, StoreError> {
        let keys = self.keys.clone();
        let start = keys.etcd_key(prefix);
        let options = WatchOptions::new()
            .with_range(range_end(&start))
            .with_start_revision(after + 1)
            .with_prev_key();
        let timeout = self.timeout;
        let mut wanted = self.progress.subscribe();
        wanted.mark_unchanged();
        /// A running watch. etcd before 3.4.24 may answer a progress request of a watcher
        /// that is still catching up from history with a revision beyond events not yet sent,
        /// so progress is asked for only once the watcher has caught up: at once when it
        /// started at the current revision, else after its first events or etcd's sync period.
        struct Running {
            stream: etcd_client::WatchStream,
            trust_from: tokio::time::Instant,
            pending: bool,
        }
        enum State {
            Start(Box<(Client, String, WatchOptions)>),
            Running(Box<Running>),
            Done,
        }
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        let (endpoint, client) = self.client();
        let this = self.clone();
        let stream = futures::stream::unfold(
            (State::Start(Box::new((client, start, options))), wanted),
            move |(state, mut wanted)| {
                let keys = keys.clone();
                let this = this.clone();
                async move {
                    // After an error the stream ends (its receiver is no longer needed) and
                    // the next watch goes to the next endpoint.
                    let done = |e: StoreError| {
                        if !matches!(e, StoreError::Compacted { .. }) {
                            this.failed(endpoint);
                        }
                        Some((Err(e), (State::Done, tokio::sync::watch::channel(0).1)))
                    };
                    let mut run = match state {
                        State::Done => return None,
                        State::Running(r) => r,
                        State::Start(start) => {
                            let (mut client, start, options) = *start;
                            match tokio::time::timeout(timeout, client.watch(start, Some(options)))
                                .await
                            {
                                Ok(Ok(stream)) => Box::new(Running {
                                    stream,
                                    trust_from: far(),
                                    pending: false,
                                }),
                                Ok(Err(e)) => return done(etcd_err(e)),
                                Err(_) => return done(timed_out(timeout)),
                            }
                        }
                    };
                    loop {
                        let message = tokio::select! {
                            m = run.stream.message() => m,
                            changed = wanted.changed(), if !run.pending => {
                                if changed.is_ok() {
                                    run.pending = true;
                                }
                                continue;
                            }
                            _ = tokio::time::sleep_until(run.trust_from), if run.pending => {
                                run.pending = false;
                                if let Err(e) = run.stream.request_progress().await {
                                    return done(etcd_err(e));
                                }
                                continue;
                            }
                        };
                        let resp = match message {
                            Ok(Some(r)) => r,
                            Ok(None) => {
                                return done(StoreError::Backend(
                                    "etcd: watch stream ended".into(),
                                ));
                            }
                            Err(e) => return done(etcd_err(e)),
                        };
                        if resp.compact_revision() > 0 {
                            return done(StoreError::Compacted {
                                requested: after,
                                oldest: resp.compact_revision(),
                            });
                        }
                        if resp.canceled() {
                            return done(StoreError::Backend(format!(
                                "etcd: watch canceled: {}",
                                resp.cancel_reason()
                            )));
                        }
                        let now = tokio::time::Instant::now();
                        if resp.created() {
                            let current = resp.header().map_or(0, |h| h.revision());
                            run.trust_from = if after >= current {
                                now
                            } else {
                                now + Duration::from_millis(300)
                            };
                            continue;
                        }
                        if resp.events().is_empty() {
                            // A progress report: nothing under the prefix up to this revision.
                            let at = resp.header().map_or(0, |h| h.revision());
                            return Some((
                                Ok(WatchItem::Progress(at)),
                                (State::Running(run), wanted),
                            ));
                        }
                        run.trust_from = run.trust_from.min(now);
                        let events = resp
                            .events()
                            .iter()
                            .map(|e| convert_event(&keys, e))
                            .collect::<Result<Vec<_>, _>>();
                        return match events {
                            Ok(events) => {
                                Some((Ok(WatchItem::Events(events)), (State::Running(run), wanted)))
                            }
                            Err(e) => done(e),
                        };
                    }
                }
            },
        );
        Ok(stream.boxed())
    }

    fn health_check_name(&self) -> &'static str {
        "etcd"
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.ping().await
    }
}

fn convert_kv(keys: &KeyMap, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: keys.api_key(kv.key())?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn convert_event(keys: &KeyMap, e: &etcd_client::Event) -> Result<Event, StoreError> {
    let kv = e
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd: watch event without a key".into()))?;
    let prev = e.prev_kv().map(|p| convert_kv(keys, p)).transpose()?;
    match e.event_type() {
        EventType::Put => Ok(Event {
            kind: EventKind::Put,
            kv: convert_kv(keys, kv)?,
            prev,
        }),
        EventType::Delete => {
            // etcd's delete event carries only the key and the deletion's revision; the last
            // value is the previous one.
            let mut last = prev.clone().unwrap_or(KeyValue {
                key: keys.api_key(kv.key())?,
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: 0,
            });
            last.mod_revision = kv.mod_revision();
            Ok(Event {
                kind: EventKind::Delete,
                kv: last,
                prev,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    crate::conformance::backend_tests!(|| async {
        let etcd = local::LocalEtcd::start(1).await.unwrap();
        let s: Arc<dyn Backend> = Arc::new(etcd.connect().await.unwrap());
        (s, etcd)
    });

    /// The same behaviour on a 3-member cluster (any member may answer).
    mod three_members {
        use super::*;

        crate::conformance::backend_tests!(|| async {
            let etcd = local::LocalEtcd::start(3).await.unwrap();
            let s: Arc<dyn Backend> = Arc::new(etcd.connect().await.unwrap());
            (s, etcd)
        });
    }

    fn put(key: &str, v: &str) -> Txn {
        Txn::new().put(key, Bytes::from(v.to_string()))
    }

    struct Plain;
    impl crate::cache::Decorator for Plain {
        fn decorate(&self, _key: &str, value: &[u8], _rev: Revision) -> crate::cache::Decorated {
            crate::cache::Decorated {
                attrs: crate::cache::Attrs::default(),
                output: Bytes::copy_from_slice(value),
                keep_value: true,
            }
        }
    }

    #[tokio::test]
    async fn the_watch_cache_reaches_the_current_revision_after_writes_outside_its_prefix() {
        let etcd = local::LocalEtcd::start(1).await.unwrap();
        let s: Arc<dyn Backend> = Arc::new(etcd.connect().await.unwrap());
        let cache = crate::cache::Cache::start(s.clone(), "/registry/", Arc::new(Plain))
            .await
            .unwrap();
        s.txn(put("/registry/cm/a", "1")).await.unwrap();
        // Another etcd user (or the compactor's key) moves the revision past the prefix.
        s.txn(put("/elsewhere/x", "1")).await.unwrap();
        s.txn(put("/elsewhere/y", "1")).await.unwrap();
        let rev = s.current_revision().await.unwrap();
        assert!(
            cache.wait_for(rev, Duration::from_secs(5)).await,
            "the cache stayed at {} below {rev}",
            cache.revision()
        );
        assert!(cache.get("/registry/cm/a").is_some());
    }

    #[tokio::test]
    async fn a_watch_from_a_compacted_revision_ends_with_compacted_in_the_stream() {
        let etcd = local::LocalEtcd::start(1).await.unwrap();
        let s = etcd.connect().await.unwrap();
        for i in 0..5 {
            s.txn(put("/registry/c/a", &i.to_string())).await.unwrap();
        }
        let rev = s.current_revision().await.unwrap();
        s.compact(rev).await.unwrap();
        let mut w = s.watch("/registry/c/", 2).unwrap();
        match w.next().await {
            Some(Err(StoreError::Compacted {
                requested: 2,
                oldest,
            })) => assert_eq!(oldest, rev),
            other => panic!("want Compacted in the stream, got {other:?}"),
        }
        // From the compacted revision on, the watch works.
        let mut w = s.watch("/registry/c/", rev).unwrap();
        s.txn(put("/registry/c/b", "x")).await.unwrap();
        let got = w.next().await.unwrap().unwrap();
        assert_eq!(got[0].kv.key, "/registry/c/b");
    }

    #[tokio::test]
    async fn the_compactor_compacts_what_it_saw_one_round_earlier_and_only_once_per_round() {
        let etcd = local::LocalEtcd::start(1).await.unwrap();
        let a = etcd.connect().await.unwrap();
        let b = etcd.connect().await.unwrap();
        a.txn(put("/registry/x/a", "1")).await.unwrap();
        // Round 1: nothing compacted yet; both servers try, one wins.
        let (va, ra) = a.compact_round(0, 0).await.unwrap();
        let (vb, _) = b.compact_round(0, 0).await.unwrap();
        assert_eq!((va, vb), (1, 1), "the loser learns the key's version");
        a.txn(put("/registry/x/a", "2")).await.unwrap();
        // Round 2: the winner compacts the revision seen in round 1.
        let (va2, _) = a.compact_round(va, ra).await.unwrap();
        assert_eq!(va2, 2);
        let mut w = a.watch("/registry/x/", ra - 2).unwrap();
        assert!(
            matches!(w.next().await, Some(Err(StoreError::Compacted { .. }))),
            "history before revision {ra} should be gone"
        );
    }

    #[tokio::test]
    async fn requests_and_watches_move_to_another_member_when_one_is_killed() {
        let mut etcd = local::LocalEtcd::start(3).await.unwrap();
        let s = etcd.connect().await.unwrap();
        let mut w = s.watch("/registry/m/", 1).unwrap();
        s.txn(put("/registry/m/a", "1")).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap()[0].kv.key, "/registry/m/a");
        etcd.kill(0); // the member every request went to
        // A request in flight on the broken connection fails (it may have reached etcd, so it
        // is not repeated), and so may requests during the election that follows when the
        // member led; then requests go to another member.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match s.txn(put("/registry/m/b", "1")).await {
                Ok(r) => {
                    assert!(matches!(r, TxnResult::Committed { .. }), "{r:?}");
                    break;
                }
                Err(StoreError::Backend(e)) if std::time::Instant::now() < deadline => {
                    eprintln!("retrying after: {e}");
                }
                Err(e) => panic!("no member took the write: {e}"),
            }
        }
        assert!(s.get("/registry/m/b").await.unwrap().is_some());
        // The broken watch ends; the next one goes elsewhere and replays from history.
        let ended = w.next().await;
        assert!(
            matches!(ended, Some(Err(StoreError::Backend(_)))),
            "{ended:?}"
        );
        let mut w = s.watch("/registry/m/", 2).unwrap();
        assert_eq!(w.next().await.unwrap().unwrap()[0].kv.key, "/registry/m/b");
    }

    fn openssl(dir: &std::path::Path, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA and a certificate signed by it for `name` (with 127.0.0.1 as its address).
    fn issue(dir: &std::path::Path, name: &str) {
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }

    #[tokio::test]
    async fn tls_with_a_client_certificate_reaches_an_etcd_that_requires_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "1",
                "-subj",
                "/CN=etcd-ca",
            ],
        );
        issue(d, "server");
        issue(d, "client");
        let spec = local::plan(d, 1).unwrap().remove(0);
        let client_url = spec.client_url.replace("http://", "https://");
        let path = |f: &str| d.join(f).display().to_string();
        let mut child = std::process::Command::new(local::etcd_binary())
            .args(spec.args(std::slice::from_ref(&spec), "tls"))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--cert-file={}", path("server.crt")))
            .arg(format!("--key-file={}", path("server.key")))
            .arg(format!("--trusted-ca-file={}", path("ca.crt")))
            .arg("--client-cert-auth")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut config = EtcdConfig::new(vec![client_url]);
        config.ca_file = Some(d.join("ca.crt"));
        config.cert_file = Some(d.join("client.crt"));
        config.key_file = Some(d.join("client.key"));
        config.request_timeout = Duration::from_secs(2);
        let mut result = None;
        for _ in 0..100 {
            if let Ok(s) = Etcd::connect(&config).await
                && let Ok(r) = s.txn(put("/registry/tls/a", "1")).await
            {
                result = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Without the client certificate the same etcd refuses.
        let mut anonymous = config.clone();
        anonymous.cert_file = None;
        anonymous.key_file = None;
        let refused = match Etcd::connect(&anonymous).await {
            Ok(s) => s.get("/registry/tls/a").await.is_err(),
            Err(_) => true,
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            matches!(result, Some(TxnResult::Committed { .. })),
            "no write over TLS: {result:?}"
        );
        assert!(refused, "etcd answered a client without a certificate");
    }

    #[tokio::test]
    async fn a_store_whose_etcd_is_gone_fails_requests_within_the_deadline() {
        let mut etcd = local::LocalEtcd::start(1).await.unwrap();
        let mut config = etcd.config();
        config.request_timeout = Duration::from_secs(2);
        let s = Etcd::connect(&config).await.unwrap();
        s.txn(put("/registry/y/a", "1")).await.unwrap();
        etcd.kill(0);
        let started = std::time::Instant::now();
        let r = s.txn(put("/registry/y/b", "1")).await;
        assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
        assert!(s.health().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn keys_under_registry_take_the_prefix_in_its_place() {
        let m = KeyMap {
            etcd_root: "/cluster-a".into(),
        };
        assert_eq!(
            m.etcd_key("/registry/services/specs/default/web"),
            "/cluster-a/services/specs/default/web"
        );
        assert_eq!(
            m.api_key(b"/cluster-a/services/specs/default/web").unwrap(),
            "/registry/services/specs/default/web"
        );
        let default = KeyMap {
            etcd_root: "/registry".into(),
        };
        assert_eq!(default.etcd_key("/registry/pods/a/b"), "/registry/pods/a/b");
        assert_eq!(m.etcd_key("/a"), "/a");
        assert_eq!(m.api_key(b"/a").unwrap(), "/a");
    }

    #[test]
    fn range_end_increments_the_last_byte() {
        assert_eq!(range_end("/a/"), b"/a0".to_vec());
        assert_eq!(range_end("/a"), b"/b".to_vec());
    }
}
