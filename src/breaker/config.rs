//! The circuit breaker's configuration: a builder whose defaults are Hystrix's, checked
//! once when built.
//!
//! See [`BreakerConfig`] for the settings and their defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::circuit::CircuitSettings;
use super::events::{BreakerEvent, EventCallback};
use super::layer::CircuitBreakerLayer;
use super::open_duration::OpenDuration;
use super::policy::TripPolicy;
use crate::backoff::Backoff;
use crate::classify::ErrIsFailure;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::window::{RollingWindow, WindowConfig};

/// The most probes a half-open circuit may let through at once
/// ([`half_open_probes`](BreakerConfigBuilder::half_open_probes)): each is a slot the
/// circuit allocates up front and scans when a probe is admitted.
pub const MAX_HALF_OPEN_PROBES: u32 = 1024;

/// A checked circuit breaker configuration. Build one with [`BreakerConfig::builder`];
/// turn it into a layer with [`layer`](Self::layer) (a new circuit each time) or wrap a
/// service with [`CircuitBreaker::new`](super::CircuitBreaker::new).
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`window`](BreakerConfigBuilder::window) | 10 s in 10 buckets | the rolling window the trip conditions read |
/// | [`minimum_requests`](BreakerConfigBuilder::minimum_requests) | 20 | volume below which the percentages never trip (Hystrix `RequestVolumeThreshold`) |
/// | [`error_percentage`](BreakerConfigBuilder::error_percentage) | 50 | error share that trips (Hystrix `ErrorPercentThreshold`) |
/// | [`slow_call_percentage`](BreakerConfigBuilder::slow_call_percentage) | off | slow-call share that trips |
/// | [`slow_call_threshold`](BreakerConfigBuilder::slow_call_threshold) | off | latency from which a call is slow |
/// | [`consecutive_failures`](BreakerConfigBuilder::consecutive_failures) | off | failures in a row that trip |
/// | [`record_latency`](BreakerConfigBuilder::record_latency) | with a slow-call setting | time each call (two clock reads per call) |
/// | [`sleep_window`](BreakerConfigBuilder::sleep_window) | 5 s | how long the circuit stays open (Hystrix `SleepWindowInMilliseconds`) |
/// | [`exponential_backoff`](BreakerConfigBuilder::exponential_backoff) | off | grow the open period on repeated trips |
/// | [`open_duration`](BreakerConfigBuilder::open_duration) | off | compute the open period yourself |
/// | [`half_open_probes`](BreakerConfigBuilder::half_open_probes) | 1 | probes in flight at once when half-open |
/// | [`probes_to_close`](BreakerConfigBuilder::probes_to_close) | 1 | successful probes that close the circuit |
/// | [`probe_max_wait`](BreakerConfigBuilder::probe_max_wait) | 10 s | after this a probe's permit goes to the next caller |
/// | [`event_buffer`](BreakerConfigBuilder::event_buffer) | 64 | events each stream buffers before it drops the oldest |
/// | [`clock`](BreakerConfigBuilder::clock) | [`Clock::system`] | the time source |
/// | [`classify`](BreakerConfigBuilder::classify) | [`ErrIsFailure`] | what a result counts as |
///
/// ```
/// use palisade::breaker::BreakerConfig;
/// use std::time::Duration;
///
/// let config = BreakerConfig::builder()
///     .minimum_requests(10)
///     .error_percentage(25.0)
///     .consecutive_failures(5)
///     .exponential_backoff(Duration::from_secs(1), Duration::from_secs(60))
///     .build()?;
/// # let _ = config;
///
/// let err = BreakerConfig::builder().error_percentage(120.0).build().unwrap_err();
/// assert_eq!(err.field(), "error_percentage");
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct BreakerConfig<C = ErrIsFailure> {
    pub(crate) clock: Clock,
    pub(crate) window: WindowConfig,
    pub(crate) policy: TripPolicy,
    pub(crate) slow_call_threshold: Option<Duration>,
    pub(crate) record_latency: bool,
    pub(crate) open_duration: OpenDuration,
    pub(crate) half_open_probes: u32,
    pub(crate) probes_to_close: u32,
    pub(crate) probe_max_wait: Duration,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) event_buffer: usize,
    pub(crate) on_event: Option<EventCallback>,
    pub(crate) classify: C,
}

impl BreakerConfig {
    /// A builder with Hystrix's defaults (see the [table above](BreakerConfig)).
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder::default()
    }
}

