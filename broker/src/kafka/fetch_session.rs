//! Kafka fetch sessions (KIP-227) as plain data: which partitions a Fetch answers, and the
//! session cache that lets a consumer send only what changed (Kafka's `FetchManager` /
//! `FetchSessionCache`). No I/O, no lock, no clock of its own.
//!
//! * `session_id 0, epoch -1`: a sessionless full fetch (librdkafka, kcat).
//! * `session_id 0, epoch 0`: a full fetch that opens a session; the answer carries its id
//!   (or 0 when the cache is full of busier sessions) and the next request uses epoch 1.
//! * `session_id N, epoch E > 0`: incremental. The request lists only partitions that are new
//!   or whose fetch offset / max bytes changed, and `forgotten_topics_data` the ones to drop;
//!   the answer holds only partitions with records, an error, or a new high watermark / log
//!   start offset since the last answer. A wrong epoch is INVALID_FETCH_SESSION_EPOCH, an
//!   unknown id FETCH_SESSION_ID_NOT_FOUND; the client then starts over with a full fetch.
//! * `session_id N, epoch -1`: closes session N; answered as a sessionless full fetch.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Kafka's FETCH_SESSION_ID_NOT_FOUND.
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
/// Kafka's INVALID_FETCH_SESSION_EPOCH.
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const SESSION_SLOTS: usize = 1000;
/// Kafka's `min.incremental.fetch.session.eviction.ms`: a session idle this long may be
/// evicted for a new one.
pub const SESSION_EVICTABLE_AFTER: Duration = Duration::from_secs(120);

/// A partition by topic name and index.
pub type Key = (String, i32);

/// What a request asks of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub leader_epoch: i32,
}

/// What an answer said of one partition, to tell later whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    parts: BTreeMap<Key, (Want, Option<Sent>)>,
    used: Instant,
}

/// How to answer one Fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Fetch `parts` and answer them all; `session_id` goes in the answer (0: no session).
    Full {
        session_id: i32,
        parts: Vec<(Key, Want)>,
    },
    /// Fetch the session's `parts`; answer those [`SessionCache::changed`] says changed.
    Incremental {
        session_id: i32,
        parts: Vec<(Key, Want)>,
    },
    /// A top-level error, nothing fetched.
    Error { code: i16, message: String },
}

/// The broker's fetch sessions.
#[derive(Debug)]
pub struct SessionCache {
    sessions: HashMap<i32, Session>,
    slots: usize,
    next_id: i32,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache::new(SESSION_SLOTS)
    }
}

impl SessionCache {
    pub fn new(slots: usize) -> Self {
        SessionCache {
            sessions: HashMap::new(),
            slots,
            next_id: 1,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// No sessions held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Decides how to answer a Fetch with `session_id` / `epoch` asking for `asked` and
    /// dropping `forgotten`.
    pub fn plan(
        &mut self,
        session_id: i32,
        epoch: i32,
        asked: Vec<(Key, Want)>,
        forgotten: Vec<Key>,
        now: Instant,
    ) -> Plan {
        match (session_id, epoch) {
            (0, -1) => Plan::Full {
                session_id: 0,
                parts: asked,
            },
            (0, 0) => {
                let session_id = self.open(&asked, now).unwrap_or(0);
                Plan::Full {
                    session_id,
                    parts: asked,
                }
            }
            (0, e) => Plan::Error {
                code: INVALID_FETCH_SESSION_EPOCH,
                message: format!("epoch {e} without a session: open one with epoch 0"),
            },
            (id, -1) => {
                self.sessions.remove(&id);
                Plan::Full {
                    session_id: 0,
                    parts: asked,
                }
            }
            (id, e) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return Plan::Error {
                        code: FETCH_SESSION_ID_NOT_FOUND,
                        message: format!(
                            "fetch session {id} is not known here (evicted, or another broker's)"
                        ),
                    };
                };
                if e != s.epoch {
                    return Plan::Error {
                        code: INVALID_FETCH_SESSION_EPOCH,
                        message: format!("fetch session {id} expects epoch {}, not {e}", s.epoch),
                    };
                }
                s.epoch = if s.epoch == i32::MAX { 1 } else { s.epoch + 1 };
                s.used = now;
                for k in forgotten {
                    s.parts.remove(&k);
                }
                for (k, w) in asked {
                    match s.parts.get_mut(&k) {
                        Some(entry) => entry.0 = w,
                        None => {
                            s.parts.insert(k, (w, None));
                        }
                    }
                }
                Plan::Incremental {
                    session_id: id,
                    parts: s.parts.iter().map(|(k, (w, _))| (k.clone(), *w)).collect(),
                }
            }
        }
    }

