//! The key layout of a market group's DynamoDB table. The data plane creates the table in local
//! and test setups and reads and writes it; the operator creates it in production and refuses a
//! table whose keys differ. Both build their create request from [`KEYS`].

/// Name of the partition (hash) key attribute.
pub const PARTITION_KEY: &str = "pk";
/// Name of the sort (range) key attribute.
pub const SORT_KEY: &str = "sk";

/// A key attribute's role in the key schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// The partition key (`HASH`).
    Hash,
    /// The sort key (`RANGE`).
    Range,
}

impl KeyRole {
    /// As DynamoDB names it in a key schema.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Hash => "HASH",
            KeyRole::Range => "RANGE",
        }
    }
}

/// The table's key schema in order: both keys are strings (`S`).
pub const KEYS: [(&str, KeyRole); 2] = [(PARTITION_KEY, KeyRole::Hash), (SORT_KEY, KeyRole::Range)];

/// The attribute type of both keys, as DynamoDB names it.
pub const KEY_TYPE: &str = "S";
