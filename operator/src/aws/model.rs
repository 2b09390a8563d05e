//! The domain of the store step: the table a group wants and what AWS reports about it.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// Tag naming the group that owns a table: `<namespace>/<name>`. A table without it (or with
/// another value) is never touched.
pub const TAG_GROUP: &str = "prapi.dev/group";
/// Tag naming the manager: `prapi-operator`.
pub const TAG_MANAGED_BY: &str = "prapi.dev/managed-by";
/// Value of [`TAG_MANAGED_BY`].
pub const MANAGED_BY: &str = "prapi-operator";
/// Tag set to `true` once the updater caught up on the table for the first time; after it the
/// bootstrap write floor never comes back (it is for filling a new table).
pub const TAG_BOOTSTRAPPED: &str = "prapi.dev/bootstrapped";
use prapi_common::table::{KEY_TYPE, KEYS};
pub use prapi_common::table::{PARTITION_KEY, SORT_KEY};
/// DynamoDB's default per-table throughput quota; capacities are kept at or below it.
pub const MAX_TABLE_CAPACITY: i64 = 40_000;

/// Capacity mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Billing {
    /// Provisioned capacity with autoscaling.
    Provisioned,
    /// On-demand.
    PayPerRequest,
}

/// A provisioned capacity range and the utilization autoscaling aims for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityRange {
    /// Fewest units.
    pub min: i64,
    /// Most units.
    pub max: i64,
    /// Target utilization, percent.
    pub target_utilization: f64,
}

/// What deleting the group does to its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep it.
    Retain,
    /// Delete it.
    Delete,
}

/// The table a group wants.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Owner identity, `<namespace>/<name>`: the value of [`TAG_GROUP`].
    pub group: String,
    /// Capacity mode.
    pub billing: Billing,
    /// Read capacity range.
    pub read: CapacityRange,
    /// Write capacity range.
    pub write: CapacityRange,
    /// Write capacity floor while the table is filled.
    pub bootstrap_write_capacity: i64,
    /// Consumer lag (messages) above which the table counts as still being filled.
    pub bootstrap_lag_threshold: i64,
    /// What deletion does.
    pub deletion_policy: DeletionPolicy,
}

impl TableSpec {
    /// The tags the table is created with.
    pub fn tags(&self) -> Vec<(String, String)> {
        vec![
            (TAG_GROUP.into(), self.group.clone()),
            (TAG_MANAGED_BY.into(), MANAGED_BY.into()),
        ]
    }

    /// The resource id Application Auto Scaling knows the table by.
    pub fn resource_id(&self) -> String {
        format!("table/{}", self.name)
    }
}

/// A capacity dimension of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// Read capacity units.
    Read,
    /// Write capacity units.
    Write,
}

impl Dimension {
    /// Both, in order.
    pub const ALL: [Dimension; 2] = [Dimension::Read, Dimension::Write];

    /// Application Auto Scaling's scalable dimension.
    pub fn scalable_dimension(self) -> &'static str {
        match self {
            Dimension::Read => "dynamodb:table:ReadCapacityUnits",
            Dimension::Write => "dynamodb:table:WriteCapacityUnits",
        }
    }

    /// The predefined target-tracking metric.
    pub fn metric(self) -> &'static str {
        match self {
            Dimension::Read => "DynamoDBReadCapacityUtilization",
            Dimension::Write => "DynamoDBWriteCapacityUtilization",
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Read => "read",
            Dimension::Write => "write",
        }
    }

    /// The target-tracking policy name the operator uses for this dimension of `table`.
    pub fn policy_name(self, table: &str) -> String {
        format!("prapi-{table}-{}", self.as_str())
    }
}

/// The table as DescribeTable and ListTagsOfResource report it.
#[derive(Clone, Debug, PartialEq)]
pub struct TableState {
    /// ARN (tags are addressed by it).
    pub arn: String,
    /// `CREATING`, `ACTIVE`, `UPDATING`, `DELETING`, ...
    pub status: String,
    /// Hash and range key names with their types, e.g. `[("pk","HASH","S"),("sk","RANGE","S")]`.
    pub key_schema: Vec<(String, String, String)>,
    /// Capacity mode.
    pub billing: Billing,
    /// When the table last switched to on-demand (or was created on-demand).
    pub last_switch_to_pay_per_request: Option<SystemTime>,
    /// Provisioned read units (0 on-demand).
    pub read_capacity: i64,
    /// Provisioned write units (0 on-demand).
    pub write_capacity: i64,
    /// Decreases of provisioned throughput in the current UTC day.
    pub decreases_today: i64,
    /// When provisioned throughput was last decreased.
    pub last_decrease: Option<SystemTime>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl TableState {
    /// Whether the table was made in the store's layout (`pk`/`sk`, strings).
    pub fn layout_problem(&self) -> Option<String> {
        let want: Vec<(&str, &str, &str)> = KEYS
            .iter()
            .map(|(name, role)| (*name, role.as_str(), KEY_TYPE))
            .collect();
        let mut have: Vec<(&str, &str, &str)> = self
            .key_schema
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        have.sort_by_key(|k| k.1);
        if have == want {
            None
        } else {
            Some(format!(
                "key schema is {have:?}; the store needs {PARTITION_KEY} (HASH, S) and {SORT_KEY} (RANGE, S)"
            ))
        }
    }
}

/// A registered scalable target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetState {
    /// Minimum capacity.
    pub min: i64,
    /// Maximum capacity.
    pub max: i64,
}

/// A scaling policy on a dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyState {
    /// Policy name.
    pub name: String,
    /// Target utilization of a target-tracking policy (None for other kinds).
    pub target_value: Option<f64>,
    /// The predefined metric it tracks.
    pub metric: Option<String>,
}

/// Application Auto Scaling's view of the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalingState {
    /// Registered targets.
    pub targets: BTreeMap<Dimension, TargetState>,
    /// Policies per dimension.
    pub policies: BTreeMap<Dimension, Vec<PolicyState>>,
}

/// The updater group's consumer lag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LagReading {
    /// Messages behind (sum over partitions of high watermark − committed offset).
    Known(i64),
    /// Could not be read.
    Unknown(String),
}

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsState {
    /// The table, if it exists.
    pub table: Option<TableState>,
    /// Autoscaling of the table.
    pub scaling: ScalingState,
    /// Consumer lag of the updater group.
    pub lag: LagReading,
}
