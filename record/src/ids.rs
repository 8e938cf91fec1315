//! Offsets and leader epochs as their own types, so they cannot be mixed up with each other
//! or with the other integers beside them (partition indexes, sizes, broker ids) where they
//! cross crate boundaries: the storage engine's `Log` API, the metadata image's partitions,
//! the broker. On the wire and on disk they are the plain `int64` / `int32` they were
//! (`serde(transparent)`); `Debug` and `Display` print the bare number.

/// Declares an integer newtype like [`Offset`]: serde-transparent, printed as its number,
/// convertible from and to the integer and comparable with it. The calling crate needs
/// `serde` (with `derive`).
#[macro_export]
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($int:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $int);

        impl $name {
            /// The number as the wire has it.
            pub const fn get(self) -> $int {
                self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                $name(v)
            }
        }

        impl From<$name> for $int {
            fn from(v: $name) -> Self {
                v.0
            }
        }

        /// Compares with a wire number (request checks and tests read better this way).
        impl PartialEq<$int> for $name {
            fn eq(&self, other: &$int) -> bool {
                self.0 == *other
            }
        }

        impl PartialOrd<$int> for $name {
            fn partial_cmp(&self, other: &$int) -> Option<std::cmp::Ordering> {
                self.0.partial_cmp(other)
            }
        }
    };
}

id_type!(
    /// A position in a partition's log: the offset of a record, or (log end, high
    /// watermark) the offset the next record will get.
    Offset(i64)
);

id_type!(
    /// A partition leader's epoch (Kafka's `leaderEpoch`, `partitionLeaderEpoch` in a batch
    /// header): bumped by the controller at every leader change. -1 is "unknown".
    LeaderEpoch(i32)
);

impl Offset {
    /// `n` records further on.
    pub const fn plus(self, n: i64) -> Offset {
        Offset(self.0 + n)
    }

    /// Records from `earlier` up to this one (negative if `earlier` is later).
    pub const fn since(self, earlier: Offset) -> i64 {
        self.0 - earlier.0
    }
}

/// `offset + n`: `n` records further on.
impl std::ops::Add<i64> for Offset {
    type Output = Offset;
    fn add(self, n: i64) -> Offset {
        Offset(self.0 + n)
    }
}

impl std::ops::AddAssign<i64> for Offset {
    fn add_assign(&mut self, n: i64) {
        self.0 += n;
    }
}

/// `offset - n`: `n` records earlier.
impl std::ops::Sub<i64> for Offset {
    type Output = Offset;
    fn sub(self, n: i64) -> Offset {
        Offset(self.0 - n)
    }
}

/// `later - earlier`: the records between two offsets.
impl std::ops::Sub<Offset> for Offset {
    type Output = i64;
    fn sub(self, earlier: Offset) -> i64 {
        self.0 - earlier.0
    }
}

impl LeaderEpoch {
    /// "No epoch known" (Kafka's -1, `RecordBatch.NO_PARTITION_LEADER_EPOCH`).
    pub const UNKNOWN: LeaderEpoch = LeaderEpoch(-1);

    /// The epoch after this one.
    pub const fn next(self) -> LeaderEpoch {
        LeaderEpoch(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn they_print_and_serialize_as_their_numbers() {
        assert_eq!(format!("{:?} {}", Offset(42), LeaderEpoch(7)), "42 7");
        assert_eq!(format!("{:?}", vec![Offset(1), Offset(2)]), "[1, 2]");
        assert!(Offset(3) > 2 && Offset(3) == 3 && Offset(3).plus(2) == Offset(5));
        assert_eq!(Offset(10).since(Offset(4)), 6);
        assert_eq!(Offset(10) - Offset(4), 6);
        assert_eq!(Offset(10) - 4, Offset(6));
        assert_eq!(LeaderEpoch::UNKNOWN.next(), LeaderEpoch(0));
    }
}
