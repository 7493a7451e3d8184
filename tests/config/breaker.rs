//! The knobs of the breaker and its rolling window.

use super::*;

fn breaker_base() -> BreakerConfigBuilder {
    BreakerConfig::builder().clock(Clock::tokio())
}

/// Five successes on a fresh circuit, fifty failures, a virtual hour, ten successes:
/// every call is answered, the first five succeed, a failure is the inner error or an
/// open circuit's rejection, and an open circuit rejects with `BreakerOpen`.
fn breaker_workload(b: BreakerConfigBuilder) -> Result<Verdict, String> {
    let config = built!(b.build());
    paused(async move {
        let layer = config.layer();
        let handle = layer.handle();
        let mut events = handle.events();
        let mut svc = layer.layer(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("boom".into())
            } else {
                Ok(())
            }
        }));
        for i in 0..5 {
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(false)
                .await;
            ensure(r.is_ok(), || {
                format!("success #{i} on a fresh circuit: {r:?}")
            })?;
        }
        for _ in 0..50 {
            let open = handle.state() == CircuitState::Open;
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(true)
                .await;
            let err = r.err().ok_or("a failing call succeeded")?;
            if open {
                ensure(err.is::<BreakerOpen>(), || {
                    format!("open circuit answered {err}")
                })?;
            }
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        for _ in 0..10 {
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(false)
                .await;
            if let Err(e) = r {
                ensure(e.is::<BreakerOpen>(), || format!("success answered {e}"))?;
            }
        }
        while events.try_next().is_some() {}
        let _ = handle.metrics();
        Ok(())
    })?;
    Ok(Verdict::Worked)
}

fn window_workload(w: WindowConfig) -> Result<Verdict, String> {
    let window = built!(w.build());
    for (i, now) in [0, 1, 1_000_000_000, u64::MAX / 2, u64::MAX - 1, u64::MAX]
        .into_iter()
        .enumerate()
    {
        window.record(now, Event::Success, 1_000);
        window.record(now, Event::Failure, u64::MAX);
        let c = window.counts(now);
        ensure(c.total() >= 1, || {
            format!("step {i}: nothing counted at {now}: {c:?}")
        })?;
        let _ = window.snapshot(now);
    }
    Ok(Verdict::Worked)
}

/// The window's knobs, through `WindowConfig::build` (`standalone`) or through the
/// breaker, which names them all `window` (the reason names the window's field).
pub(super) fn window_knobs(standalone: bool) -> Vec<Knob> {
    let mut lengths = durations();
    // The longest length a window accepts, divided into ten buckets.
    lengths.push(V::D(Duration::from_nanos(u64::MAX - u64::MAX % 10)));
    if standalone {
        return vec![
            // A length that ten buckets cannot divide is the buckets' fault as much.
            Knob {
                also: &["time.buckets"],
                ..knob("window.time.length", "time.length", lengths, |v| {
                    window_workload(WindowConfig::time(v.d(), 10))
                })
            },
            knob("window.time.buckets", "time.buckets", u32s(), |v| {
                window_workload(WindowConfig::time(Duration::from_secs(10), v.u32()))
            }),
            knob("window.count.size", "count.size", u32s(), |v| {
                window_workload(WindowConfig::count(v.u32()))
            }),
            knob("window.stripes", "stripes", u32s(), |v| {
                window_workload(WindowConfig::default().stripes(v.u32()))
            }),
            knob(
                "window.slow_call_threshold",
                "slow_call_threshold",
                durations(),
                |v| window_workload(WindowConfig::default().slow_call_threshold(v.d())),
            ),
        ];
    }
    vec![
        knob("breaker.window.time.length", "window", lengths, |v| {
            breaker_workload(breaker_base().window(WindowConfig::time(v.d(), 10)))
        }),
        knob("breaker.window.time.buckets", "window", u32s(), |v| {
            breaker_workload(
                breaker_base().window(WindowConfig::time(Duration::from_secs(10), v.u32())),
            )
        }),
        knob("breaker.window.count.size", "window", u32s(), |v| {
            breaker_workload(breaker_base().window(WindowConfig::count(v.u32())))
        }),
        knob("breaker.window.stripes", "window", u32s(), |v| {
            breaker_workload(breaker_base().window(WindowConfig::default().stripes(v.u32())))
        }),
        knob(
            "breaker.window.slow_call_threshold",
            "window",
            durations(),
            |v| {
                breaker_workload(
                    breaker_base().window(WindowConfig::default().slow_call_threshold(v.d())),
                )
            },
        ),
    ]
}

