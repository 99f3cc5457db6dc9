//! Connection governance: how many connections the server holds, for how long, and which one
//! goes when it is full.
//!
//! The rules (the [`Table`] is pure; time is an argument):
//! - Every accepted connection is *untrusted* until a request on it authenticated with a token
//!   (a request that carried `Authorization` and was not answered 401). Untrusted connections
//!   have their own, smaller cap, so a flood of connections that never authenticate (idle TCP,
//!   half a TLS handshake, half the headers, or only anonymous health checks) cannot crowd out
//!   the clients the server exists for.
//! - A connection is *busy* while a request on it is in flight (a watch stays in flight for its
//!   whole life) and *idle* otherwise. Only idle connections are ever evicted or timed out.
//! - A new connection that finds its tier (or the whole table) full evicts an idle connection:
//!   first those that have not even sent a whole TLS ClientHello, then those that have not
//!   authenticated, then trusted ones; within each, the one idle longest. With nothing to evict
//!   it is refused. A health check therefore gets in: a flood of silent or half-open
//!   connections is evicted before any connection whose handshake is under way, and an older
//!   one before a newer one.
//! - A connection must finish its TLS handshake and the headers of its first request within the
//!   handshake timeout, and is closed after the idle timeout without a request in flight.
//! - An upgraded connection (exec, attach, port-forward) outlives its HTTP connection task in
//!   the task that splices it to the node: it holds its slot ([`Governor::hold`]), busy, until
//!   that session ends, so sessions count against the caps like any connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The limits of the connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once, all tiers.
    pub max_connections: usize,
    /// Connections held at once that have not authenticated.
    pub max_untrusted: usize,
    /// Time to finish the TLS handshake and the first request's headers.
    pub handshake_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_untrusted: 256,
            handshake_timeout: Duration::from_secs(10),
            // Go's http.Server as kube-apiserver configures it.
            idle_timeout: Duration::from_secs(90),
        }
    }
}

impl Limits {
    /// Caps `max_connections` below the process's open-file limit, keeping `reserve`
    /// descriptors for the store, logs and outgoing connections.
    pub fn within_fd_limit(mut self, fd_limit: u64, reserve: u64) -> Self {
        let room = fd_limit.saturating_sub(reserve).max(16) as usize;
        self.max_connections = self.max_connections.min(room);
        self.max_untrusted = self.max_untrusted.min(self.max_connections);
        self
    }
}

/// A connection's number in the table.
pub type ConnId = u64;

#[derive(Debug)]
struct Slot {
    trusted: bool,
    hello: bool,
    served_request: bool,
    inflight: u32,
    accepted: Instant,
    last_active: Instant,
    /// Upgraded sessions still using the connection (each also counts in `inflight`).
    holds: u32,
    /// The connection task ended; the slot stays while `holds` > 0.
    closed: bool,
}

/// What [`Table::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted as `id`; `evict` must be closed to make room.
    Admitted {
        /// The new connection.
        id: ConnId,
        /// A connection to close first.
        evict: Option<ConnId>,
    },
    /// Everything is busy: close the new connection at once.
    Refused,
}

/// The connection table (pure).
#[derive(Debug)]
pub struct Table {
    limits: Limits,
    next: ConnId,
    slots: HashMap<ConnId, Slot>,
    untrusted: usize,
}

