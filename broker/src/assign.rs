//! Server-side partition assignors of consumer groups (KIP-848): pure functions from the
//! members' subscriptions and the topics' partition counts to an assignment. Both are
//! deterministic (members and partitions are taken in sorted order) and balanced.
//!
//! * `range` (Kafka's RangeAssignor): per topic, the members subscribed to it split its
//!   partitions into contiguous ranges; the first `n % m` members get one more.
//! * `roundrobin` (Kafka's RoundRobinAssignor): all subscribed partitions, in
//!   (topic, partition) order, are dealt to the members subscribed to their topic in turn.

use std::collections::BTreeMap;

/// Member id → topic → partitions.
pub type Assignment = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

/// Assignor names accepted in `server_assignor` (empty = the default, `range`).
pub const ASSIGNORS: &[&str] = &["range", "roundrobin"];

/// Assigns with the named assignor; `None` for an unknown name.
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> Option<Assignment> {
    match assignor {
        "" | "range" => Some(range(members, partitions)),
        "roundrobin" => Some(round_robin(members, partitions)),
        _ => None,
    }
}

fn empty(members: &BTreeMap<String, Vec<String>>) -> Assignment {
    members
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect()
}

/// Kafka's range assignor.
pub fn range(
    members: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> Assignment {
    let mut out = empty(members);
    for (topic, &n) in partitions {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let m = subscribers.len() as i32;
        let (per, extra) = (n / m, n % m);
        let mut next = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let count = per + i32::from((i as i32) < extra);
            if count > 0 {
                out.get_mut(member)
                    .expect("member listed")
                    .insert(topic.clone(), (next..next + count).collect());
            }
            next += count;
        }
    }
    out
}

/// Kafka's round-robin assignor.
pub fn round_robin(
    members: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> Assignment {
    let mut out = empty(members);
    let ids: Vec<&String> = members.keys().collect();
    if ids.is_empty() {
        return out;
    }
    let mut turn = 0usize;
    for (topic, &n) in partitions {
        for p in 0..n {
            // The next member (in turn order) subscribed to this topic.
            for _ in 0..ids.len() {
                let m = ids[turn % ids.len()];
                turn += 1;
                if members[m].contains(topic) {
                    out.get_mut(m)
                        .expect("member listed")
                        .entry(topic.clone())
                        .or_default()
                        .push(p);
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(spec: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        spec.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values()
            .map(|ts| ts.values().map(Vec::len).sum())
            .collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_and_extras_first() {
        let m = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let p = BTreeMap::from([("t".to_string(), 7)]);
        let a = range(&m, &p);
        assert_eq!(a["a"]["t"], vec![0, 1, 2]);
        assert_eq!(a["b"]["t"], vec![3, 4]);
        assert_eq!(a["c"]["t"], vec![5, 6]);
    }

    #[test]
    fn round_robin_deals_in_turn_and_skips_unsubscribed() {
        let m = members(&[("a", &["t", "u"]), ("b", &["t"])]);
        let p = BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 2)]);
        let a = round_robin(&m, &p);
        assert_eq!(a["a"]["t"], vec![0, 2]);
        assert_eq!(a["b"]["t"], vec![1]);
        assert_eq!(a["a"]["u"], vec![0, 1]);
    }

    #[test]
    fn unknown_assignor_is_none() {
        assert!(assign("sticky-ish", &BTreeMap::new(), &BTreeMap::new()).is_none());
    }

    proptest! {
        /// With one shared subscription both assignors cover every partition exactly once,
        /// differ by at most one partition per member, and are deterministic.
        #[test]
        fn balanced_complete_and_deterministic(nm in 1usize..8, parts in proptest::collection::vec(0i32..20, 1..4)) {
            let topics: Vec<String> = (0..parts.len()).map(|i| format!("t{i}")).collect();
            let m: BTreeMap<String, Vec<String>> =
                (0..nm).map(|i| (format!("m{i}"), topics.clone())).collect();
            let p: BTreeMap<String, i32> = topics.iter().cloned().zip(parts.iter().copied()).collect();
            for name in ASSIGNORS {
                let a = assign(name, &m, &p).unwrap();
                prop_assert_eq!(&a, &assign(name, &m, &p).unwrap());
                for (t, &n) in &p {
                    let mut got: Vec<i32> = a.values().filter_map(|ts| ts.get(t)).flatten().copied().collect();
                    got.sort_unstable();
                    prop_assert_eq!(got, (0..n).collect::<Vec<_>>());
                }
                if *name == "roundrobin" || p.len() == 1 {
                    let c = counts(&a);
                    prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{} {:?}", name, c);
                }
            }
        }
    }
}
