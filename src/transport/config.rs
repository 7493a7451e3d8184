//! Settings of a persistent connection and of the server side.

use std::time::Duration;

use crate::error::ConfigError;

/// Settings for [`Connection`](super::Connection) and [`serve`](super::serve).
///
/// Build with [`ConnectionConfig::builder`]; [`Default`] gives the values listed on each
/// method.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_frame_len: usize,
    pub(crate) queue: usize,
    pub(crate) max_concurrent_per_connection: usize,
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
}

/// Builds a validated [`ConnectionConfig`].
#[derive(Debug, Clone)]
pub struct ConnectionConfigBuilder {
    config: ConnectionConfig,
}

impl ConnectionConfigBuilder {
    /// How long one connection attempt may take (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// The first reconnect delay (default 50 ms); it doubles per failed attempt.
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.config.backoff_base = d;
        self
    }

    /// The cap on the reconnect delay (default 5 s).
    pub fn backoff_max(mut self, d: Duration) -> Self {
        self.config.backoff_max = d;
        self
    }

    /// The longest frame accepted or sent, in bytes (default 8 MiB).
    pub fn max_frame_len(mut self, n: usize) -> Self {
        self.config.max_frame_len = n;
        self
    }

    /// Requests that may wait for the connection task (default 1,024); when the queue is
    /// full, `poll_ready` is pending.
    pub fn queue(mut self, n: usize) -> Self {
        self.config.queue = n;
        self
    }

    /// On the server side, requests of one connection served at once (default 1,024);
    /// past that the server stops reading from that connection until one completes.
    pub fn max_concurrent_per_connection(mut self, n: usize) -> Self {
        self.config.max_concurrent_per_connection = n;
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
        if c.max_frame_len < super::frame::HEADER_LEN || c.max_frame_len > u32::MAX as usize {
            return Err(ConfigError::new(
                "max_frame_len",
                "must be between 9 bytes and 4 GiB",
            ));
        }
        if c.queue == 0 {
            return Err(ConfigError::new("queue", "must be greater than zero"));
        }
        if c.max_concurrent_per_connection == 0 {
            return Err(ConfigError::new(
                "max_concurrent_per_connection",
                "must be greater than zero",
            ));
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
    }
}