impl Table {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next: 1,
            slots: HashMap::new(),
            untrusted: 0,
        }
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Untrusted connections held.
    pub fn untrusted(&self) -> usize {
        self.untrusted
    }

    fn longest_idle(&self, untrusted_only: bool) -> Option<ConnId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.inflight == 0 && (!untrusted_only || !s.trusted))
            .min_by_key(|(id, s)| (s.trusted, s.hello, s.last_active, **id))
            .map(|(id, _)| *id)
    }

    /// Admits a new connection, choosing the one to evict when full.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let evict = if self.untrusted >= self.limits.max_untrusted {
            match self.longest_idle(true) {
                Some(id) => Some(id),
                None => return Admission::Refused,
            }
        } else if self.slots.len() >= self.limits.max_connections {
            match self.longest_idle(false) {
                Some(id) => Some(id),
                None => return Admission::Refused,
            }
        } else {
            None
        };
        if let Some(old) = evict {
            self.remove(old);
        }
        let id = self.next;
        self.next += 1;
        self.slots.insert(
            id,
            Slot {
                trusted: false,
                hello: false,
                served_request: false,
                inflight: 0,
                accepted: now,
                last_active: now,
                holds: 0,
                closed: false,
            },
        );
        self.untrusted += 1;
        Admission::Admitted { id, evict }
    }

    /// A whole TLS ClientHello arrived on `id`.
    pub fn hello(&mut self, id: ConnId, now: Instant) {
        if let Some(s) = self.slots.get_mut(&id) {
            s.hello = true;
            s.last_active = now;
        }
    }

    /// A request's headers arrived on `id`.
    pub fn begin(&mut self, id: ConnId, now: Instant) {
        if let Some(s) = self.slots.get_mut(&id) {
            s.inflight += 1;
            s.served_request = true;
            s.last_active = now;
        }
    }

    /// A request on `id` finished (its response body ended or was dropped).
    pub fn end(&mut self, id: ConnId, now: Instant) {
        if let Some(s) = self.slots.get_mut(&id) {
            s.inflight = s.inflight.saturating_sub(1);
            s.last_active = now;
        }
    }

    /// A request on `id` authenticated with a token.
    pub fn trust(&mut self, id: ConnId) {
        if let Some(s) = self.slots.get_mut(&id)
            && !s.trusted
        {
            s.trusted = true;
            self.untrusted -= 1;
        }
    }

    /// An upgraded session goes on using `id` beyond its connection task: busy until
    /// [`Table::release`]. False when `id` is gone.
    pub fn hold(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(s) = self.slots.get_mut(&id) else {
            return false;
        };
        s.holds += 1;
        s.inflight += 1;
        s.last_active = now;
        true
    }

    /// The upgraded session on `id` ended; a connection whose task ended before goes now.
    pub fn release(&mut self, id: ConnId, now: Instant) {
        let Some(s) = self.slots.get_mut(&id) else {
            return;
        };
        s.holds = s.holds.saturating_sub(1);
        s.inflight = s.inflight.saturating_sub(1);
        s.last_active = now;
        if s.closed && s.holds == 0 {
            self.remove(id);
        }
    }

    /// The connection task of `id` ended: forgotten, unless an upgraded session holds it.
    pub fn close(&mut self, id: ConnId) {
        match self.slots.get_mut(&id) {
            Some(s) if s.holds > 0 => s.closed = true,
            Some(_) => self.remove(id),
            None => {}
        }
    }

    /// Forgets `id` (closed).
    pub fn remove(&mut self, id: ConnId) {
        if let Some(s) = self.slots.remove(&id)
            && !s.trusted
        {
            self.untrusted -= 1;
        }
    }

    /// Connections past a deadline at `now`: no first request within the handshake timeout,
    /// or idle for longer than the idle timeout. They are removed from the table.
    pub fn expire(&mut self, now: Instant) -> Vec<ConnId> {
        let l = self.limits;
        let expired: Vec<ConnId> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.inflight == 0
                    && ((!s.served_request
                        && now.saturating_duration_since(s.accepted) > l.handshake_timeout)
                        || now.saturating_duration_since(s.last_active) > l.idle_timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.remove(*id);
        }
        expired
    }
}

/// The table with the means to close connections: what the accept loop and the per-connection
/// services share.
#[derive(Debug, Clone)]
pub struct Governor {
    table: Arc<Mutex<Table>>,
    kills: Arc<Mutex<HashMap<ConnId, Arc<Notify>>>>,
    /// The limits in force.
    pub limits: Limits,
}

impl Governor {
    /// A governor with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            table: Arc::new(Mutex::new(Table::new(limits))),
            kills: Default::default(),
            limits,
        }
    }

    fn kill(&self, id: ConnId) {
        if let Some(n) = self.kills.lock().expect("kills").remove(&id) {
            n.notify_one();
        }
    }

    /// Admits a new connection; `None` when it must be refused. The returned [`Notify`] fires
    /// when the connection must close.
    pub fn admit(&self) -> Option<(ConnId, Arc<Notify>)> {
        let adm = self.table.lock().expect("conn table").admit(Instant::now());
        match adm {
            Admission::Refused => None,
            Admission::Admitted { id, evict } => {
                if let Some(old) = evict {
                    self.kill(old);
                }
                let n = Arc::new(Notify::new());
                self.kills.lock().expect("kills").insert(id, n.clone());
                Some((id, n))
            }
        }
    }

    /// See [`Table::begin`].
    pub fn begin(&self, id: ConnId) {
        self.table
            .lock()
            .expect("conn table")
            .begin(id, Instant::now());
    }

    /// See [`Table::end`].
    pub fn end(&self, id: ConnId) {
        self.table
            .lock()
            .expect("conn table")
            .end(id, Instant::now());
    }

    /// See [`Table::hello`].
    pub fn hello(&self, id: ConnId) {
        self.table
            .lock()
            .expect("conn table")
            .hello(id, Instant::now());
    }

    /// See [`Table::trust`].
    pub fn trust(&self, id: ConnId) {
        self.table.lock().expect("conn table").trust(id);
    }

    /// The connection task ended (an upgraded session may still hold the slot).
    pub fn closed(&self, id: ConnId) {
        self.table.lock().expect("conn table").close(id);
        self.kills.lock().expect("kills").remove(&id);
    }

    /// Keeps connection `id` counted and busy until the returned guard drops: for an upgraded
    /// session, which lives on after the connection task. `None` when `id` is gone.
    pub fn hold(&self, id: ConnId) -> Option<Hold> {
        self.table
            .lock()
            .expect("conn table")
            .hold(id, Instant::now())
            .then(|| Hold {
                governor: self.clone(),
                id,
            })
    }

    /// Closes the connections past their deadlines; returns how many.
    pub fn reap(&self) -> usize {
        let expired = self
            .table
            .lock()
            .expect("conn table")
            .expire(Instant::now());
        for id in &expired {
            self.kill(*id);
        }
        expired.len()
    }

    /// (connections, untrusted connections) held now.
    pub fn counts(&self) -> (usize, usize) {
        let t = self.table.lock().expect("conn table");
        (t.len(), t.untrusted())
    }
}

