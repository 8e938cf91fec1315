//! Fetch-session bookkeeping, pure (KIP-227): what the leader's session holds per
//! partition and which partitions an answer must carry; what the follower last told the
//! leader and which partitions its next request must name. No I/O; the async halves are
//! [`super::leader`] and [`super::follower`].
//!
//! ```text
//!   follower                                      leader
//!   full (epoch 0): every partition  ───────────► opens session S, answers all
//!   incremental (S, 1): changed positions,        ◄─── only partitions with news
//!       joiners, forgotten                ───────► (records, HW/log start change,
//!   incremental (S, 2) ...                              divergence, error)
//!   any failure: forget S, start again with a full request
//! ```

use std::collections::{HashMap, HashSet};

use sluice_metadata::TopicIdPartition;

/// What a session request is, from its `(session_id, session_epoch)` (Kafka's
/// `FetchMetadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRequest {
    /// Epoch 0: a full request opening a new session (closing `close` first, if non-zero).
    Open {
        /// A session to close first (0 = none).
        close: i32,
    },
    /// Epoch -1: a full request with no session (closing `close`, if non-zero).
    Sessionless {
        /// A session to close (0 = none).
        close: i32,
    },
    /// Epoch n > 0 of session `id`.
    Incremental {
        /// The session.
        id: i32,
        /// The request's epoch.
        epoch: i32,
    },
}

/// Kafka's `FetchMetadata.FINAL_EPOCH`.
pub const FINAL_EPOCH: i32 = -1;

impl SessionRequest {
    /// Classifies a request, or says why it makes no sense.
    pub fn classify(session_id: i32, session_epoch: i32) -> Result<Self, String> {
        match (session_id, session_epoch) {
            (id, _) if id < 0 => Err(format!("session_id {id} is negative")),
            (close, 0) => Ok(SessionRequest::Open { close }),
            (close, FINAL_EPOCH) => Ok(SessionRequest::Sessionless { close }),
            (0, e) => Err(format!(
                "session_epoch {e} needs a session (session_id 0 takes epoch 0 or -1)"
            )),
            (id, e) if e > 0 => Ok(SessionRequest::Incremental { id, epoch: e }),
            (_, e) => Err(format!("session_epoch {e} is invalid (0, -1 or > 0)")),
        }
    }

    /// Whether the answer carries every partition of the request.
    pub fn is_full(&self) -> bool {
        !matches!(self, SessionRequest::Incremental { .. })
    }
}

/// The next epoch after `epoch` (Kafka's `nextEpoch`: wraps to 1, never 0 or -1).
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// A follower's position in one partition, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The follower's log end offset.
    pub fetch_offset: i64,
    /// The leader epoch it follows.
    pub current_leader_epoch: i32,
    /// The epoch of its last record.
    pub last_fetched_epoch: Option<i32>,
    /// Its byte limit for this partition.
    pub max_bytes: usize,
}

/// What the follower last learned of a partition (the leader's side of "news").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// High watermark sent.
    pub high_watermark: i64,
    /// Log start offset sent.
    pub log_start_offset: i64,
}

/// A partition's answer, as far as inclusion is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Served: `record_bytes` of records (maybe 0) at these offsets.
    Served {
        /// Record bytes returned.
        record_bytes: usize,
        /// HW and log start at the time.
        now: Sent,
    },
    /// The follower must truncate first.
    Diverging,
    /// Not served (an error code goes back).
    Error,
}

/// Whether an answer goes into the response: always for a full request; otherwise only
/// with news (Kafka's `FetchSession` "partition changed" rule).
pub fn carries(full: bool, answer: Answer, sent: Option<Sent>) -> bool {
    if full {
        return true;
    }
    match answer {
        Answer::Served { record_bytes, now } => record_bytes > 0 || sent != Some(now),
        Answer::Diverging | Answer::Error => true,
    }
}

/// What an answer lets the leader remember as sent: the offsets told, or nothing (after a
/// divergence or an error the next answer is news whatever it says).
pub fn sent_after(answer: Answer) -> Option<Sent> {
    match answer {
        Answer::Served { now, .. } => Some(now),
        Answer::Diverging | Answer::Error => None,
    }
}

/// Whether the leader answers now rather than long-polling on: a full request, an answer
/// that is news without records (HW, divergence, error), `min_bytes` of records, or
/// `min_bytes` 0 (answer at once).
pub fn ready(
    full: bool,
    record_bytes: usize,
    news_without_records: bool,
    min_bytes: usize,
) -> bool {
    full || news_without_records
        || min_bytes == 0
        || (record_bytes > 0 && record_bytes >= min_bytes)
}

