//! The knobs of the bulkhead, the timeout and the Hystrix preset.

use super::breaker::window_knobs;
use super::*;

/// An inner service that takes 10 ms (virtual).
async fn ten_ms(x: u32) -> Result<u32, BoxError> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(x)
}

/// Four calls at once through a bulkhead of `limit`: each is answered, at most `limit`
/// and at least one succeed at once, the others are `BulkheadFull`; with `queued`, a
/// call waits at most about `max_wait` (and all succeed when it is long).
fn bulkhead_workload(limit: usize, max_wait: Option<Duration>) -> Result<Verdict, String> {
    let results: Vec<Result<u32, BoxError>> = match max_wait {
        None => {
            let config = built!(BulkheadConfig::builder()
                .max_concurrent_calls(limit)
                .build());
            let layer = config.layer();
            let mut out = Vec::new();
            paused(async {
                let svc = layer.layer(service_fn(ten_ms));
                let calls = (0..4).map(|i| svc.clone().oneshot(i));
                out = futures::future::join_all(calls).await;
                Ok(())
            })?;
            out
        }
        Some(wait) => {
            let config = built!(BulkheadConfig::builder()
                .max_concurrent_calls(limit)
                .max_wait(wait)
                .build());
            let layer = config.layer();
            let mut out = Vec::new();
            paused(async {
                let svc = layer.layer(service_fn(ten_ms));
                let calls = (0..4).map(|i| svc.clone().oneshot(i));
                out = futures::future::join_all(calls).await;
                Ok(())
            })?;
            out
        }
    };
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            ensure(e.is::<BulkheadFull>(), || format!("bulkhead answered {e}"))?;
        }
    }
    ensure(ok >= 1, || "no call got through".into())?;
    let long_wait = max_wait.is_some_and(|w| w >= Duration::from_secs(1));
    if limit >= 4 || long_wait {
        ensure(ok == 4, || format!("{ok} of 4 calls got through"))?;
    } else if max_wait.is_none() {
        ensure(ok == limit, || {
            format!("{ok} calls got through a limit of {limit}")
        })?;
    }
    Ok(Verdict::Worked)
}

/// Ten calls of 10 ms under a default timeout of `default`, or `per_request` when the
/// override gives one: each succeeds when the timeout is longer, fails with `Elapsed`
/// when shorter.
fn timeout_workload(default: Duration, per_request: Option<Duration>) -> Result<Verdict, String> {
    let config = built!(TimeoutConfig::builder()
        .timeout(default)
        .per_request(move |_: &u32| per_request)
        .build());
    let t = per_request.unwrap_or(default);
    paused(async move {
        let mut svc = config.layer().layer(service_fn(ten_ms));
        for i in 0..10 {
            let r = svc.ready().await.map_err(|e| e.to_string())?.call(i).await;
            match r {
                Ok(_) => ensure(t > Duration::from_millis(10), || {
                    format!("a 10 ms call beat a timeout of {t:?}")
                })?,
                Err(e) => ensure(e.is::<Elapsed>() && t <= Duration::from_millis(10), || {
                    format!("timeout {t:?} answered {e}")
                })?,
            }
        }
        Ok(())
    })?;
    Ok(Verdict::Worked)
}

fn hystrix_workload(b: palisade::preset::HystrixBuilder) -> Result<Verdict, String> {
    let config = built!(b.breaker(|b| b.clock(Clock::tokio())).build());
    paused(async move {
        let layer = config.layer();
        let handle = layer.breaker();
        let mut svc = layer.layer(service_fn(|fail: bool| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if fail {
                Err::<(), BoxError>("boom".into())
            } else {
                Ok(())
            }
        }));
        for fail in [false; 5].into_iter().chain([true; 40]).chain([false; 10]) {
            let open = handle.state() == CircuitState::Open;
            let r = svc
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(fail)
                .await;
            if let Err(e) = r {
                let known = e.is::<BreakerOpen>()
                    || e.is::<BulkheadFull>()
                    || e.is::<Elapsed>()
                    || e.to_string() == "boom";
                ensure(known, || format!("unexpected error {e}"))?;
                ensure(!open || e.is::<BreakerOpen>(), || {
                    format!("open answered {e}")
                })?;
            }
            if fail {
                continue;
            }
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        let _ = layer.bulkhead();
        Ok(())
    })?;
    Ok(Verdict::Worked)
}

pub(super) fn layer_knobs() -> Vec<Knob> {
    let mut knobs = vec![
        knob(
            "bulkhead.max_concurrent_calls",
            "max_concurrent_calls",
            usizes(),
            |v| bulkhead_workload(v.usize(), None),
        ),
        knob(
            "bulkhead(queued).max_concurrent_calls",
            "max_concurrent_calls",
            usizes(),
            |v| bulkhead_workload(v.usize(), Some(Duration::from_secs(1))),
        ),
        knob("bulkhead.max_wait", "max_wait", durations(), |v| {
            bulkhead_workload(1, Some(v.d()))
        }),
        knob("timeout.timeout", "timeout", durations(), |v| {
            timeout_workload(v.d(), None)
        }),
        knob("timeout.per_request", "per_request", durations(), |v| {
            timeout_workload(Duration::from_secs(1), Some(v.d()))
        }),
        knob("hystrix.timeout", "timeout", durations(), |v| {
            hystrix_workload(Hystrix::builder().timeout(v.d()))
        }),
        knob(
            "hystrix.max_concurrent_requests",
            "max_concurrent_requests",
            usizes(),
            |v| hystrix_workload(Hystrix::builder().max_concurrent_requests(v.usize())),
        ),
        knob(
            "hystrix.request_volume_threshold",
            "request_volume_threshold",
            u32s(),
            |v| hystrix_workload(Hystrix::builder().request_volume_threshold(v.u32())),
        ),
        knob(
            "hystrix.error_percent_threshold",
            "error_percent_threshold",
            floats(&[100.0, 100.000_001]),
            |v| hystrix_workload(Hystrix::builder().error_percent_threshold(v.f())),
        ),
        knob("hystrix.sleep_window", "sleep_window", durations(), |v| {
            hystrix_workload(Hystrix::builder().sleep_window(v.d()))
        }),
        knob(
            "hystrix.metrics_window.length",
            "metrics_window",
            durations(),
            |v| hystrix_workload(Hystrix::builder().metrics_window(v.d(), 1)),
        ),
        knob(
            "hystrix.metrics_window.buckets",
            "metrics_window",
            u32s(),
            |v| {
                hystrix_workload(
                    Hystrix::builder().metrics_window(Duration::from_secs(10), v.u32()),
                )
            },
        ),
        knob(
            "hystrix.breaker.half_open_probes",
            "half_open_probes",
            u32s(),
            |v| hystrix_workload(Hystrix::builder().breaker(|b| b.half_open_probes(v.u32()))),
        ),
    ];
    knobs.extend(window_knobs(true));
    knobs
}
