//! AWS errors with their error code, as `Degraded` reports them.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use std::fmt;

/// A failed AWS call: which service and operation, the AWS error code and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct AwsError {
    /// `DynamoDB` or `ApplicationAutoScaling`.
    pub service: &'static str,
    /// API operation, e.g. `DescribeTable`.
    pub operation: &'static str,
    /// AWS error code (`ResourceInUseException`, ...), or `ConnectionFailed` / `Timeout` /
    /// `InvalidResponse` when no answer came.
    pub code: String,
    /// What AWS (or the transport) said.
    pub message: String,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed: {}: {}",
            self.service, self.operation, self.code, self.message
        )
    }
}

impl AwsError {
    /// From an SDK error.
    pub fn from_sdk<E, R>(
        service: &'static str,
        operation: &'static str,
        err: &SdkError<E, R>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        let (code, message) = match err {
            SdkError::DispatchFailure(d) => (
                "ConnectionFailed".to_string(),
                error_chain(d.as_connector_error().map(|e| e as &dyn std::error::Error)),
            ),
            SdkError::TimeoutError(_) => ("Timeout".to_string(), "no answer in time".to_string()),
            SdkError::ResponseError(_) => (
                "InvalidResponse".to_string(),
                "the response could not be read".to_string(),
            ),
            SdkError::ConstructionFailure(_) => (
                "RequestInvalid".to_string(),
                "the request could not be built".to_string(),
            ),
            _ => (
                err.code().unwrap_or("Unknown").to_string(),
                err.message().unwrap_or("").to_string(),
            ),
        };
        AwsError {
            service,
            operation,
            code: sanitize_code(&code),
            message,
        }
    }

    /// The code as a condition reason (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`).
    pub fn reason(&self) -> String {
        sanitize_code(&self.code)
    }
}

fn error_chain(e: Option<&dyn std::error::Error>) -> String {
    let mut out = String::new();
    let mut cur = e;
    while let Some(e) = cur {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
        cur = e.source();
    }
    if out.is_empty() {
        "the request could not be sent".into()
    } else {
        out
    }
}

/// Keeps letters, digits and `_`; starts with a letter (condition reasons are restricted).
pub fn sanitize_code(code: &str) -> String {
    let s: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let s = s.trim_start_matches(|c: char| !c.is_ascii_alphabetic());
    if s.is_empty() {
        "AwsError".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize_code;

    #[test]
    fn codes_become_valid_reasons() {
        assert_eq!(
            sanitize_code("ResourceInUseException"),
            "ResourceInUseException"
        );
        assert_eq!(
            sanitize_code("com.amazon#Throttling"),
            "comamazonThrottling"
        );
        assert_eq!(sanitize_code("500"), "AwsError");
        assert_eq!(sanitize_code(""), "AwsError");
    }
}
