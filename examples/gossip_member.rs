//! One gossip member as a process: run several in terminals to watch a cluster form,
//! a `kill -9` get detected, and a Ctrl-C leave gracefully.
//!
//! ```text
//! cargo run --example gossip_member -- a 127.0.0.1:7946
//! cargo run --example gossip_member -- b 127.0.0.1:7947 127.0.0.1:7946
//! cargo run --example gossip_member -- c 127.0.0.1:7948 127.0.0.1:7946 [--service 127.0.0.1:8080] [--tag weight=2]
//! cargo run --example gossip_member -- d 127.0.0.1:7949 127.0.0.1:7946 --retry-join
//! ```
//!
//! Arguments: a name, a bind address, then seed addresses, `--service ADDR` (the service
//! address to announce), `--tag KEY=VALUE` (repeatable) and `--retry-join` (start even
//! if no seed answers and keep joining in the background, also after finding itself
//! alone: start members in any order, or kill and restart the seed). Set `PALISADE_GOSSIP_KEY`
//! to 64 hex digits to seal every packet with that key. Uses the loopback timing
//! preset. Prints every membership event as it happens, and the view every 5 seconds,
//! in the words of `MemberState`: Alive, Suspect, Dead (a crash detected), Left (a
//! graceful leave). Ctrl-C or SIGTERM (how process managers stop a service) leaves
//! gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use palisade::gossip::proto::{Config, Member};
use palisade::gossip::runtime::{Membership, MembershipConfig, RetryJoin};
use palisade::gossip::{Event, Keyring};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn parse_args() -> Result<MembershipConfig, Error> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: gossip_member NAME BIND [SEED...] [--service ADDR] [--tag K=V] [--retry-join]";
    let name = args.next().ok_or(usage)?;
    let bind: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let mut protocol = Config::local();
    if let Ok(hex) = std::env::var("PALISADE_GOSSIP_KEY") {
        protocol.keyring = Some(Keyring::new(parse_key(&hex)?));
    }
    let mut config = MembershipConfig::new(name, bind).protocol(protocol);
    let mut seeds = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--service" => config = config.service_addr(args.next().ok_or(usage)?.parse()?),
            "--retry-join" => {
                config =
                    config.retry_join(RetryJoin::forever().max_interval(Duration::from_secs(5)))
            }
            "--tag" => {
                let kv = args.next().ok_or(usage)?;
                let (k, v) = kv.split_once('=').ok_or("--tag takes KEY=VALUE")?;
                config = config.tag(k, v);
            }
            seed => seeds.push(seed.parse::<SocketAddr>()?),
        }
    }
    Ok(config.seeds(seeds))
}

fn parse_key(hex: &str) -> Result<[u8; 32], Error> {
    if hex.len() != 64 {
        return Err("PALISADE_GOSSIP_KEY must be 64 hex digits".into());
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

/// One member in words: name, address, state, and what it announces.
fn describe(m: &Member) -> String {
    let service = match m.service_addr() {
        Some(addr) => format!("service at {addr}"),
        None => "no service address".to_owned(),
    };
    let tags = if m.tags().is_empty() {
        "no tags".to_owned()
    } else {
        let kv: Vec<_> = m.tags().iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("tags {}", kv.join(","))
    };
    format!(
        "{} at {} is {:?}, {service}, {tags}",
        m.name(),
        m.gossip_addr(),
        m.state()
    )
}

/// Resolves on Ctrl-C, or on SIGTERM where there are Unix signals.
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => println!("Ctrl-C received"),
                _ = term.recv() => println!("SIGTERM received"),
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                println!("Ctrl-C received");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        println!("Ctrl-C received");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let config = parse_args()?;
    let member = Membership::start(config).await?;
    println!(
        "{} listening on {}; {} other live members so far",
        member.local().name(),
        member.gossip_addr(),
        member.live_members()
    );
    let mut events = member.subscribe();
    let mut view = tokio::time::interval(Duration::from_secs(5));
    let stop = stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            e = events.next() => match e {
                Some(e) => {
                    let what = match &e {
                        Event::Join(_) => "joined",
                        Event::Leave(_) => "left gracefully",
                        Event::Failed(_) => "stopped answering and was declared Dead",
                        Event::Update(_) => "changed its service address or tags",
                        Event::Reap(_) => "was forgotten (Dead or Left long enough)",
                    };
                    println!("event: {} {what}: {}", e.member().name(), describe(e.member()));
                }
                None => break,
            },
            _ = view.tick() => {
                let s = member.stats();
                let members = member.members();
                println!("view: {} other members known, {} of them live", members.len(), member.live_members());
                for m in &members {
                    println!("  {}", describe(m));
                }
                println!(
                    "  packets sent {}, received {}, dropped {}; join rounds {}, background joins {}",
                    s.protocol.packets_sent,
                    s.protocol.packets_received,
                    s.dropped(),
                    s.join_attempts,
                    s.background_joins
                );
            }
        }
    }
    println!("leaving the cluster...");
    let acked = member.leave().await;
    member.shutdown().await?;
    if acked {
        println!("left: another member acknowledged the leave (or there was nobody to tell)");
    } else {
        println!("left: no other member acknowledged the leave in time (they will see it by gossip, or declare this member Dead)");
    }
    Ok(())
}