    /// A new session of `parts`, evicting the longest-idle evictable one when full; `None`
    /// when every slot holds a session used within [`SESSION_EVICTABLE_AFTER`].
    fn open(&mut self, parts: &[(Key, Want)], now: Instant) -> Option<i32> {
        if self.slots == 0 {
            return None;
        }
        if self.sessions.len() >= self.slots {
            let (&oldest, s) = self.sessions.iter().min_by_key(|(_, s)| s.used)?;
            if now.saturating_duration_since(s.used) < SESSION_EVICTABLE_AFTER {
                return None;
            }
            self.sessions.remove(&oldest);
        }
        let mut id = self.next_id;
        while id == 0 || self.sessions.contains_key(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        self.next_id = id.checked_add(1).unwrap_or(1);
        self.sessions.insert(
            id,
            Session {
                epoch: 1,
                parts: parts.iter().map(|(k, w)| (k.clone(), (*w, None))).collect(),
                used: now,
            },
        );
        Some(id)
    }

    /// Whether an incremental answer includes partition `key`: it has records or an error,
    /// or its offsets differ from what the session last sent (or nothing was sent yet).
    pub fn changed(
        &self,
        session_id: i32,
        key: &Key,
        now: Sent,
        records: bool,
        error: bool,
    ) -> bool {
        if records || error {
            return true;
        }
        let last = self
            .sessions
            .get(&session_id)
            .and_then(|s| s.parts.get(key))
            .and_then(|(_, sent)| *sent);
        last != Some(now)
    }

    /// Remembers what an answer of session `session_id` said of `key`.
    pub fn sent(&mut self, session_id: i32, key: &Key, sent: Sent) {
        if let Some((_, last)) = self
            .sessions
            .get_mut(&session_id)
            .and_then(|s| s.parts.get_mut(key))
        {
            *last = Some(sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(offset: i64) -> Want {
        Want {
            fetch_offset: offset,
            max_bytes: 1 << 20,
            leader_epoch: -1,
        }
    }

    fn key(t: &str, p: i32) -> Key {
        (t.to_string(), p)
    }

    fn session_of(plan: &Plan) -> i32 {
        match plan {
            Plan::Full { session_id, .. } | Plan::Incremental { session_id, .. } => *session_id,
            Plan::Error { .. } => panic!("{plan:?}"),
        }
    }

    /// The request kinds KIP-227 defines, row by row.
    #[test]
    fn each_session_id_and_epoch_pair_is_answered_as_kip_227_says() {
        let t = Instant::now();
        let mut c = SessionCache::new(10);
        let asked = vec![(key("a", 0), want(0)), (key("a", 1), want(5))];
        // Sessionless.
        assert_eq!(
            c.plan(0, -1, asked.clone(), vec![], t),
            Plan::Full {
                session_id: 0,
                parts: asked.clone()
            }
        );
        assert!(c.is_empty());
        // A new session.
        let id = session_of(&c.plan(0, 0, asked.clone(), vec![], t));
        assert!(id > 0);
        assert_eq!(c.len(), 1);
        // Incremental: a1 moved on, a0 not listed, b0 added; a1 forgotten next time.
        let p = c.plan(
            id,
            1,
            vec![(key("a", 1), want(9)), (key("b", 0), want(0))],
            vec![],
            t,
        );
        assert_eq!(
            p,
            Plan::Incremental {
                session_id: id,
                parts: vec![
                    (key("a", 0), want(0)),
                    (key("a", 1), want(9)),
                    (key("b", 0), want(0))
                ]
            }
        );
        let p = c.plan(id, 2, vec![], vec![key("a", 1)], t);
        assert_eq!(
            p,
            Plan::Incremental {
                session_id: id,
                parts: vec![(key("a", 0), want(0)), (key("b", 0), want(0))]
            }
        );
        // A repeated or skipped epoch, an unknown id, an epoch without a session.
        for (sid, e, code) in [
            (id, 2, INVALID_FETCH_SESSION_EPOCH),
            (id, 9, INVALID_FETCH_SESSION_EPOCH),
            (id + 100, 1, FETCH_SESSION_ID_NOT_FOUND),
            (0, 3, INVALID_FETCH_SESSION_EPOCH),
        ] {
            assert!(
                matches!(c.plan(sid, e, vec![], vec![], t), Plan::Error { code: c, .. } if c == code),
                "{sid}/{e}"
            );
        }
        // The right epoch still works after errors; epoch -1 closes the session.
        assert!(matches!(
            c.plan(id, 3, vec![], vec![], t),
            Plan::Incremental { .. }
        ));
        assert_eq!(
            c.plan(id, -1, asked.clone(), vec![], t),
            Plan::Full {
                session_id: 0,
                parts: asked
            }
        );
        assert!(c.is_empty());
    }

    /// An incremental answer carries a partition only when something changed since the last
    /// answer of the session.
    #[test]
    fn only_changed_partitions_are_answered_incrementally() {
        let t = Instant::now();
        let mut c = SessionCache::new(10);
        let k = key("a", 0);
        let id = session_of(&c.plan(0, 0, vec![(k.clone(), want(0))], vec![], t));
        let s = Sent {
            high_watermark: 10,
            log_start_offset: 0,
        };
        assert!(c.changed(id, &k, s, false, false), "never sent: included");
        c.sent(id, &k, s);
        assert!(!c.changed(id, &k, s, false, false), "nothing new: left out");
        assert!(c.changed(id, &k, s, true, false), "records");
        assert!(c.changed(id, &k, s, false, true), "an error");
        let moved = Sent {
            high_watermark: 11,
            ..s
        };
        assert!(c.changed(id, &k, moved, false, false), "a new HW");
    }

    /// A full cache evicts only a session idle past the eviction time; otherwise the new
    /// fetch is answered without a session (id 0), as Kafka does.
    #[test]
    fn a_full_cache_evicts_only_idle_sessions() {
        let t = Instant::now();
        let mut c = SessionCache::new(2);
        let parts = vec![(key("a", 0), want(0))];
        let s1 = session_of(&c.plan(0, 0, parts.clone(), vec![], t));
        let s2 = session_of(&c.plan(0, 0, parts.clone(), vec![], t + Duration::from_secs(1)));
        assert!(s1 > 0 && s2 > 0 && s1 != s2);
        assert_eq!(
            session_of(&c.plan(0, 0, parts.clone(), vec![], t + Duration::from_secs(2))),
            0
        );
        let later = t + SESSION_EVICTABLE_AFTER + Duration::from_millis(500);
        let s3 = session_of(&c.plan(0, 0, parts, vec![], later));
        assert!(s3 > 0);
        assert!(
            matches!(
                c.plan(s1, 1, vec![], vec![], later),
                Plan::Error {
                    code: FETCH_SESSION_ID_NOT_FOUND,
                    ..
                }
            ),
            "the idlest session was evicted"
        );
        assert!(matches!(
            c.plan(s2, 1, vec![], vec![], later),
            Plan::Incremental { .. }
        ));
    }
}
