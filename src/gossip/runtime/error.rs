//! Why a member could not start or join.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::error::ConfigError;

/// [`Membership::start`](super::Membership::start) failed; nothing keeps running.
#[derive(Debug)]
pub enum StartError {
    /// The configuration (or the identity it describes) is invalid.
    Config(ConfigError),
    /// The gossip address could not be bound (taken, not local, not permitted), for UDP
    /// or for TCP.
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// No seed answered in any join attempt (never with
    /// [`retry_join`](super::MembershipConfig::retry_join): the member then starts alone).
    Join(JoinError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid membership configuration: {e}"),
            StartError::Bind { addr, source } => {
                write!(f, "cannot bind gossip address {addr}: {source}")
            }
            StartError::Join(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Config(e) => Some(e),
            StartError::Bind { source, .. } => Some(source),
            StartError::Join(e) => Some(e),
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

/// No seed answered a join (a full-state exchange over TCP) in any attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError {
    /// The seeds that were tried (this member's own address excluded).
    pub seeds: Vec<SocketAddr>,
    /// How many rounds were made.
    pub attempts: u32,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no seed answered after {} join attempt(s) to {:?}",
            self.attempts, self.seeds
        )
    }
}

impl std::error::Error for JoinError {}

/// The member was shut down (or dropped); the operation cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the membership runtime has stopped")
    }
}

impl std::error::Error for Stopped {}

/// The driver of a member ended by itself rather than on request: the member stopped
/// (see [the handle](super#when-the-driver-ends)). Returned by
/// [`shutdown`](super::Membership::shutdown) and [`driver_error`](super::Membership::driver_error).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// The driver task panicked; the panic's message.
    Panicked(String),
    /// The task accepting stream (TCP) connections ended, with its panic's message if
    /// it panicked: the member could no longer answer joins, push-pulls, leaves or TCP
    /// pings, so the driver stopped it rather than run half deaf.
    ListenerEnded(Option<String>),
}

impl DriverError {
    /// The message of a panic payload (`&str` or `String`; anything else is named).
    pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_owned()
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Panicked(m) => write!(f, "the gossip driver panicked: {m}"),
            DriverError::ListenerEnded(Some(m)) => {
                write!(f, "the gossip stream listener panicked: {m}")
            }
            DriverError::ListenerEnded(None) => f.write_str("the gossip stream listener ended"),
        }
    }
}

impl std::error::Error for DriverError {}
