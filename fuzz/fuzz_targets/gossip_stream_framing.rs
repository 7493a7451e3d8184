#![no_main]
//! See `palisade::fuzzing::gossip_stream_framing` for what the input is and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade::fuzzing::gossip_stream_framing(data));