impl Default for BreakerConfig {
    /// Hystrix's defaults: 20 requests, 50 % errors, 5 s sleep window, 10 s window.
    fn default() -> Self {
        BreakerConfig::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

impl<C> BreakerConfig<C> {
    /// A layer with a new circuit: every service it wraps shares that one circuit.
    /// Call `layer()` once per endpoint to give each endpoint its own.
    pub fn layer(&self) -> CircuitBreakerLayer<C>
    where
        C: Clone,
    {
        CircuitBreakerLayer::new(self)
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classify
    }

    pub(crate) fn circuit_settings(&self) -> CircuitSettings {
        CircuitSettings {
            open_duration: self.open_duration.clone(),
            probes_to_close: self.probes_to_close,
            jitter_seed: self.jitter_seed.unwrap_or_else(fresh_seed),
        }
    }

    pub(crate) fn build_window(&self) -> RollingWindow {
        // `build` checked this very configuration already.
        self.window
            .build()
            .expect("window configuration was validated by BreakerConfigBuilder::build")
    }
}

impl<C> fmt::Debug for BreakerConfig<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("clock", &self.clock)
            .field("window", &self.window)
            .field("policy", &self.policy)
            .field("slow_call_threshold", &self.slow_call_threshold)
            .field("record_latency", &self.record_latency)
            .field("open_duration", &self.open_duration)
            .field("half_open_probes", &self.half_open_probes)
            .field("probes_to_close", &self.probes_to_close)
            .field("probe_max_wait", &self.probe_max_wait)
            .field("event_buffer", &self.event_buffer)
            .field("on_event", &self.on_event.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`BreakerConfig`]; nothing is checked until [`build`](Self::build).
#[derive(Clone)]
pub struct BreakerConfigBuilder<C = ErrIsFailure> {
    clock: Clock,
    window: WindowConfig,
    minimum_requests: u32,
    error_percentage: Option<f64>,
    slow_call_percentage: Option<f64>,
    slow_call_threshold: Option<Duration>,
    consecutive_failures: Option<u32>,
    /// `None`: decided by `build` (on exactly when a slow-call setting needs it).
    record_latency: Option<bool>,
    sleep_window: Duration,
    backoff: Option<(Duration, Duration)>,
    backoff_multiplier: f64,
    backoff_jitter: f64,
    open_duration: Option<Arc<dyn Fn(u32) -> Duration + Send + Sync>>,
    half_open_probes: u32,
    probes_to_close: u32,
    probe_max_wait: Duration,
    jitter_seed: Option<u64>,
    event_buffer: usize,
    on_event: Option<EventCallback>,
    classify: C,
}

impl Default for BreakerConfigBuilder {
    fn default() -> Self {
        BreakerConfigBuilder {
            clock: Clock::system(),
            window: WindowConfig::default(),
            minimum_requests: 20,
            error_percentage: Some(50.0),
            slow_call_percentage: None,
            slow_call_threshold: None,
            consecutive_failures: None,
            record_latency: None,
            sleep_window: Duration::from_secs(5),
            backoff: None,
            backoff_multiplier: 2.0,
            backoff_jitter: 0.0,
            open_duration: None,
            half_open_probes: 1,
            probes_to_close: 1,
            probe_max_wait: Duration::from_secs(10),
            jitter_seed: None,
            event_buffer: 64,
            on_event: None,
            classify: ErrIsFailure,
        }
    }
}

impl<C> BreakerConfigBuilder<C> {
    /// The time source (default [`Clock::system`]). Tests use [`Clock::tokio`] on a
    /// paused runtime or [`Clock::manual`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The rolling window the trip conditions read (default: 10 s in 10 buckets). A
    /// slow-call threshold set here is used unless
    /// [`slow_call_threshold`](Self::slow_call_threshold) sets another.
    pub fn window(mut self, window: WindowConfig) -> Self {
        self.window = window;
        self
    }

    /// The number of calls the window must hold before a percentage can trip the
    /// circuit (default 20, Hystrix `RequestVolumeThreshold`). Consecutive failures do
    /// not need it. Any value: 0 lets a percentage trip from the first call, `u32::MAX`
    /// keeps the percentages from ever tripping a window smaller than that.
    pub fn minimum_requests(mut self, n: u32) -> Self {
        self.minimum_requests = n;
        self
    }

    /// Trips when errors (failures, timeouts, bulkhead rejections) reach `percent` of the
    /// calls in the window, with at least [`minimum_requests`](Self::minimum_requests)
    /// calls (default 50, Hystrix `ErrorPercentThreshold`). From 0 to 100 (NaN is
    /// rejected).
    pub fn error_percentage(mut self, percent: f64) -> Self {
        self.error_percentage = Some(percent);
        self
    }

    /// Turns the error-percentage condition off (for example to trip on consecutive
    /// failures only).
    pub fn without_error_percentage(mut self) -> Self {
        self.error_percentage = None;
        self
    }

    /// Trips when slow calls reach `percent` of the calls that ran in the window, with at
    /// least [`minimum_requests`](Self::minimum_requests) calls. Off by default; needs a
    /// [`slow_call_threshold`](Self::slow_call_threshold). From 0 to 100 (NaN is
    /// rejected).
    pub fn slow_call_percentage(mut self, percent: f64) -> Self {
        self.slow_call_percentage = Some(percent);
        self
    }

    /// A call that takes at least `threshold` is slow. Off by default; from 1 ns to
    /// `Duration::MAX`.
    /// A slow probe counts as a failed one when a slow-call percentage is configured.
    pub fn slow_call_threshold(mut self, threshold: Duration) -> Self {
        self.slow_call_threshold = Some(threshold);
        self
    }

    /// Trips on the `n`-th failure in a row, whatever the volume. Off by default; from 1
    /// to `u32::MAX`.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = Some(n);
        self
    }

    /// Whether to time each call. By default calls are timed exactly when a slow-call
    /// threshold or percentage is set (here or in the [`window`](Self::window)), since
    /// only then does the breaker decide anything from latencies; the
    /// [Hystrix preset](crate::preset) times every call, as Hystrix does.
    ///
    /// Timing reads the clock when a call is admitted and again when it completes, and
    /// fills the window's latency summary (mean, maximum, percentiles, in
    /// [`BreakerMetrics::window`](super::BreakerMetrics::window)): pass `true` to get
    /// that summary without a slow-call rule. Untimed, outcomes are counted and trip
    /// the circuit as usual but every call is recorded as taking no time, so the closed
    /// call path reads the clock once (at completion, to file the outcome in its
    /// bucket) instead of twice. `false` with a slow-call setting is rejected by
    /// `build`.
    pub fn record_latency(mut self, record: bool) -> Self {
        self.record_latency = Some(record);
        self
    }

    /// Sets [`record_latency`](Self::record_latency) unless the user did.
    #[cfg(feature = "preset")] // the preset's default
    pub(crate) fn record_latency_unless_set(mut self, record: bool) -> Self {
        self.record_latency.get_or_insert(record);
        self
    }

    /// How long the circuit stays open before it admits a probe (default 5 s, Hystrix
    /// `SleepWindowInMilliseconds`). From 1 ns to `Duration::MAX` (an open period that
    /// long never ends on its own: only the handle closes the circuit). Replaced by
    /// [`exponential_backoff`](Self::exponential_backoff) or
    /// [`open_duration`](Self::open_duration) when those are set.
    pub fn sleep_window(mut self, period: Duration) -> Self {
        self.sleep_window = period;
        self
    }

    /// Grows the open period on repeated trips: `base` after the first trip, times
    /// [`backoff_multiplier`](Self::backoff_multiplier) (default 2) for each failed probe
    /// since, capped at `max`, shortened by up to
    /// [`backoff_jitter`](Self::backoff_jitter); a successful close starts again from
    /// `base`. Both from 1 ns to `Duration::MAX`, `max >= base`. Off by default.
    pub fn exponential_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = Some((base, max));
        self
    }

