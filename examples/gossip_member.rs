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
//! preset. Prints every membership event, and the view every 5 seconds; Ctrl-C leaves
//! gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use palisade::gossip::proto::Config;
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let config = parse_args()?;
    let member = Membership::start(config).await?;
    println!(
        "{} listening on {} ({} other members)",
        member.local().name(),
        member.gossip_addr(),
        member.live_members()
    );
    let mut events = member.subscribe();
    let mut view = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            e = events.recv() => match e {
                Ok(e) => {
                    let what = match &e {
                        Event::Join(_) => "joined",
                        Event::Leave(_) => "left",
                        Event::Failed(_) => "FAILED",
                        Event::Update(_) => "updated",
                        Event::Reap(_) => "forgotten",
                    };
                    let m = e.member();
                    println!("{} {what} ({}, service {:?}, tags {:?})", m.name(), m.gossip_addr(), m.service_addr(), m.tags());
                }
                Err(e) => println!("(events: {e})"),
            },
            _ = view.tick() => {
                let s = member.stats();
                println!(
                    "view: {} | sent {} recv {} dropped {} | join rounds {} (background joins {})",
                    member
                        .members()
                        .iter()
                        .map(|m| format!("{}={:?}", m.name(), m.state()))
                        .collect::<Vec<_>>()
                        .join(" "),
                    s.protocol.packets_sent,
                    s.protocol.packets_received,
                    s.dropped(),
                    s.join_attempts,
                    s.background_joins
                );
            }
        }
    }
    println!("leaving...");
    let acked = member.leave().await;
    member.shutdown().await;
    println!("left (acknowledged: {acked})");
    Ok(())
}
