//! A Jepsen-style history checker for queue workloads (DESIGN §10), used by the fault
//! suite in `tests/` and by `sluice chaos`.
//!
//! The workload writes uniquely numbered records (the value is the number, sent in
//! increasing order per partition by one idempotent producer) and records every send and
//! its outcome; readers record what they saw. [`check`] then counts each anomaly:
//!
//! | anomaly | meaning |
//! |---|---|
//! | lost | acknowledged, never readable at the end |
//! | duplicated | one value stored at two offsets |
//! | reordered | within a partition, a later-sent value stored before an earlier one |
//! | inconsistent | one (partition, offset) read with two values, or a value acknowledged at one offset and stored at another |
//! | read_then_lost | read during the run, gone at the end |
//! | non_monotonic_commits | a group's committed offset for a partition went backwards |
//! | divergent_below_hw | two replicas disagree at an offset below the high watermark |
//!
//! `failed_but_visible` (a send that failed but whose record is stored) is counted but is not
//! an anomaly: a failed request may still have been committed (Kafka says the same).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What happened to one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset.
    Ack {
        /// Partition it was stored in.
        partition: i32,
        /// Offset the broker returned.
        offset: i64,
    },
    /// Failed (the record may or may not be stored).
    Failed,
}

/// One send of the workload: a unique value to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// The unique value (increasing in send order per partition).
    pub value: u64,
    /// Partition it was sent to.
    pub partition: i32,
    /// Outcome.
    pub outcome: Outcome,
}

/// One record read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Value.
    pub value: u64,
}

/// What a run observed.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every send, in the order they were issued.
    pub sends: Vec<Send>,
    /// Records read while faults were injected (consumers; below the HW).
    pub reads_during: Vec<Read>,
    /// Every record read back at the end, from each partition's log start.
    pub final_reads: Vec<Read>,
    /// Committed offsets in the order they were observed: (partition, offset).
    pub commits: Vec<(i32, i64)>,
    /// Per replica (any label), what it stores and its high watermark per partition.
    pub replicas: Vec<Replica>,
}

/// One replica's log as read from its disk.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    /// Label for reports (e.g. "broker 2").
    pub name: String,
    /// Partition.
    pub partition: i32,
    /// (offset, value) in offset order.
    pub records: Vec<(i64, u64)>,
    /// The partition's high watermark: offsets below it are committed.
    pub high_watermark: i64,
}

/// Counts per anomaly, with a few examples each.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Sends issued.
    pub sent: u64,
    /// Sends acknowledged.
    pub acknowledged: u64,
    /// Records read at the end.
    pub read: u64,
    /// Acknowledged but not readable.
    pub lost: u64,
    /// Values stored more than once (extra copies).
    pub duplicated: u64,
    /// Adjacent out-of-order pairs within a partition.
    pub reordered: u64,
    /// Conflicting (partition, offset) → value, or ack offset ≠ stored offset.
    pub inconsistent: u64,
    /// Read during the run but gone at the end.
    pub read_then_lost: u64,
    /// Committed offsets that went backwards.
    pub non_monotonic_commits: u64,
    /// Replica disagreements below the high watermark.
    pub divergent_below_hw: u64,
    /// Failed sends whose record is stored anyway (not an anomaly).
    pub failed_but_visible: u64,
    /// Up to 10 human-readable examples of anomalies.
    pub examples: Vec<String>,
}

impl Report {
    /// No anomaly of any kind.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.inconsistent == 0
            && self.read_then_lost == 0
            && self.non_monotonic_commits == 0
            && self.divergent_below_hw == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < 10 {
            self.examples.push(s);
        }
    }
}