    /// The growth factor of [`exponential_backoff`](Self::exponential_backoff) (default
    /// 2). Finite and at least 1.
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.backoff_multiplier = multiplier;
        self
    }

    /// The largest fraction (0 to 1, default 0) by which a random draw shortens each
    /// [`exponential_backoff`](Self::exponential_backoff) period, so that many circuits
    /// tripped together do not probe together. The period stays within
    /// `[nominal * (1 - jitter), nominal]`.
    pub fn backoff_jitter(mut self, jitter: f64) -> Self {
        self.backoff_jitter = jitter;
        self
    }

    /// Seeds the jitter's random generator (default: a random seed), for reproducible
    /// open periods.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Computes the open period from the number of trips since the circuit last closed
    /// (1 for the first). Overrides [`sleep_window`](Self::sleep_window) and
    /// [`exponential_backoff`](Self::exponential_backoff). A zero duration makes the next
    /// call a probe.
    pub fn open_duration<F>(mut self, f: F) -> Self
    where
        F: Fn(u32) -> Duration + Send + Sync + 'static,
    {
        self.open_duration = Some(Arc::new(f));
        self
    }

    /// How many probes a half-open circuit lets through at once (default 1). From 1 to
    /// [`MAX_HALF_OPEN_PROBES`].
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.half_open_probes = n;
        self
    }

    /// How many probes must succeed to close the circuit (default 1). From 1 to
    /// `u32::MAX`. It may
    /// exceed [`half_open_probes`](Self::half_open_probes): a probe that succeeds gives
    /// its permit to the next caller.
    pub fn probes_to_close(mut self, n: u32) -> Self {
        self.probes_to_close = n;
        self
    }

    /// How long a probe may hold its permit (default 10 s). After that the next caller
    /// takes the permit and the late probe's result is ignored, so a hung probe cannot
    /// wedge the circuit in half-open. From 1 ns to `Duration::MAX` (a permit is never
    /// reclaimed).
    pub fn probe_max_wait(mut self, wait: Duration) -> Self {
        self.probe_max_wait = wait;
        self
    }

    /// How many events each [`EventStream`](super::EventStream) buffers before it drops
    /// its oldest (default 64). From 1 to `usize::MAX`: a stream's buffer grows with the
    /// events it holds, never beyond this.
    pub fn event_buffer(mut self, n: usize) -> Self {
        self.event_buffer = n;
        self
    }

    /// Calls `f` with every event (transitions and rejections), in order, on the thread
    /// that caused it. See [`events`](super::events) for reentrancy.
    pub fn on_event<F>(mut self, f: F) -> Self
    where
        F: Fn(&BreakerEvent) + Send + Sync + 'static,
    {
        self.on_event = Some(EventCallback::user(Arc::new(f)));
        self
    }

    /// What a result counts as (default [`ErrIsFailure`]). Runs once per call, before the
    /// error is boxed; see [`classify`](crate::classify).
    pub fn classify<C2>(self, classify: C2) -> BreakerConfigBuilder<C2> {
        BreakerConfigBuilder {
            clock: self.clock,
            window: self.window,
            minimum_requests: self.minimum_requests,
            error_percentage: self.error_percentage,
            slow_call_percentage: self.slow_call_percentage,
            slow_call_threshold: self.slow_call_threshold,
            consecutive_failures: self.consecutive_failures,
            record_latency: self.record_latency,
            sleep_window: self.sleep_window,
            backoff: self.backoff,
            backoff_multiplier: self.backoff_multiplier,
            backoff_jitter: self.backoff_jitter,
            open_duration: self.open_duration,
            half_open_probes: self.half_open_probes,
            probes_to_close: self.probes_to_close,
            probe_max_wait: self.probe_max_wait,
            jitter_seed: self.jitter_seed,
            event_buffer: self.event_buffer,
            on_event: self.on_event,
            classify,
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the builder method whose value is invalid: a zero
    /// duration or count, a percentage outside 0 to 100, `exponential_backoff` with
    /// `max < base`, more than [`MAX_HALF_OPEN_PROBES`] probes, a multiplier below 1 or a jitter outside 0 to 1,
    /// `slow_call_percentage` without a slow-call threshold, `record_latency(false)` with
    /// a slow-call threshold or percentage, or a `window` the window
    /// itself rejects (the reason then names the window's field).
    pub fn build(self) -> Result<BreakerConfig<C>, ConfigError> {
        fn positive(field: &'static str, d: Duration) -> Result<(), ConfigError> {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
            Ok(())
        }
        fn percent(field: &'static str, p: Option<f64>) -> Result<(), ConfigError> {
            match p {
                Some(p) if !(0.0..=100.0).contains(&p) => Err(ConfigError::new(
                    field,
                    format!("must be from 0 to 100, not {p}"),
                )),
                _ => Ok(()),
            }
        }
        fn nonzero(field: &'static str, n: u64) -> Result<(), ConfigError> {
            if n == 0 {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
            Ok(())
        }

        positive("sleep_window", self.sleep_window)?;
        positive("probe_max_wait", self.probe_max_wait)?;
        if let Some(t) = self.slow_call_threshold {
            positive("slow_call_threshold", t)?;
        }
        percent("error_percentage", self.error_percentage)?;
        percent("slow_call_percentage", self.slow_call_percentage)?;
        nonzero("half_open_probes", self.half_open_probes.into())?;
        if self.half_open_probes > MAX_HALF_OPEN_PROBES {
            return Err(ConfigError::new(
                "half_open_probes",
                format!("must be at most {MAX_HALF_OPEN_PROBES}"),
            ));
        }
        nonzero("probes_to_close", self.probes_to_close.into())?;
        nonzero("event_buffer", self.event_buffer as u64)?;
        if let Some(n) = self.consecutive_failures {
            nonzero("consecutive_failures", n.into())?;
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0) {
            return Err(ConfigError::new(
                "backoff_multiplier",
                format!(
                    "must be finite and at least 1, not {}",
                    self.backoff_multiplier
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err(ConfigError::new(
                "backoff_jitter",
                format!("must be from 0 to 1, not {}", self.backoff_jitter),
            ));
        }
        if let Some((base, max)) = self.backoff {
            if base.is_zero() || max.is_zero() {
                return Err(ConfigError::new(
                    "exponential_backoff",
                    "base and max must be greater than zero",
                ));
            }
            if max < base {
                return Err(ConfigError::new(
                    "exponential_backoff",
                    format!("max ({max:?}) must not be less than base ({base:?})"),
                ));
            }
        }

        let slow_call_threshold = self.slow_call_threshold.or(self.window.slow_threshold());
        let needs_latency = slow_call_threshold.is_some() || self.slow_call_percentage.is_some();
        let record_latency = self.record_latency.unwrap_or(needs_latency);
        if !record_latency && needs_latency {
            return Err(ConfigError::new(
                "record_latency",
                "a slow-call threshold or percentage needs latencies",
            ));
        }
        if self.slow_call_percentage.is_some() && slow_call_threshold.is_none() {
            return Err(ConfigError::new(
                "slow_call_percentage",
                "needs a slow_call_threshold",
            ));
        }
        let window = match slow_call_threshold {
            Some(t) => self.window.slow_call_threshold(t),
            None => self.window,
        };
        if let Err(e) = window.build() {
            return Err(ConfigError::new(
                "window",
                format!("`{}` {}", e.field(), e.reason()),
            ));
        }

        let open_duration = match (self.open_duration, self.backoff) {
            (Some(f), _) => OpenDuration::Custom(f),
            (None, Some((base, max))) => OpenDuration::Exponential(Backoff::exponential(
                base,
                max,
                self.backoff_multiplier,
                self.backoff_jitter,
            )),
            (None, None) => OpenDuration::fixed(self.sleep_window),
        };

        Ok(BreakerConfig {
            clock: self.clock,
            window,
            policy: TripPolicy {
                minimum_requests: self.minimum_requests.into(),
                error_percentage: self.error_percentage,
                slow_call_percentage: self.slow_call_percentage,
                consecutive_failures: self.consecutive_failures,
            },
            slow_call_threshold,
            record_latency,
            open_duration,
            half_open_probes: self.half_open_probes,
            probes_to_close: self.probes_to_close,
            probe_max_wait: self.probe_max_wait,
            jitter_seed: self.jitter_seed,
            event_buffer: self.event_buffer,
            on_event: self.on_event,
            classify: self.classify,
        })
    }
}

impl<C> fmt::Debug for BreakerConfigBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfigBuilder")
            .field("clock", &self.clock)
            .field("window", &self.window)
            .field("minimum_requests", &self.minimum_requests)
            .field("error_percentage", &self.error_percentage)
            .field("slow_call_percentage", &self.slow_call_percentage)
            .field("slow_call_threshold", &self.slow_call_threshold)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("record_latency", &self.record_latency)
            .field("sleep_window", &self.sleep_window)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// A seed for a circuit's jitter when none is configured, different for every circuit:
/// std's `RandomState` keys come from the OS once per thread and advance with each
/// instance. `rand::random` would do the same job but pulls in the OS-entropy crate and
/// the ChaCha generator (getrandom, zerocopy) for this one number per circuit.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuits_without_a_configured_seed_get_different_jitter_seeds() {
        let config = BreakerConfig::default();
        let seeds: std::collections::HashSet<u64> = (0..64)
            .map(|_| config.circuit_settings().jitter_seed)
            .collect();
        assert_eq!(seeds.len(), 64, "every circuit draws its own seed");
    }

    #[test]
    fn a_configured_seed_is_used_as_is() {
        let config = BreakerConfig::builder().jitter_seed(7).build().unwrap();
        assert_eq!(config.circuit_settings().jitter_seed, 7);
        assert_eq!(config.circuit_settings().jitter_seed, 7);
    }
}
