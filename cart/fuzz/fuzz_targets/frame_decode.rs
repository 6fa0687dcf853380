//! Feeds arbitrary bytes to the CaRT frame decoder. It must never panic, and
//! whatever it accepts must re-encode to exactly the bytes it consumed.
//!
//! Run with `cargo +nightly fuzz run frame_decode` from `cart/`.

#![no_main]

use bytes::BytesMut;
use cart::frame::{split_frame, Decoded, FrameHeader, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small limit, so the length checks are exercised as often as the rest.
    let max_frame = 1 << 12;
    if let Ok(h) = FrameHeader::decode(data, u32::MAX) {
        assert_eq!(&h.encode()[..], &data[..HEADER_LEN]);
    }
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    // Frames back to back, as a connection would read them.
    while let Ok(Decoded::Frame(f)) = split_frame(&mut buf, max_frame) {
        let wire = f.to_vec();
        assert!(wire.len() as u64 <= u64::from(max_frame));
        assert_eq!(&wire[..], &data[consumed..consumed + wire.len()]);
        consumed += wire.len();
        assert_eq!(consumed + buf.len(), data.len());
    }
});