pub(super) fn breaker_knobs() -> Vec<Knob> {
    vec![
        knob(
            "breaker.minimum_requests",
            "minimum_requests",
            u32s(),
            |v| breaker_workload(breaker_base().minimum_requests(v.u32())),
        ),
        knob(
            "breaker.error_percentage",
            "error_percentage",
            floats(&[100.0, 100.000_001, f64::MIN_POSITIVE]),
            |v| breaker_workload(breaker_base().error_percentage(v.f())),
        ),
        knob(
            "breaker.slow_call_percentage",
            "slow_call_percentage",
            floats(&[100.0, 100.000_001]),
            |v| {
                breaker_workload(
                    breaker_base()
                        .slow_call_threshold(Duration::from_millis(5))
                        .slow_call_percentage(v.f()),
                )
            },
        ),
        knob(
            "breaker.slow_call_threshold",
            "slow_call_threshold",
            durations(),
            |v| breaker_workload(breaker_base().slow_call_threshold(v.d())),
        ),
        knob(
            "breaker.consecutive_failures",
            "consecutive_failures",
            u32s(),
            |v| breaker_workload(breaker_base().consecutive_failures(v.u32())),
        ),
        knob("breaker.sleep_window", "sleep_window", durations(), |v| {
            breaker_workload(breaker_base().consecutive_failures(1).sleep_window(v.d()))
        }),
        knob(
            "breaker.exponential_backoff.base",
            "exponential_backoff",
            durations(),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(v.d(), Duration::MAX),
                )
            },
        ),
        knob(
            "breaker.exponential_backoff.max",
            "exponential_backoff",
            durations(),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_nanos(1), v.d()),
                )
            },
        ),
        Knob {
            run: |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_millis(1), Duration::MAX)
                        .backoff_multiplier(v.f()),
                )
            },
            ..knob(
                "breaker.backoff_multiplier",
                "backoff_multiplier",
                floats(&[1.0, 0.999_999, f64::MAX]),
                |_| unreachable!(),
            )
        },
        knob(
            "breaker.backoff_jitter",
            "backoff_jitter",
            floats(&[1.0, 1.000_001, f64::MIN_POSITIVE]),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_millis(1), Duration::MAX)
                        .backoff_jitter(v.f()),
                )
            },
        ),
        knob(
            "breaker.half_open_probes",
            "half_open_probes",
            u32s(),
            |v| {
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .half_open_probes(v.u32()),
                )
            },
        ),
        knob("breaker.probes_to_close", "probes_to_close", u32s(), |v| {
            breaker_workload(
                breaker_base()
                    .consecutive_failures(1)
                    .probes_to_close(v.u32()),
            )
        }),
        knob(
            "breaker.probe_max_wait",
            "probe_max_wait",
            durations(),
            |v| breaker_workload(breaker_base().consecutive_failures(1).probe_max_wait(v.d())),
        ),
        knob("breaker.event_buffer", "event_buffer", usizes(), |v| {
            breaker_workload(
                breaker_base()
                    .consecutive_failures(1)
                    .event_buffer(v.usize()),
            )
        }),
        knob(
            "breaker.jitter_seed",
            "jitter_seed",
            vec![V::U(0), V::U(1), V::U(u64::MAX - 1), V::U(u64::MAX)],
            |v| {
                let V::U(seed) = v else { unreachable!() };
                breaker_workload(
                    breaker_base()
                        .consecutive_failures(1)
                        .exponential_backoff(Duration::from_millis(1), Duration::from_secs(1))
                        .backoff_jitter(1.0)
                        .jitter_seed(*seed),
                )
            },
        ),
    ]
    .into_iter()
    .chain(window_knobs(false))
    .collect()
}