/// A connection's slot held by an upgraded session ([`Governor::hold`]); released on drop.
#[derive(Debug)]
pub struct Hold {
    governor: Governor,
    id: ConnId,
}

impl Drop for Hold {
    fn drop(&mut self) {
        // No panic in a drop (it may run while unwinding).
        if let Ok(mut t) = self.governor.table.lock() {
            t.release(self.id, Instant::now());
        }
    }
}

/// TCP keepalive as Go's net/http server sets it (kube-apiserver's): a peer that vanished
/// without a FIN or RST is found within about two minutes, so its connection (an upgraded
/// session that holds its slot included) ends.
pub fn keepalive(tcp: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(15))
        .with_retries(9);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "TCP keepalive not set");
    }
}

/// The connection a request came on, in the request's extensions: what an upgrade handler
/// holds for the life of its session ([`ConnHandle::hold`]).
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// The governor.
    pub governor: Governor,
    /// The connection.
    pub id: ConnId,
}

impl ConnHandle {
    /// See [`Governor::hold`].
    pub fn hold(&self) -> Option<Hold> {
        self.governor.hold(self.id)
    }
}

/// Rate-limits a repeated log line: at most one per `every`, with the count of those dropped.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// One line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were suppressed since the last one).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Exponential back-off for a failing accept: 5 ms doubling to 1 s, reset by a success.
#[derive(Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The delay before the next try after a failure.
    pub fn failed(&mut self) -> Duration {
        let d = self.next.unwrap_or(Duration::from_millis(5));
        self.next = Some((d * 2).min(Duration::from_secs(1)));
        d
    }

    /// A success resets the delay.
    pub fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Go's answer to plain HTTP on a TLS port (`net/http`'s server), sent before closing.
