//! The CEL rule that makes the CRD reject the country codes the data plane refuses to start with;
//! both read the one list in [`prapi_common::countries`].

pub use prapi_common::countries::{ISO_3166_ALPHA2, is_assigned};

/// CEL rule on `spec.countries`: every entry is an assigned alpha-2 code, in any case.
pub fn alpha2_rule() -> String {
    let list = ISO_3166_ALPHA2
        .iter()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(",");
    format!("self.all(c, c.lowerAscii() in [{list}])")
}
