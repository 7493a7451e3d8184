//! Settings of a persistent connection and of the server side.

use std::time::Duration;

use crate::error::ConfigError;

/// Settings for [`Connection`](super::Connection).
///
/// Build with [`ConnectionConfig::builder`]; [`Default`] gives the values listed on each
/// method. The server has its own [`ServeConfig`](super::ServeConfig); a
/// `ConnectionConfig` passed to [`serve`](super::serve) converts into one.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_frame_len: usize,
    pub(crate) queue: usize,
    pub(crate) max_concurrent_per_connection: usize,
    pub(crate) request_timeout: Option<Duration>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            max_frame_len: 8 * 1024 * 1024,
            queue: 1024,
            max_concurrent_per_connection: 1024,
            request_timeout: None,
        }
    }
}

impl ConnectionConfig {
    /// Starts from the defaults.
    pub fn builder() -> ConnectionConfigBuilder {
        ConnectionConfigBuilder {
            config: Self::default(),
        }
    }

    /// The longest frame accepted or sent, in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The per-request deadline, if any.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }
}

/// The largest request queue: tokio's bounded channel cannot hold more permits.
pub(crate) const MAX_QUEUE: usize = tokio::sync::Semaphore::MAX_PERMITS;

pub(crate) fn check_max_frame_len(n: usize) -> Result<(), ConfigError> {
    if n < super::frame::HEADER_LEN || u32::try_from(n).is_err() {
        return Err(ConfigError::new(
            "max_frame_len",
            "must be between 9 bytes and u32::MAX",
        ));
    }
    Ok(())
}

/// Builds a validated [`ConnectionConfig`].
#[derive(Debug, Clone)]
pub struct ConnectionConfigBuilder {
    config: ConnectionConfig,
}

impl ConnectionConfigBuilder {
    /// How long one connection attempt may take (default 1 s; not zero; `Duration::MAX`
    /// means no limit beyond the operating system's).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// The first reconnect delay (default 50 ms; not zero); it doubles per failed attempt,
    /// each wait drawn from the upper half of its nominal value ([`Backoff::new`]).
    ///
    /// [`Backoff::new`]: crate::backoff::Backoff::new
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.config.backoff_base = d;
        self
    }

    /// The cap on the reconnect delay (default 5 s; at least `backoff_base`, up to
    /// `Duration::MAX`).
    pub fn backoff_max(mut self, d: Duration) -> Self {
        self.config.backoff_max = d;
        self
    }

    /// The longest frame accepted or sent, in bytes (default 8 MiB; 9 to `u32::MAX`). A
    /// longer request fails alone; a longer response closes the connection.
    pub fn max_frame_len(mut self, n: usize) -> Self {
        self.config.max_frame_len = n;
        self
    }

    /// Requests that may wait for the connection task (default 1,024; 1 to
    /// [`Semaphore::MAX_PERMITS`](tokio::sync::Semaphore::MAX_PERMITS), tokio's channel
    /// limit); when the queue is full, `poll_ready` is pending. Nothing is allocated up
    /// front.
    pub fn queue(mut self, n: usize) -> Self {
        self.config.queue = n;
        self
    }

    /// On the server side, requests of one connection served at once (default 1,024; at
    /// least 1). Only read when this config is converted into a
    /// [`ServeConfig`](super::ServeConfig).
    #[deprecated(
        since = "0.2.0",
        note = "a server setting: use `ServeConfig::builder().max_concurrent_per_connection`"
    )]
    pub fn max_concurrent_per_connection(mut self, n: usize) -> Self {
        self.config.max_concurrent_per_connection = n;
        self
    }

    /// The longest a request may wait for its response, counted from `call` (default:
    /// no deadline; not zero; `Duration::MAX` means none). Past it the response future
    /// fails with [`RequestTimeout`](super::RequestTimeout) and the request is abandoned:
    /// it is not sent if it has not been yet, and a late response is discarded. The
    /// connection stays up (a slow answer is not a broken connection).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = Some(d);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<ConnectionConfig, ConfigError> {
        let c = self.config;
        if c.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        if c.backoff_base.is_zero() {
            return Err(ConfigError::new(
                "backoff_base",
                "must be greater than zero",
            ));
        }
        if c.backoff_max < c.backoff_base {
            return Err(ConfigError::new(
                "backoff_max",
                "must be at least backoff_base",
            ));
        }
        check_max_frame_len(c.max_frame_len)?;
        if c.queue == 0 || c.queue > MAX_QUEUE {
            return Err(ConfigError::new(
                "queue",
                format!("must be between 1 and {MAX_QUEUE}"),
            ));
        }
        if c.max_concurrent_per_connection == 0 {
            return Err(ConfigError::new(
                "max_concurrent_per_connection",
                "must be greater than zero",
            ));
        }
        if c.request_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("request_timeout", "must not be zero"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_their_field() {
        let e = ConnectionConfig::builder()
            .backoff_base(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "backoff_base");
        let e = ConnectionConfig::builder()
            .backoff_max(Duration::from_millis(1))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "backoff_max");
        let e = ConnectionConfig::builder().queue(0).build().unwrap_err();
        assert_eq!(e.field(), "queue");
        let e = ConnectionConfig::builder()
            .max_frame_len(3)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "max_frame_len");
        let e = ConnectionConfig::builder()
            .request_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "request_timeout");
        let e = ConnectionConfig::builder()
            .queue(MAX_QUEUE + 1)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "queue");
    }
}