/// The follower's half (Kafka's `FetchSessionHandler`): the session it is in and what the
/// leader's session holds for each partition.
#[derive(Debug, Default, Clone)]
pub struct FollowerSession {
    /// The session id (0 = none).
    id: i32,
    /// The epoch of the next request (0 = full).
    epoch: i32,
    /// What the leader holds: the position last sent, or `None` when it must be sent again
    /// even if unchanged (after an error or a failed apply).
    leader_holds: HashMap<TopicIdPartition, Option<Position>>,
}

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Session id to send.
    pub session_id: i32,
    /// Session epoch to send.
    pub session_epoch: i32,
    /// Partitions to name, with their positions.
    pub partitions: Vec<(TopicIdPartition, Position)>,
    /// Partitions leaving the session.
    pub forgotten: Vec<TopicIdPartition>,
}

impl Built {
    /// Whether this is a full request.
    pub fn is_full(&self) -> bool {
        self.session_epoch == 0
    }
}

impl FollowerSession {
    /// The next request for the partitions `wanted` (what the follower fetches now).
    /// `touched` holds every partition whose entry in `wanted` may have changed (joined,
    /// left, moved, or marked by [`Self::resend`]) since the last request: an incremental
    /// request looks at those alone, so its cost follows what changed, not how many
    /// partitions the session carries.
    pub fn build(
        &self,
        wanted: &HashMap<TopicIdPartition, Position>,
        touched: &HashSet<TopicIdPartition>,
    ) -> Built {
        if self.epoch == 0 {
            let mut partitions: Vec<_> = wanted.iter().map(|(k, p)| (*k, *p)).collect();
            partitions.sort_by_key(|(k, _)| *k);
            return Built {
                session_id: self.id,
                session_epoch: 0,
                partitions,
                forgotten: Vec::new(),
            };
        }
        let mut partitions = Vec::new();
        let mut forgotten = Vec::new();
        for k in touched {
            match wanted.get(k) {
                Some(p) if self.leader_holds.get(k) != Some(&Some(*p)) => partitions.push((*k, *p)),
                Some(_) => {}
                None if self.leader_holds.contains_key(k) => forgotten.push(*k),
                None => {}
            }
        }
        partitions.sort_by_key(|(k, _)| *k);
        forgotten.sort();
        Built {
            session_id: self.id,
            session_epoch: self.epoch,
            partitions,
            forgotten,
        }
    }

    /// The leader answered `built` with session id `session_id`.
    pub fn on_response(&mut self, built: &Built, session_id: i32) {
        if built.is_full() {
            self.leader_holds.clear();
        }
        for k in &built.forgotten {
            self.leader_holds.remove(k);
        }
        for (k, p) in &built.partitions {
            self.leader_holds.insert(*k, Some(*p));
        }
        if session_id == 0 {
            // No session kept: every request is full.
            self.id = 0;
            self.epoch = 0;
            self.leader_holds.clear();
        } else if built.is_full() || session_id != self.id {
            self.id = session_id;
            self.epoch = 1;
        } else {
            self.epoch = next_epoch(self.epoch);
        }
    }

    /// The request failed (or the leader lost the session): start over with a full request
    /// in a new session, closing this one.
    pub fn reset(&mut self) {
        self.epoch = 0;
        self.leader_holds.clear();
    }

    /// Makes the next request name `key` even if its position did not change (so the leader
    /// serves it again); the caller also counts `key` as touched.
    pub fn resend(&mut self, key: TopicIdPartition) {
        if let Some(p) = self.leader_holds.get_mut(&key) {
            *p = None;
        }
    }

    /// The session id, 0 when none.
    pub fn id(&self) -> i32 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::TopicId;

    fn key(i: i32) -> TopicIdPartition {
        TopicIdPartition::new(TopicId([1; 16]), i)
    }

