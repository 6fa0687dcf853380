//! Decodes arbitrary bytes as VOS log records and checkpoints: the decoders
//! must return errors, never panic, and what decodes must re-encode to the
//! same bytes (the encoding is canonical).

#![no_main]

use engine::vos::layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As found on disk: header checks, checksums and all.
    let _ = layout::decode_log_header(data);
    let _ = layout::decode_log_record(data, 0);
    let _ = layout::decode_checkpoint(data);

    // Past the checksums: the bytes as a record body with a valid crc...
    if data.len() >= 4 {
        let count = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let muts = &data[4..];
        let rec = layout::encode_record(7, count, muts);
        if let Ok((back, n)) = layout::decode_log_record(&rec, 0) {
            assert_eq!(n, rec.len());
            assert_eq!(back.seq, 7);
            let mut again = Vec::new();
            for m in &back.mutations {
                layout::encode_mutation(&mut again, m);
            }
            assert_eq!(again.as_slice(), muts, "mutation encoding is not canonical");
        }
    }
    // ...and as a checkpoint image with a valid header.
    let hdr = layout::encode_ckpt_header(1, data.len() as u64, crc32(data));
    let mut file = hdr.to_vec();
    file.extend_from_slice(data);
    let _ = layout::decode_checkpoint(&file);
});

fn crc32(b: &[u8]) -> u32 {
    layout::crc32(b)
}
