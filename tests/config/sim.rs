//! The gossip protocol's knobs in the simulator (40 members, past every scaling step).

use super::*;

/// 34 simulated members (past the scaling steps at 10 and 32 members) join one seed,
/// run, one crashes, one leaves: nothing panics and the seed knows most of the others.
pub(super) fn sim_workload(config: &Config) -> Result<(), String> {
    let mut sim = Simulation::new(1, Network::lan());
    let config = Config {
        seed: Some(config.seed.unwrap_or(3)),
        ..config.clone()
    };
    let ids = sim.add_members(34, &config).map_err(|e| e.to_string())?;
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    sim.run_for(Duration::from_secs(3));
    let live = sim.swim(ids[0]).map_or(0, |s| s.live_members());
    ensure(live >= 20, || {
        format!("the seed knows {live} of 33 members")
    })?;
    sim.crash(ids[5]);
    sim.leave(ids[6]);
    sim.run_for(Duration::from_secs(5));
    Ok(())
}

/// Five simulated members on `network` for a virtual minute: nothing panics, and on a
/// network that delivers (loss below a half, delays below a second) they form.
fn sim_network_workload(network: Network) -> Result<Verdict, String> {
    let mut sim = Simulation::new(1, network);
    let config = Config {
        seed: Some(5),
        ..common::fast_gossip()
    };
    let ids = sim.add_members(5, &config).map_err(|e| e.to_string())?;
    for &id in &ids[1..] {
        sim.join(id, &[ids[0]]);
    }
    sim.set_slow_between(ids[1], network.min_delay, network.max_delay);
    sim.run_for(Duration::from_secs(60));
    let delivers = network.loss.is_nan()
        || network.loss < 0.5 && network.max_delay.max(network.min_delay) < Duration::from_secs(1);
    let live = sim.swim(ids[0]).map_or(0, |s| s.live_members());
    ensure(!delivers || live == 4, || {
        format!("the seed knows {live} of 4")
    })?;
    Ok(Verdict::Worked)
}

pub(super) fn sim_knobs() -> Vec<Knob> {
    vec![
        knob(
            "gossip.sim.network.loss",
            "loss",
            floats(&[1.0, 1.000_001, f64::MIN_POSITIVE]),
            |v| sim_network_workload(Network::lan().with_loss(v.f())),
        ),
        knob(
            "gossip.sim.network.min_delay",
            "min_delay",
            durations(),
            |v| {
                sim_network_workload(Network {
                    min_delay: v.d(),
                    ..Network::lan()
                })
            },
        ),
        knob(
            "gossip.sim.network.max_delay",
            "max_delay",
            durations(),
            |v| {
                sim_network_workload(Network {
                    max_delay: v.d(),
                    ..Network::lan()
                })
            },
        ),
    ]
}
