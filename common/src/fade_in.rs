//! How a new products pod takes its share of the keys: over [`DURATION`] along
//! `progress^`[`EXPONENT`] (slow start, then fast, so its cold cache fills with the hottest keys
//! first). Both paths to a products pod use this one curve: the batch component's rings
//! (`prapi::lb::fadein`) and Skipper's `fadeIn` filter, which the operator renders on the
//! products routes. With the same curve the two send a new pod comparable shares while it warms
//! up (docs/load-balancing.md, "Fade-in").

use std::time::Duration;

/// Time a new pod takes to get its full share.
pub const DURATION: Duration = Duration::from_secs(30);

/// Exponent of the curve `share = progress^EXPONENT`.
pub const EXPONENT: f64 = 2.5;
