#![no_main]
//! See `palisade::fuzzing::gossip_datagram` for what the input is and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade::fuzzing::gossip_datagram(data));
