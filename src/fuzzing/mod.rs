//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not public API).
//!
//! Each function takes the fuzzer's bytes, hands them to one edge that reads what a peer
//! or a client sends, and asserts what must hold whatever the bytes are: nothing panics,
//! a dropped input changes nothing and is counted, what is accepted is what the format
//! allows, what is decoded encodes back to the same bytes, nothing hangs. A violated
//! invariant panics, which the fuzzer reports as a crash.
//!
//! | target | edge |
//! |---|---|
//! | `gossip_codec` | the gossip envelope and body decoders, plain and sealed |
//! | `gossip_datagram` | a UDP packet from a peer into a running member (no keyring) |
//! | `gossip_datagram_keyed` | the same with a keyring: the bytes as received, and sealed as a peer with the key would send them |
//! | `gossip_stream` | a TCP message (push-pull, join, stream ping) into a running member |
//! | `gossip_stream_keyed` | the same with a keyring |
//! | `gossip_stream_framing` | the runtime's length-prefixed stream reader, then the member |
//! | `transport_frame` | the transport's frame decoder |
//! | `transport_serve` | `transport::serve`'s connection loop, bytes from a client |
//!
//! The functions are listed in [`TARGETS`], so a test runs every seed of
//! [`seed_corpus`] and every file of `fuzz/corpus/` through every one of them without a
//! fuzzer (`tests/fuzz_entry_points.rs`).

mod gossip;
mod seeds;
mod transport;

pub use gossip::{
    gossip_codec, gossip_datagram, gossip_datagram_keyed, gossip_stream, gossip_stream_framing,
    gossip_stream_keyed,
};
pub use seeds::{seed_corpus, Seed};
pub use transport::{transport_frame, transport_serve};

/// A fuzz target's entry point: it panics if the input breaks an invariant.
pub type EntryPoint = fn(&[u8]);

/// Every entry point by the name of its fuzz target (`fuzz/fuzz_targets/<name>.rs`) and
/// its seed directory (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, EntryPoint)] = &[
    ("gossip_codec", gossip_codec),
    ("gossip_datagram", gossip_datagram),
    ("gossip_datagram_keyed", gossip_datagram_keyed),
    ("gossip_stream", gossip_stream),
    ("gossip_stream_keyed", gossip_stream_keyed),
    ("gossip_stream_framing", gossip_stream_framing),
    ("transport_frame", transport_frame),
    ("transport_serve", transport_serve),
];

/// Polls a future once; for readers over bytes in memory, which never wait.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a read from memory waited"),
    }
}
