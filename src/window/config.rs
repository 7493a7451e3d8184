//! The window's configuration and its validation.

use std::time::Duration;

use super::stripe::{default_stripes, MAX_STRIPES};
use super::RollingWindow;
use crate::error::ConfigError;

/// The most buckets a time window may have.
pub const MAX_BUCKETS: u32 = 1_000;
/// The most calls a count window may hold.
pub const MAX_SIZE: u32 = 1 << 20;

/// What a window keeps: the calls of the last stretch of time, or the last calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// The calls of the last `length` of time, in `buckets` buckets that roll over one
    /// at a time.
    Time {
        /// How far back the window reaches.
        length: Duration,
        /// How many buckets the length is divided into.
        buckets: u32,
    },
    /// The last `size` recorded events.
    Count {
        /// How many events the window holds.
        size: u32,
    },
}

/// How to build a [`RollingWindow`]. `Clone` and cheap; [`build`](Self::build)
/// validates it.
///
/// ```
/// use palisade::window::{Event, WindowConfig};
/// use std::time::Duration;
///
/// let window = WindowConfig::time(Duration::from_secs(10), 10)
///     .slow_call_threshold(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// window.record(0, Event::Success, 700_000_000);
/// assert_eq!(window.counts(0).slow_calls, 1);
///
/// let err = WindowConfig::time(Duration::from_secs(10), 0).build().unwrap_err();
/// assert_eq!(err.field(), "time.buckets");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    kind: WindowKind,
    slow_call_threshold: Option<Duration>,
    stripes: Option<u32>,
}

impl WindowConfig {
    /// A time-based window reaching `length` back, divided into `buckets` buckets.
    /// The window drops its oldest bucket every `length / buckets`, so counts cover
    /// between `length - length / buckets` and `length` of time.
    ///
    /// `length` must be from 1 ns to `u64::MAX` ns (about 584 years) and divisible by
    /// `buckets` into whole nanoseconds; `buckets` must be between 1 and [`MAX_BUCKETS`].
    pub fn time(length: Duration, buckets: u32) -> Self {
        Self {
            kind: WindowKind::Time { length, buckets },
            slow_call_threshold: None,
            stripes: None,
        }
    }

    /// A count-based window holding the last `size` recorded events (every
    /// [`Event`](super::Event) kind takes a place). `size` must be between 1 and
    /// [`MAX_SIZE`].
    pub fn count(size: u32) -> Self {
        Self {
            kind: WindowKind::Count { size },
            slow_call_threshold: None,
            stripes: None,
        }
    }

    /// Counts successes, failures and timeouts whose latency is at least `threshold`
    /// as slow calls. Off by default; from 1 ns to `Duration::MAX`.
    pub fn slow_call_threshold(mut self, threshold: Duration) -> Self {
        self.slow_call_threshold = Some(threshold);
        self
    }

    /// How many stripes the hot counters are spread over (a power of two from 1 to 64).
    ///
    /// More stripes let more threads record at once without sharing a cache line (see
    /// [Concurrency](super#concurrency)); each costs memory, about 1 KiB per bucket
    /// (see [Memory](super#memory)). The default is the machine's parallelism rounded
    /// up to a power of two, at most 8. `1` suits windows that few threads record into
    /// at once, such as one window per endpoint of a large balancer: the counts stay
    /// exact, and a writer that finds the one cell taken adds into the bucket's
    /// overflow counters instead.
    pub fn stripes(mut self, stripes: u32) -> Self {
        self.stripes = Some(stripes);
        self
    }

    /// The kind of window and its size.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The slow-call threshold, if one is set.
    pub fn slow_threshold(&self) -> Option<Duration> {
        self.slow_call_threshold
    }

    /// The stripe count a window built now would use.
    pub fn stripe_count(&self) -> u32 {
        self.stripes.unwrap_or_else(default_stripes)
    }

    /// Checks the configuration and builds the window it describes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the offending field: `time.length` (zero, or longer
    /// than `u64::MAX` nanoseconds), `time.buckets` (zero, more than [`MAX_BUCKETS`],
    /// or not dividing the length into whole nanoseconds), `count.size` (zero or more
    /// than [`MAX_SIZE`]), `slow_call_threshold` (zero) or `stripes` (not a power of
    /// two from 1 to 64).
    pub fn build(&self) -> Result<RollingWindow, ConfigError> {
        self.validate()?;
        Ok(RollingWindow::from_valid(self.clone()))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            WindowKind::Time { length, buckets } => {
                if length.is_zero() {
                    return Err(ConfigError::new("time.length", "must be greater than zero"));
                }
                let Ok(nanos) = u64::try_from(length.as_nanos()) else {
                    return Err(ConfigError::new(
                        "time.length",
                        "must fit in u64 nanoseconds",
                    ));
                };
                if buckets == 0 {
                    return Err(ConfigError::new(
                        "time.buckets",
                        "must be greater than zero",
                    ));
                }
                if buckets > MAX_BUCKETS {
                    return Err(ConfigError::new(
                        "time.buckets",
                        format!("must be at most {MAX_BUCKETS}"),
                    ));
                }
                if nanos % u64::from(buckets) != 0 {
                    return Err(ConfigError::new(
                        "time.buckets",
                        format!("must divide the length ({length:?}) into whole nanoseconds"),
                    ));
                }
            }
            WindowKind::Count { size } => {
                if size == 0 {
                    return Err(ConfigError::new("count.size", "must be greater than zero"));
                }
                if size > MAX_SIZE {
                    return Err(ConfigError::new(
                        "count.size",
                        format!("must be at most {MAX_SIZE}"),
                    ));
                }
            }
        }
        if self.slow_call_threshold == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "slow_call_threshold",
                "must be greater than zero",
            ));
        }
        if let Some(s) = self.stripes {
            if !s.is_power_of_two() || s > MAX_STRIPES {
                return Err(ConfigError::new(
                    "stripes",
                    format!("must be a power of two from 1 to {MAX_STRIPES}"),
                ));
            }
        }
        Ok(())
    }

    /// The slow threshold in nanoseconds, 0 when off (a zero threshold is invalid).
    pub(crate) fn slow_nanos(&self) -> u64 {
        self.slow_call_threshold
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl Default for WindowConfig {
    /// Hystrix's default: 10 seconds in 10 buckets of one second.
    fn default() -> Self {
        Self::time(Duration::from_secs(10), 10)
    }
}