pub const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Whether the first byte of a connection starts a plain-text HTTP request rather than a TLS
/// record (a handshake record starts with 0x16).
pub fn looks_like_plain_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, untrusted: usize) -> Limits {
        Limits {
            max_connections: max,
            max_untrusted: untrusted,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
        }
    }

    fn admitted(a: Admission) -> (ConnId, Option<ConnId>) {
        match a {
            Admission::Admitted { id, evict } => (id, evict),
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn a_flood_of_untrusted_connections_evicts_the_longest_idle_one_first() {
        let t0 = Instant::now();
        let mut t = Table::new(limits(10, 3));
        let (a, _) = admitted(t.admit(t0));
        let (b, _) = admitted(t.admit(t0 + Duration::from_millis(1)));
        let (_c, _) = admitted(t.admit(t0 + Duration::from_millis(2)));
        let (d, evict) = admitted(t.admit(t0 + Duration::from_millis(3)));
        assert_eq!(evict, Some(a));
        assert_eq!(t.untrusted(), 3);
        // A connection with a request in flight is never evicted.
        t.begin(b, t0 + Duration::from_millis(4));
        let (_, evict) = admitted(t.admit(t0 + Duration::from_millis(5)));
        assert_ne!(evict, Some(b));
        assert_ne!(evict, Some(d), "the newest is evicted last");
    }

    #[test]
    fn a_connection_whose_handshake_is_under_way_outlives_a_flood_of_half_open_ones() {
        let t0 = Instant::now();
        let mut t = Table::new(limits(100, 3));
        let (health, _) = admitted(t.admit(t0));
        t.hello(health, t0);
        let mut evicted = Vec::new();
        for i in 1..=500 {
            let (_, e) = admitted(t.admit(t0 + Duration::from_micros(i)));
            evicted.extend(e);
        }
        assert_eq!(evicted.len(), 498);
        assert!(!evicted.contains(&health));
    }

    #[test]
    fn trusted_connections_are_not_counted_against_the_untrusted_cap() {
        let t0 = Instant::now();
        let mut t = Table::new(limits(4, 2));
        let (a, _) = admitted(t.admit(t0));
        t.begin(a, t0);
        t.end(a, t0);
        t.trust(a);
        let (_, e1) = admitted(t.admit(t0));
        let (_, e2) = admitted(t.admit(t0));
        assert_eq!((e1, e2), (None, None));
        assert_eq!(t.len(), 3);
        assert_eq!(t.untrusted(), 2);
        // The third untrusted one evicts an untrusted one, not the trusted `a`.
        let (_, e3) = admitted(t.admit(t0 + Duration::from_millis(1)));
        assert!(e3.is_some() && e3 != Some(a));
    }

    #[test]
    fn a_full_table_of_busy_connections_refuses_new_ones() {
        let t0 = Instant::now();
        let mut t = Table::new(limits(2, 2));
        for _ in 0..2 {
            let (id, _) = admitted(t.admit(t0));
            t.begin(id, t0);
        }
        assert_eq!(t.admit(t0), Admission::Refused);
    }

    #[test]
    fn connections_without_a_first_request_expire_after_the_handshake_timeout() {
        let t0 = Instant::now();
        let mut t = Table::new(limits(10, 10));
        let (silent, _) = admitted(t.admit(t0));
        let (talker, _) = admitted(t.admit(t0));
        t.begin(talker, t0 + Duration::from_secs(1));
        t.end(talker, t0 + Duration::from_secs(1));
        assert!(t.expire(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(11)), vec![silent]);
        // The one that made a request stays until it has been idle for 90 s.
        assert!(t.expire(t0 + Duration::from_secs(91)).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(92)), vec![talker]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_watch_in_flight_never_times_out() {
        let t0 = Instant::now();
        let mut t = Table::new(limits(10, 10));
        let (w, _) = admitted(t.admit(t0));
        t.begin(w, t0);
        assert!(t.expire(t0 + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn an_upgraded_session_holds_its_slot_after_the_connection_task_ends() {
        let t0 = Instant::now();
        let mut t = Table::new(limits(2, 2));
        let (a, _) = admitted(t.admit(t0));
        t.begin(a, t0);
        assert!(t.hold(a, t0));
        t.end(a, t0); // the 101 response went out
        t.close(a); // hyper handed the stream to the session
        assert_eq!(t.len(), 1, "still counted");
        assert!(t.expire(t0 + Duration::from_secs(3600)).is_empty(), "busy");
        // Two sessions fill a table of two: a third connection is refused, not let in.
        let (b, _) = admitted(t.admit(t0));
        t.begin(b, t0);
        assert!(t.hold(b, t0));
        t.end(b, t0);
        t.close(b);
        assert_eq!(t.admit(t0), Admission::Refused);
        // The session ends: the slot goes with it.
        t.release(a, t0 + Duration::from_secs(1));
        assert_eq!(t.len(), 1);
        let (c, evict) = admitted(t.admit(t0 + Duration::from_secs(2)));
        assert_eq!(evict, None);
        // A held slot whose connection is still open stays after the session ends.
        assert!(t.hold(c, t0));
        t.release(c, t0 + Duration::from_secs(3));
        assert_eq!(t.len(), 2);
        assert!(!t.hold(99, t0), "a gone connection cannot be held");
    }

    #[tokio::test]
    async fn accepted_and_dialed_sockets_get_go_s_keepalive() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialed = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        for s in [&dialed, &accepted] {
            keepalive(s);
            let r = socket2::SockRef::from(s);
            assert!(r.keepalive().unwrap());
            assert_eq!(r.tcp_keepalive_time().unwrap(), Duration::from_secs(15));
            assert_eq!(r.tcp_keepalive_interval().unwrap(), Duration::from_secs(15));
        }
    }

    #[test]
    fn the_connection_cap_stays_below_the_open_file_limit() {
        let l = Limits::default().within_fd_limit(1024, 256);
        assert_eq!(l.max_connections, 768);
        assert_eq!(l.max_untrusted, 256);
        let l = Limits::default().within_fd_limit(100, 256);
        assert_eq!(l.max_connections, 16);
        assert_eq!(l.max_untrusted, 16);
    }

    #[test]
    fn repeated_log_lines_are_rate_limited_with_a_count() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(l.allow(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(l.allow(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), Some(1000));
    }

    #[test]
    fn accept_back_off_doubles_to_one_second_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.failed(), Duration::from_millis(5));
        assert_eq!(b.failed(), Duration::from_millis(10));
        for _ in 0..20 {
            b.failed();
        }
        assert_eq!(b.failed(), Duration::from_secs(1));
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(5));
    }

    #[test]
    fn plain_http_is_told_apart_from_a_tls_handshake() {
        assert!(looks_like_plain_http(b'G'));
        assert!(looks_like_plain_http(b'P'));
        assert!(!looks_like_plain_http(0x16));
    }
}
