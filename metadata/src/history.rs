//! Which metadata history a reader follows, and whether what a controller sends continues it
//! (issue 15): brokers used to skip entries by offset alone, so a quorum that lost entries
//! (a wiped voter, a reset with the same cluster id) and re-grew its log fed them a different
//! history without anyone noticing.

/// A point in a metadata history: the history's id (`HistoryStarted`, 0 = not named yet or
/// unknown), an offset (Raft log index) and the Raft term of the entry there (0 = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryPosition {
    /// The history's id.
    pub history_id: u64,
    /// Offset of the entry.
    pub offset: u64,
    /// Term of the entry at `offset`.
    pub term: u64,
}

impl std::fmt::Display for HistoryPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "history {:016x} offset {} term {}",
            self.history_id, self.offset, self.term
        )
    }
}

/// Whether the controller's history, seen at `theirs`, continues what a reader applied up to
/// `ours`: `None` when it does (or nothing contradicts it), else why not, naming both.
///
/// Two named histories with different ids never continue each other. Within one history
/// Raft's log matching property makes an equal (offset, term) mean an equal prefix, so the
/// entry at our offset must carry our term. Zeros are unknowns and prove nothing.
pub fn history_diverges(ours: HistoryPosition, theirs: HistoryPosition) -> Option<String> {
    if ours.history_id != 0 && theirs.history_id != 0 && ours.history_id != theirs.history_id {
        return Some(format!(
            "this broker applied {ours}; the controller follows {theirs}, another history"
        ));
    }
    if ours.offset == theirs.offset
        && ours.term != 0
        && theirs.term != 0
        && ours.term != theirs.term
    {
        return Some(format!(
            "this broker applied {ours}; the controller's log has {theirs}: the entry differs"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(history_id: u64, offset: u64, term: u64) -> HistoryPosition {
        HistoryPosition {
            history_id,
            offset,
            term,
        }
    }

    #[test]
    fn which_histories_continue_what_was_applied() {
        // (ours, theirs, diverges, why)
        let cases = [
            (at(7, 10, 3), at(7, 10, 3), false, "the same entry"),
            (
                at(7, 10, 3),
                at(7, 10, 4),
                true,
                "same offset, other term: another leader wrote it",
            ),
            (
                at(7, 10, 3),
                at(8, 10, 3),
                true,
                "a reset quorum: terms and offsets coincide, ids do not",
            ),
            (
                at(7, 10, 3),
                at(8, 42, 9),
                true,
                "another history, elsewhere",
            ),
            (
                at(0, 10, 3),
                at(8, 10, 3),
                false,
                "a format-1 image names no history",
            ),
            (
                at(7, 10, 3),
                at(0, 10, 3),
                false,
                "an entry before HistoryStarted",
            ),
            (
                at(7, 10, 0),
                at(7, 10, 5),
                false,
                "our term unknown (format-1 image)",
            ),
            (
                at(7, 10, 3),
                at(7, 11, 4),
                false,
                "different offsets: the term check needs the same entry",
            ),
            (at(0, 0, 0), at(7, 0, 0), false, "nothing applied yet"),
        ];
        for (ours, theirs, diverges, why) in cases {
            assert_eq!(history_diverges(ours, theirs).is_some(), diverges, "{why}");
        }
        let msg = history_diverges(at(7, 10, 3), at(7, 10, 4)).unwrap();
        assert!(
            msg.contains("term 3") && msg.contains("term 4"),
            "names both: {msg}"
        );
    }
}
