//! The transport's own errors, each downcastable from `BoxError`.

use std::fmt;

/// No connection was up when the request reached the connection task; it was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Disconnected;

impl fmt::Display for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not connected; request not sent")
    }
}

impl std::error::Error for Disconnected {}

/// The connection dropped after the request was sent and before its response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionLost;

impl fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection lost before the response arrived")
    }
}

impl std::error::Error for ConnectionLost {}

/// The remote service answered with an error; its message is carried as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    message: String,
}

impl RemoteError {
    /// A remote error with the remote side's message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The remote side's error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "remote error: {}", self.message)
    }
}

impl std::error::Error for RemoteError {}

/// The request's deadline ([`ConnectionConfigBuilder::request_timeout`]) passed before its
/// response arrived; the request was abandoned (a late response is discarded).
///
/// [`ConnectionConfigBuilder::request_timeout`]: super::ConnectionConfigBuilder::request_timeout
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout {
    after: std::time::Duration,
}

impl RequestTimeout {
    /// A deadline of `after` (counted from `call`) that passed.
    pub fn new(after: std::time::Duration) -> Self {
        Self { after }
    }

    /// The deadline that passed, counted from `call`.
    pub fn after(&self) -> std::time::Duration {
        self.after
    }
}

impl fmt::Display for RequestTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no response within the request timeout of {:?}",
            self.after
        )
    }
}

impl std::error::Error for RequestTimeout {}