/// Checks a history.
pub fn check(h: &History) -> Report {
    let mut r = Report {
        sent: h.sends.len() as u64,
        acknowledged: h
            .sends
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Ack { .. }))
            .count() as u64,
        read: h.final_reads.len() as u64,
        ..Report::default()
    };
    // Final state: value → where it is stored (all copies), and (p, o) → value.
    let mut stored: HashMap<u64, Vec<(i32, i64)>> = HashMap::new();
    let mut at: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    for rd in &h.final_reads {
        stored
            .entry(rd.value)
            .or_default()
            .push((rd.partition, rd.offset));
        if let Some(prev) = at.insert((rd.partition, rd.offset), rd.value) {
            if prev != rd.value {
                r.inconsistent += 1;
                r.example(format!(
                    "inconsistent: {}/{} read as {prev} and {}",
                    rd.partition, rd.offset, rd.value
                ));
            }
        }
    }
    for (v, copies) in &stored {
        let distinct: BTreeSet<_> = copies.iter().collect();
        if distinct.len() > 1 {
            r.duplicated += distinct.len() as u64 - 1;
            r.example(format!("duplicated: value {v} stored at {distinct:?}"));
        }
    }
    for s in &h.sends {
        let copies = stored.get(&s.value);
        match s.outcome {
            Outcome::Ack { partition, offset } => match copies {
                None => {
                    r.lost += 1;
                    r.example(format!(
                        "lost: value {} acknowledged at {partition}/{offset}",
                        s.value
                    ));
                }
                Some(c) if !c.contains(&(partition, offset)) => {
                    r.inconsistent += 1;
                    r.example(format!(
                        "inconsistent: value {} acknowledged at {partition}/{offset}, stored at {c:?}",
                        s.value
                    ));
                }
                Some(_) => {}
            },
            Outcome::Failed => {
                if copies.is_some() {
                    r.failed_but_visible += 1;
                }
            }
        }
    }
    // Order: per partition, values must increase with the offset (one producer sends
    // increasing values to each partition).
    let mut last: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    for ((p, o), v) in &at {
        if let Some(&(po, pv)) = last.get(p) {
            if *v < pv {
                r.reordered += 1;
                r.example(format!(
                    "reordered: partition {p}: {pv} at {po} before {v} at {o}"
                ));
            }
        }
        last.insert(*p, (*o, *v));
    }
    // Reads during the run: same value at the same place at the end.
    for rd in &h.reads_during {
        match at.get(&(rd.partition, rd.offset)) {
            Some(v) if *v == rd.value => {}
            Some(v) => {
                r.inconsistent += 1;
                r.example(format!(
                    "inconsistent: {}/{} read as {} during the run, {v} at the end",
                    rd.partition, rd.offset, rd.value
                ));
            }
            None => {
                r.read_then_lost += 1;
                r.example(format!(
                    "read then lost: value {} read at {}/{} is gone",
                    rd.value, rd.partition, rd.offset
                ));
            }
        }
    }
    // Committed offsets never go backwards.
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &h.commits {
        if let Some(prev) = committed.insert(*p, *o) {
            if *o < prev {
                r.non_monotonic_commits += 1;
                r.example(format!(
                    "non-monotonic commit: partition {p} went from {prev} to {o}"
                ));
            }
        }
    }
    // Replicas agree below the high watermark.
    let mut by_partition: BTreeMap<i32, Vec<&Replica>> = BTreeMap::new();
    for rep in &h.replicas {
        by_partition.entry(rep.partition).or_default().push(rep);
    }
    for (p, reps) in by_partition {
        let hw = reps.iter().map(|r| r.high_watermark).max().unwrap_or(0);
        let mut truth: BTreeMap<i64, (u64, &str)> = BTreeMap::new();
        for rep in reps {
            for &(o, v) in rep.records.iter().filter(|(o, _)| *o < hw) {
                match truth.get(&o) {
                    Some(&(tv, who)) if tv != v => {
                        r.divergent_below_hw += 1;
                        r.example(format!(
                            "divergent: partition {p} offset {o}: {who} has {tv}, {} has {v}",
                            rep.name
                        ));
                    }
                    Some(_) => {}
                    None => {
                        truth.insert(o, (v, &rep.name));
                    }
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clean history: 3 partitions, values stored in order, all acknowledged.
    fn clean() -> History {
        let mut h = History::default();
        let mut next = [0i64; 3];
        for v in 0..30u64 {
            let p = (v % 3) as i32;
            let o = next[p as usize];
            next[p as usize] += 1;
            h.sends.push(Send {
                value: v,
                partition: p,
                outcome: Outcome::Ack {
                    partition: p,
                    offset: o,
                },
            });
            h.final_reads.push(Read {
                partition: p,
                offset: o,
                value: v,
            });
        }
        h.reads_during = h.final_reads[..10].to_vec();
        h.commits = vec![(0, 1), (0, 3), (1, 2)];
        for name in ["a", "b"] {
            h.replicas.push(Replica {
                name: name.into(),
                partition: 0,
                records: h
                    .final_reads
                    .iter()
                    .filter(|r| r.partition == 0)
                    .map(|r| (r.offset, r.value))
                    .collect(),
                high_watermark: 10,
            });
        }
        h
    }

    #[test]
    fn a_clean_history_passes() {
        let r = check(&clean());
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.sent, r.acknowledged, r.read), (30, 30, 30));
    }

    #[test]
    fn each_planted_anomaly_is_detected() {
        // Lost: drop an acknowledged record from the final read.
        let mut h = clean();
        h.final_reads.retain(|r| r.value != 29);
        assert_eq!(check(&h).lost, 1);

        // Duplicated: the same value again at a new offset.
        let mut h = clean();
        h.final_reads.push(Read {
            partition: 0,
            offset: 10,
            value: 0,
        });
        let r = check(&h);
        assert_eq!(r.duplicated, 1);
        assert_eq!(
            r.reordered, 1,
            "0 stored again after 27 is also out of order"
        );

        // Reordered: swap two values of a partition.
        let mut h = clean();
        for r in h.final_reads.iter_mut().filter(|r| r.partition == 1) {
            r.value = match r.value {
                1 => 4,
                4 => 1,
                v => v,
            };
        }
        let r = check(&h);
        assert!(r.reordered >= 1, "{r:?}");
        assert!(
            r.inconsistent >= 2,
            "acks disagree with the stored offsets: {r:?}"
        );

        // Inconsistent: one offset read with two values.
        let mut h = clean();
        h.final_reads.push(Read {
            partition: 2,
            offset: 0,
            value: 999,
        });
        assert!(check(&h).inconsistent >= 1);

        // Read then lost: a value consumed during the run is gone.
        let mut h = clean();
        h.final_reads.retain(|r| r.value != 3);
        h.sends.retain(|s| s.value != 3);
        assert_eq!(check(&h).read_then_lost, 1);

        // Non-monotonic committed offsets.
        let mut h = clean();
        h.commits.push((0, 2));
        assert_eq!(check(&h).non_monotonic_commits, 1);

        // Replica divergence below the HW (not above it).
        let mut h = clean();
        h.replicas[1].records[2].1 = 1234;
        assert_eq!(check(&h).divergent_below_hw, 1);
        let mut h = clean();
        h.replicas[1].records.push((10, 5555));
        h.replicas[0].records.push((10, 6666));
        assert_eq!(
            check(&h).divergent_below_hw,
            0,
            "above the HW replicas may differ"
        );
    }

    #[test]
    fn a_failed_send_that_is_visible_is_not_an_anomaly() {
        let mut h = clean();
        h.sends[5].outcome = Outcome::Failed;
        let r = check(&h);
        assert!(r.ok());
        assert_eq!(r.failed_but_visible, 1);
    }
}
