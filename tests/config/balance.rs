//! The knobs of the balancer and the discovery sources.

use super::*;

/// 60 calls over three endpoints, one of which always fails: every call is answered,
/// and at least half succeed (the two healthy endpoints, whatever the picker does).
async fn balance_calls<P, H>(builder: Builder<P, H>, weights: [u32; 3]) -> Result<Verdict, String>
where
    P: palisade::balance::Picker,
    H: palisade::balance::HashKey<u64>,
{
    let endpoint = |fail: bool| {
        service_fn(move |_: u64| async move {
            if fail {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        })
    };
    let list = FixedList::builder()
        .endpoint("bad", endpoint(true), weights[0])
        .endpoint("a", endpoint(false), weights[1])
        .endpoint("b", endpoint(false), weights[2])
        .build()
        .map_err(|e| e.to_string())?;
    let mut balance = built!(builder.build_weighted(list));
    let mut ok = 0;
    for i in 0..60u64 {
        let r = balance
            .ready()
            .await
            .map_err(|e| e.to_string())?
            .call(i)
            .await;
        ok += usize::from(r.is_ok());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure(ok >= 30, || format!("{ok} of 60 calls succeeded"))?;
    Ok(Verdict::Worked)
}

fn balance_workload<P: palisade::balance::Picker + Send + 'static>(
    builder: Builder<P>,
) -> Result<Verdict, String> {
    paused(balance_calls(builder.clock(Clock::tokio()), [1, 1, 1]))
}

fn outlier_workload(b: palisade::balance::OutlierDetectionBuilder) -> Result<Verdict, String> {
    let detection = built!(b.build());
    balance_workload(Builder::new(RoundRobin::new()).outlier_detection(detection))
}

fn slow_start_workload(b: palisade::balance::SlowStartBuilder) -> Result<Verdict, String> {
    let slow = built!(b.build());
    balance_workload(Builder::new(WeightedRoundRobin::new()).slow_start(slow))
}

/// The same weight on every endpoint, through every weighted picker and the ring.
fn weight_workload(w: u32) -> Result<Verdict, String> {
    built!(FixedList::builder().endpoint("a", (), w).build());
    let weights = [w; 3];
    let tokio = Clock::tokio;
    paused(async move {
        balance_calls(Builder::new(RoundRobin::new()).clock(tokio()), weights).await?;
        balance_calls(
            Builder::new(WeightedRoundRobin::new()).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(Random::seeded(1).weighted()).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(LeastConnections::seeded(1).weighted()).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(PowerOfTwoChoices::seeded(1)).clock(tokio()),
            weights,
        )
        .await?;
        balance_calls(
            Builder::new(ConsistentHash::new())
                .clock(tokio())
                .hash_key(|r: &u64| *r),
            weights,
        )
        .await
    })
}

fn no_endpoint_workload(d: Duration) -> Result<Verdict, String> {
    let (set, _handle) = ChannelSet::<&str, tower::util::BoxService<u64, (), BoxError>>::new();
    let builder = Builder::new(RoundRobin::new())
        .clock(Clock::tokio())
        .no_endpoint_deadline(d);
    // The workload needs the balancer; a rejection comes from `build`.
    let mut balance = built!(builder.build_weighted(set));
    paused(async move {
        let started = tokio::time::Instant::now();
        let call = async { balance.ready().await?.call(1).await };
        match tokio::time::timeout(Duration::from_secs(3600), call).await {
            Ok(Err(e)) => {
                ensure(e.is::<NoEndpoints>(), || {
                    format!("empty balancer answered {e}")
                })?;
                ensure(started.elapsed() >= d, || {
                    format!("gave up after {:?}, before {d:?}", started.elapsed())
                })
            }
            Ok(Ok(())) => Err("an empty balancer answered".into()),
            // Still waiting after an hour: only right for a deadline past it.
            Err(_) => ensure(d > Duration::from_secs(3600), || {
                format!("no answer within an hour for a deadline of {d:?}")
            }),
        }
    })?;
    Ok(Verdict::Worked)
}

pub(super) fn balance_knobs() -> Vec<Knob> {
    vec![
        knob(
            "balance.no_endpoint_deadline",
            "no_endpoint_deadline",
            durations(),
            |v| no_endpoint_workload(v.d()),
        ),
        knob("balance.latency_decay", "latency_decay", durations(), |v| {
            balance_workload(
                Builder::new(PowerOfTwoChoices::seeded(1).peak_ewma(Duration::from_millis(1)))
                    .latency_decay(v.d()),
            )
        }),
        knob(
            "balance.p2c.peak_ewma.default_rtt",
            "default_rtt",
            durations(),
            |v| balance_workload(Builder::new(PowerOfTwoChoices::seeded(1).peak_ewma(v.d()))),
        ),
        knob(
            "balance.consistent_hash.replicas",
            "replicas",
            u32s(),
            |v| {
                let builder = Builder::new(ConsistentHash::with_replicas(v.u32()))
                    .clock(Clock::tokio())
                    .hash_key(|r: &u64| *r);
                paused(balance_calls(builder, [1, 1, 1]))
            },
        ),
        knob(
            "discover.fixed_list.endpoint.weight",
            "endpoint",
            u32s(),
            |v| weight_workload(v.u32()),
        ),
        knob(
            "ejection.consecutive_failures",
            "consecutive_failures",
            u32s(),
            |v| outlier_workload(OutlierDetection::builder().consecutive_failures(v.u32())),
        ),
        knob("ejection.interval", "interval", durations(), |v| {
            outlier_workload(OutlierDetection::builder().interval(v.d()))
        }),
        knob(
            "ejection.base_ejection_time",
            "base_ejection_time",
            durations(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(100)
                        .base_ejection_time(v.d())
                        .max_ejection_time(Duration::MAX),
                )
            },
        ),
        knob(
            "ejection.max_ejection_time",
            "max_ejection_time",
            durations(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(100)
                        .base_ejection_time(Duration::from_nanos(1))
                        .max_ejection_time(v.d()),
                )
            },
        ),
        knob(
            "ejection.max_ejection_percent",
            "max_ejection_percent",
            u32s(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(v.u32()),
                )
            },
        ),
        knob(
            "ejection.success_rate_minimum_hosts",
            "success_rate_minimum_hosts",
            usizes(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .interval(Duration::from_secs(1))
                        .success_rate_request_volume(1)
                        .success_rate_minimum_hosts(v.usize()),
                )
            },
        ),
        knob(
            "ejection.success_rate_request_volume",
            "success_rate_request_volume",
            u32s(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .interval(Duration::from_secs(1))
                        .success_rate_minimum_hosts(1)
                        .success_rate_request_volume(v.u32()),
                )
            },
        ),
        knob(
            "ejection.success_rate_stdev_factor",
            "success_rate_stdev_factor",
            floats(&[f64::MIN_POSITIVE, f64::MAX]),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .interval(Duration::from_secs(1))
                        .success_rate_minimum_hosts(1)
                        .success_rate_request_volume(1)
                        .success_rate_stdev_factor(v.f()),
                )
            },
        ),
        knob(
            "ejection.panic_threshold_percent",
            "panic_threshold_percent",
            u32s(),
            |v| {
                outlier_workload(
                    OutlierDetection::builder()
                        .consecutive_failures(1)
                        .max_ejection_percent(100)
                        .panic_threshold_percent(v.u32()),
                )
            },
        ),
        knob("slow_start.window", "window", durations(), |v| {
            slow_start_workload(SlowStart::builder().window(v.d()))
        }),
        knob(
            "slow_start.aggression",
            "aggression",
            floats(&[f64::MIN_POSITIVE, f64::MAX, 1.0]),
            |v| slow_start_workload(SlowStart::builder().aggression(v.f())),
        ),
        knob(
            "slow_start.min_weight_percent",
            "min_weight_percent",
            u32s(),
            |v| slow_start_workload(SlowStart::builder().min_weight_percent(v.u32())),
        ),
    ]
}