    fn pos(offset: i64) -> Position {
        Position {
            fetch_offset: offset,
            current_leader_epoch: 3,
            last_fetched_epoch: Some(3),
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn session_requests_are_classified_as_kafka_does() {
        use SessionRequest::*;
        let table = [
            ((0, 0), Ok(Open { close: 0 })),
            ((9, 0), Ok(Open { close: 9 })),
            ((0, -1), Ok(Sessionless { close: 0 })),
            ((9, -1), Ok(Sessionless { close: 9 })),
            ((9, 4), Ok(Incremental { id: 9, epoch: 4 })),
        ];
        for ((id, epoch), want) in table {
            assert_eq!(SessionRequest::classify(id, epoch), want, "({id}, {epoch})");
        }
        for (id, epoch) in [(0, 3), (-2, 0), (9, -7)] {
            assert!(
                SessionRequest::classify(id, epoch).is_err(),
                "({id}, {epoch})"
            );
        }
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(1), 2);
    }

    #[test]
    fn an_incremental_answer_carries_only_news() {
        let at = |hw, start| Sent {
            high_watermark: hw,
            log_start_offset: start,
        };
        let served = |bytes, hw| Answer::Served {
            record_bytes: bytes,
            now: at(hw, 0),
        };
        let table = [
            // (full, answer, sent before, carried)
            (true, served(0, 5), Some(at(5, 0)), true),
            (false, served(0, 5), Some(at(5, 0)), false),
            (false, served(0, 6), Some(at(5, 0)), true),
            (false, served(10, 5), Some(at(5, 0)), true),
            (false, served(0, 5), None, true),
            (false, served(0, 5), Some(at(5, 1)), true),
            (false, Answer::Diverging, Some(at(5, 0)), true),
            (false, Answer::Error, Some(at(5, 0)), true),
        ];
        for (full, answer, sent, want) in table {
            assert_eq!(
                carries(full, answer, sent),
                want,
                "{full} {answer:?} {sent:?}"
            );
        }
        assert_eq!(sent_after(Answer::Error), None);
        assert_eq!(sent_after(served(3, 7)), Some(at(7, 0)));
    }

    #[test]
    fn the_leader_answers_at_once_only_with_something_to_say() {
        assert!(ready(true, 0, false, 1));
        assert!(!ready(false, 0, false, 1));
        assert!(ready(false, 0, true, 1));
        assert!(ready(false, 1, false, 1));
        assert!(!ready(false, 10, false, 100));
        assert!(ready(false, 100, false, 100));
        assert!(ready(false, 1, false, 0));
        assert!(ready(false, 0, false, 0));
    }

    #[test]
    fn the_follower_names_only_changed_joined_and_forgotten_partitions() {
        let mut s = FollowerSession::default();
        let mut wanted: HashMap<_, _> = (0..4).map(|i| (key(i), pos(10))).collect();
        let none = HashSet::new();
        let full = s.build(&wanted, &none);
        assert!(full.is_full());
        assert_eq!(full.partitions.len(), 4);
        s.on_response(&full, 77);
        assert_eq!(s.id(), 77);

        // Nothing changed: an empty incremental request.
        let idle = s.build(&wanted, &none);
        assert_eq!((idle.session_id, idle.session_epoch), (77, 1));
        assert!(idle.partitions.is_empty() && idle.forgotten.is_empty());
        s.on_response(&idle, 77);

        // One moved, one left, one joined, one must be resent unchanged, one touched but
        // unchanged.
        wanted.insert(key(0), pos(20));
        wanted.remove(&key(1));
        wanted.insert(key(9), pos(0));
        s.resend(key(2));
        let touched: HashSet<_> = [key(0), key(1), key(2), key(3), key(9)].into();
        let inc = s.build(&wanted, &touched);
        assert_eq!(inc.session_epoch, 2);
        assert_eq!(
            inc.partitions,
            vec![(key(0), pos(20)), (key(2), pos(10)), (key(9), pos(0))]
        );
        assert_eq!(inc.forgotten, vec![key(1)]);
        s.on_response(&inc, 77);
        let after = s.build(&wanted, &touched);
        assert!(after.partitions.is_empty() && after.forgotten.is_empty());
        assert_eq!(after.session_epoch, 3);

        // A failure starts over with a full request that closes the old session.
        s.reset();
        let again = s.build(&wanted, &none);
        assert!(again.is_full());
        assert_eq!(again.session_id, 77);
        assert_eq!(again.partitions.len(), 4);

        // A leader that keeps no session gets full requests every time.
        s.on_response(&again, 0);
        assert!(s.build(&wanted, &none).is_full());
        assert_eq!(s.build(&wanted, &none).session_id, 0);
    }

    proptest::proptest! {
        /// Whatever the changes, with every change counted as touched, an incremental
        /// request brings the leader's view exactly to what the follower wants.
        #[test]
        fn the_leaders_view_follows_the_followers_wants(
            steps in proptest::collection::vec(
                proptest::collection::vec((0i32..12, proptest::option::of(0i64..5)), 0..8),
                1..12,
            )
        ) {
            let mut s = FollowerSession::default();
            let mut wanted: HashMap<TopicIdPartition, Position> = HashMap::new();
            let mut leader: HashMap<TopicIdPartition, Position> = HashMap::new();
            let mut touched = HashSet::new();
            for changes in steps {
                for (i, p) in changes {
                    match p {
                        Some(o) => { wanted.insert(key(i), pos(o)); }
                        None => { wanted.remove(&key(i)); }
                    }
                    touched.insert(key(i));
                }
                let b = s.build(&wanted, &touched);
                if b.is_full() {
                    leader.clear();
                }
                for k in &b.forgotten {
                    leader.remove(k);
                }
                for (k, p) in &b.partitions {
                    leader.insert(*k, *p);
                }
                s.on_response(&b, 5);
                touched.clear();
                proptest::prop_assert_eq!(&leader, &wanted);
            }
        }
    }
}
