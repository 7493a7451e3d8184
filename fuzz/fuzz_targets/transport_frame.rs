#![no_main]
//! See `palisade::fuzzing::transport_frame` for what the input is and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade::fuzzing::transport_frame(data));
