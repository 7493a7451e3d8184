//! Settings of [`serve`](super::serve) and [`Server`](super::Server).

use std::time::Duration;

use crate::error::ConfigError;
use crate::transport::config::{check_max_frame_len, ConnectionConfig};

/// Settings for [`Server`](super::Server) and [`serve`](super::serve): what one server
/// lets its peers hold (connections, requests, buffered bytes) and for how long.
///
/// Build with [`ServeConfig::builder`]; [`Default`] gives the values listed on each
/// method. The names follow the gossip runtime's stream port where the two mean the same
/// (a cap closes new connections at accept and counts them, as
/// [`max_inbound_streams`](crate::gossip::runtime::MembershipConfig::max_inbound_streams)
/// does).
///
/// # Memory
/// Request bytes held by the server are bounded by:
/// `max_partial_frame_bytes + max_connections × 8 KiB` for frames being read (each
/// connection has a 4 KiB read buffer and may hold the first 4 KiB of a frame without
/// charging the shared budget), plus the requests handed to the service, at most
/// `max_concurrent_per_connection` per connection (each at most `max_frame_len`), plus
/// responses waiting to be written (counted in the same per-connection limit).
///
/// # Migration
/// [`serve`](super::serve) takes `impl Into<ServeConfig>`, and a [`ConnectionConfig`]
/// converts (its `max_frame_len` and `max_concurrent_per_connection` carry over, the rest
/// takes the defaults), so code that passed a `ConnectionConfig` keeps compiling.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub(crate) max_frame_len: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_concurrent_per_connection: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) frame_timeout: Duration,
    pub(crate) max_partial_frame_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_frame_len: 8 * 1024 * 1024,
            max_connections: 1024,
            max_concurrent_per_connection: 1024,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(30),
            max_partial_frame_bytes: 64 * 1024 * 1024,
        }
    }
}

impl From<ConnectionConfig> for ServeConfig {
    fn from(c: ConnectionConfig) -> Self {
        Self {
            max_frame_len: c.max_frame_len,
            max_concurrent_per_connection: c.max_concurrent_per_connection,
            ..Self::default()
        }
    }
}

impl ServeConfig {
    /// Starts from the defaults.
    pub fn builder() -> ServeConfigBuilder {
        ServeConfigBuilder {
            config: Self::default(),
        }
    }

    /// The longest frame accepted or sent, in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

/// Builds a validated [`ServeConfig`].
#[derive(Debug, Clone)]
pub struct ServeConfigBuilder {
    config: ServeConfig,
}

impl ServeConfigBuilder {
    /// The longest frame accepted or sent, in bytes (default 8 MiB; 9 to `u32::MAX`). A
    /// longer announced length closes the connection before its body is read (counted as
    /// [`oversized_frames`](super::ServeStats::oversized_frames)); a longer response is
    /// answered with an error frame instead.
    pub fn max_frame_len(mut self, n: usize) -> Self {
        self.config.max_frame_len = n;
        self
    }

    /// The most connections served at once (default 1,024; at least 1). A connection
    /// beyond it is closed at accept and counted as
    /// [`connections_refused`](super::ServeStats::connections_refused).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Requests of one connection in flight at once, counting those answered but not
    /// yet written (default 1,024; at least 1); past it the server stops reading from
    /// that connection until one completes (backpressure to the peer).
    pub fn max_concurrent_per_connection(mut self, n: usize) -> Self {
        self.config.max_concurrent_per_connection = n;
        self
    }

    /// How long a connection may stay idle (no request in flight, nothing to write, no
    /// frame begun) before the server closes it (default 5 min; not zero;
    /// `Duration::MAX` means never). Counted as
    /// [`idle_timeouts`](super::ServeStats::idle_timeouts). The clock starts at accept.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// How long reading one frame may take once its first byte arrived, and how long
    /// writing responses may stall (default 30 s; not zero; `Duration::MAX` means never).
    /// Bounds a slow or stalled peer (slowloris); counted as
    /// [`frame_timeouts`](super::ServeStats::frame_timeouts).
    pub fn frame_timeout(mut self, d: Duration) -> Self {
        self.config.frame_timeout = d;
        self
    }

    /// The bytes that partially read frames of all connections may hold together
    /// (default 64 MiB; any value, 0 included). A frame's buffer grows as its bytes
    /// arrive; its first 4 KiB are free, the rest is charged here until the frame is
    /// complete. A frame that would overdraw the budget closes its connection, counted as
    /// [`over_memory_budget`](super::ServeStats::over_memory_budget). With 0 only frames
    /// of at most 4 KiB are served.
    pub fn max_partial_frame_bytes(mut self, n: usize) -> Self {
        self.config.max_partial_frame_bytes = n;
        self
    }

    /// Validates the settings; the error names the first bad field.
    pub fn build(self) -> Result<ServeConfig, ConfigError> {
        let c = self.config;
        check_max_frame_len(c.max_frame_len)?;
        if c.max_connections == 0 {
            return Err(ConfigError::new(
                "max_connections",
                "must be greater than zero",
            ));
        }
        if c.max_concurrent_per_connection == 0 {
            return Err(ConfigError::new(
                "max_concurrent_per_connection",
                "must be greater than zero",
            ));
        }
        if c.idle_timeout.is_zero() {
            return Err(ConfigError::new("idle_timeout", "must not be zero"));
        }
        if c.frame_timeout.is_zero() {
            return Err(ConfigError::new("frame_timeout", "must not be zero"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_build() {
        let built = ServeConfig::builder().build().unwrap();
        assert_eq!(built.max_frame_len, ServeConfig::default().max_frame_len);
    }

    #[test]
    fn a_connection_config_carries_its_server_settings_over() {
        #[allow(deprecated)]
        let c = ConnectionConfig::builder()
            .max_frame_len(64)
            .max_concurrent_per_connection(3)
            .build()
            .unwrap();
        let s = ServeConfig::from(c);
        assert_eq!(s.max_frame_len, 64);
        assert_eq!(s.max_concurrent_per_connection, 3);
        assert_eq!(s.max_connections, ServeConfig::default().max_connections);
    }
}
