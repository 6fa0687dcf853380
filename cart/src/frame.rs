//! The CaRT wire format: one frame per request or reply.
//!
//! Invariant: nothing is allocated for a frame until its fixed header has
//! passed every check (magic, version, kind, flags, per-kind fields, CRC and
//! the total length against the receiver's `max_frame`); the functions here
//! are pure and never panic on any input, so a peer's bytes can at worst end
//! its own connection.
//!
//! # Layout (version 1)
//!
//! A frame is a fixed 40-byte header, then `header_len` bytes of the caller's
//! encoded header (a prost message, opaque here), then `bulk_len` bytes of raw
//! bulk data. Every integer is little-endian.
//!
//! | offset | size | field        | meaning                                                   |
//! | ------ | ---- | ------------ | --------------------------------------------------------- |
//! | 0      | 4    | `magic`      | the bytes `CaRT` (`0x54_52_61_43` as a LE `u32`)           |
//! | 4      | 2    | `version`    | [`VERSION`] (1)                                           |
//! | 6      | 1    | `kind`       | 1 = request, 2 = reply                                    |
//! | 7      | 1    | `flags`      | no bits defined in version 1: must be 0                   |
//! | 8      | 4    | `opcode`     | the operation; a reply echoes its request's               |
//! | 12     | 8    | `rpc_id`     | chosen by the client, echoed by the reply                 |
//! | 20     | 4    | `status`     | replies: 0 or a negative DER code; requests: 0            |
//! | 24     | 4    | `timeout_ms` | requests: time left to the caller's deadline; replies: 0  |
//! | 28     | 4    | `header_len` | length of the encoded header that follows                 |
//! | 32     | 4    | `bulk_len`   | length of the bulk data after the header                  |
//! | 36     | 4    | `crc`        | CRC32 (IEEE, `crc32fast`) of bytes 0..36                  |
//!
//! The CRC covers the fixed header only: it guards the lengths and ids that
//! steer the receiver, while the payload's integrity is the business of the
//! layer above (DAOS checksums data end to end where a container asks).
//! Flags must be zero so that a later version can give a bit a meaning that an
//! old peer refuses instead of silently ignoring; a new layout bumps `version`.

use bytes::{Bytes, BytesMut};

/// The magic bytes that open every frame.
pub const MAGIC: [u8; 4] = *b"CaRT";
/// The wire format version this crate speaks.
pub const VERSION: u16 = 1;
/// The size of the fixed frame header.
pub const HEADER_LEN: usize = 40;
/// Bytes of the fixed header covered by the CRC.
const CRC_SPAN: usize = 36;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Request,
    Reply,
}

impl Kind {
    fn to_wire(self) -> u8 {
        match self {
            Kind::Request => 1,
            Kind::Reply => 2,
        }
    }

    fn from_wire(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Reply),
            _ => None,
        }
    }
}

/// The fixed part of a frame, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    pub kind: Kind,
    pub flags: u8,
    pub opcode: u32,
    pub rpc_id: u64,
    /// Replies only: 0 or a negative DER code.
    pub status: i32,
    /// Requests only: milliseconds left to the caller's deadline.
    pub timeout_ms: u32,
    pub header_len: u32,
    pub bulk_len: u32,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:02x?} (want \"CaRT\")")]
    Magic([u8; 4]),
    #[error("unsupported frame version {0} (this side speaks {VERSION})")]
    Version(u16),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("reserved frame flags {0:#04x} set")]
    Flags(u8),
    #[error("request frame carries status {0} (must be 0)")]
    RequestStatus(i32),
    #[error("reply frame carries timeout {0} ms (must be 0)")]
    ReplyTimeout(u32),
    #[error("frame header CRC {got:#010x} does not match {want:#010x}")]
    Crc { got: u32, want: u32 },
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: u64, max: u32 },
    #[error("frame truncated: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl FrameHeader {
    /// The header of a request.
    pub fn request(
        opcode: u32,
        rpc_id: u64,
        timeout_ms: u32,
        header_len: u32,
        bulk_len: u32,
    ) -> Self {
        FrameHeader {
            kind: Kind::Request,
            flags: 0,
            opcode,
            rpc_id,
            status: 0,
            timeout_ms,
            header_len,
            bulk_len,
        }
    }

    /// The header of a reply.
    pub fn reply(opcode: u32, rpc_id: u64, status: i32, header_len: u32, bulk_len: u32) -> Self {
        FrameHeader {
            kind: Kind::Reply,
            flags: 0,
            opcode,
            rpc_id,
            status,
            timeout_ms: 0,
            header_len,
            bulk_len,
        }
    }

    /// The whole frame's length: fixed header, header and bulk.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.header_len) + u64::from(self.bulk_len)
    }

    /// Encodes the fixed header, CRC included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6] = self.kind.to_wire();
        b[7] = self.flags;
        b[8..12].copy_from_slice(&self.opcode.to_le_bytes());
        b[12..20].copy_from_slice(&self.rpc_id.to_le_bytes());
        b[20..24].copy_from_slice(&self.status.to_le_bytes());
        b[24..28].copy_from_slice(&self.timeout_ms.to_le_bytes());
        b[28..32].copy_from_slice(&self.header_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.bulk_len.to_le_bytes());
        let crc = crc32fast::hash(&b[..CRC_SPAN]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the fixed header at the start of `buf` (bytes past
    /// [`HEADER_LEN`] are ignored). The whole frame must fit in `max_frame`.
    pub fn decode(buf: &[u8], max_frame: u32) -> Result<FrameHeader, FrameError> {
        check_magic(buf)?;
        if buf.len() < HEADER_LEN {
            return Err(FrameError::Truncated {
                have: buf.len(),
                need: HEADER_LEN,
            });
        }
        let b = &buf[..HEADER_LEN];
        let version = le_u16(b, 4);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = Kind::from_wire(b[6]).ok_or(FrameError::Kind(b[6]))?;
        if b[7] != 0 {
            return Err(FrameError::Flags(b[7]));
        }
        let want = crc32fast::hash(&b[..CRC_SPAN]);
        let got = le_u32(b, 36);
        if got != want {
            return Err(FrameError::Crc { got, want });
        }
        let status = le_i32(b, 20);
        let timeout_ms = le_u32(b, 24);
        match kind {
            Kind::Request if status != 0 => return Err(FrameError::RequestStatus(status)),
            Kind::Reply if timeout_ms != 0 => return Err(FrameError::ReplyTimeout(timeout_ms)),
            _ => {}
        }
        let h = FrameHeader {
            kind,
            flags: 0,
            opcode: le_u32(b, 8),
            rpc_id: le_u64(b, 12),
            status,
            timeout_ms,
            header_len: le_u32(b, 28),
            bulk_len: le_u32(b, 32),
        };
        let len = h.frame_len();
        if len > u64::from(max_frame) {
            return Err(FrameError::TooLong {
                len,
                max: max_frame,
            });
        }
        Ok(h)
    }
}

/// Rejects a wrong magic as soon as its bytes are in, so garbage is refused
/// without waiting for a whole fixed header.
fn check_magic(buf: &[u8]) -> Result<(), FrameError> {
    let n = buf.len().min(MAGIC.len());
    if buf[..n] != MAGIC[..n] {
        let mut m = [0u8; 4];
        m[..n].copy_from_slice(&buf[..n]);
        return Err(FrameError::Magic(m));
    }
    Ok(())
}

/// A whole frame: its fixed header and the two payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub head: FrameHeader,
    pub header: Bytes,
    pub bulk: Bytes,
}

impl Frame {
    /// Builds a frame whose fixed header lengths match the payloads. Fails if
    /// a payload does not fit the 32-bit length fields.
    pub fn new(mut head: FrameHeader, header: Bytes, bulk: Bytes) -> Result<Frame, FrameError> {
        let too_long = |len: usize| FrameError::TooLong {
            len: len as u64,
            max: u32::MAX,
        };
        head.header_len = u32::try_from(header.len()).map_err(|_| too_long(header.len()))?;
        head.bulk_len = u32::try_from(bulk.len()).map_err(|_| too_long(bulk.len()))?;
        Ok(Frame { head, header, bulk })
    }

    /// Encodes the whole frame into one buffer (tests and fuzzing; the
    /// transports write the parts without joining them).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.header.len() + self.bulk.len());
        v.extend_from_slice(&self.head.encode());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(&self.bulk);
        v
    }
}

/// The outcome of [`split_frame`] on a buffer that holds no invalid bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, split off the front of the buffer.
    Frame(Frame),
    /// At least this many more bytes are needed. Once the fixed header is in,
    /// this is exactly the rest of the frame, so a reader can reserve it at
    /// once and read the payload without reallocating.
    Need(usize),
}

/// Splits the first frame off `buf` without copying its payloads: the header
/// and bulk are views into `buf`'s allocation.
pub fn split_frame(buf: &mut BytesMut, max_frame: u32) -> Result<Decoded, FrameError> {
    if buf.len() < HEADER_LEN {
        check_magic(buf)?;
        return Ok(Decoded::Need(HEADER_LEN - buf.len()));
    }
    let head = FrameHeader::decode(buf, max_frame)?;
    // frame_len() <= max_frame (a u32) was checked, so it fits usize.
    let total = usize::try_from(head.frame_len()).map_err(|_| FrameError::TooLong {
        len: head.frame_len(),
        max: max_frame,
    })?;
    if buf.len() < total {
        return Ok(Decoded::Need(total - buf.len()));
    }
    let mut body = buf.split_to(total).freeze().split_off(HEADER_LEN);
    let bulk = body.split_off(head.header_len as usize);
    Ok(Decoded::Frame(Frame {
        head,
        header: body,
        bulk,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOLDEN_REQUEST: [u8; HEADER_LEN] = [
        0x43, 0x61, 0x52, 0x54, // magic "CaRT"
        0x01, 0x00, // version 1
        0x01, // kind: request
        0x00, // flags
        0x04, 0x03, 0x02, 0x01, // opcode 0x01020304
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // rpc id 0x0102030405060708
        0x00, 0x00, 0x00, 0x00, // status 0
        0xe8, 0x03, 0x00, 0x00, // timeout 1000 ms
        0x10, 0x00, 0x00, 0x00, // header_len 16
        0x00, 0x00, 0x10, 0x00, // bulk_len 1 MiB
        0x01, 0x3b, 0x73, 0xbd, // crc32 of bytes 0..36
    ];

    const GOLDEN_REPLY: [u8; HEADER_LEN] = [
        0x43, 0x61, 0x52, 0x54, // magic
        0x01, 0x00, // version 1
        0x02, // kind: reply
        0x00, // flags
        0x2a, 0x00, 0x00, 0x00, // opcode 42
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // rpc id 7
        0x0d, 0xfc, 0xff, 0xff, // status -1011 (DER_TIMEDOUT)
        0x00, 0x00, 0x00, 0x00, // timeout 0
        0x05, 0x00, 0x00, 0x00, // header_len 5
        0x00, 0x00, 0x00, 0x00, // bulk_len 0
        0x1b, 0xb5, 0x7c, 0x6e, // crc32
    ];

    fn golden_request() -> FrameHeader {
        FrameHeader::request(0x0102_0304, 0x0102_0304_0506_0708, 1000, 16, 1 << 20)
    }

    fn golden_reply() -> FrameHeader {
        FrameHeader::reply(42, 7, -1011, 5, 0)
    }

    #[test]
    fn golden_bytes() {
        assert_eq!(golden_request().encode(), GOLDEN_REQUEST);
        assert_eq!(golden_reply().encode(), GOLDEN_REPLY);
        assert_eq!(
            FrameHeader::decode(&GOLDEN_REQUEST, u32::MAX).unwrap(),
            golden_request()
        );
        assert_eq!(
            FrameHeader::decode(&GOLDEN_REPLY, u32::MAX).unwrap(),
            golden_reply()
        );
    }

    /// Re-encodes `b` with a fresh CRC after a field was changed, so the
    /// check under test is the one that fires.
    fn recrc(mut b: [u8; HEADER_LEN]) -> [u8; HEADER_LEN] {
        let crc = crc32fast::hash(&b[..CRC_SPAN]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn each_check_fires() {
        let max = u32::MAX;
        let mut b = GOLDEN_REQUEST;
        b[0] = b'X';
        assert!(matches!(
            FrameHeader::decode(&b, max),
            Err(FrameError::Magic(_))
        ));
        let mut b = GOLDEN_REQUEST;
        b[4] = 2;
        assert_eq!(
            FrameHeader::decode(&recrc(b), max),
            Err(FrameError::Version(2))
        );
        let mut b = GOLDEN_REQUEST;
        b[6] = 9;
        assert_eq!(
            FrameHeader::decode(&recrc(b), max),
            Err(FrameError::Kind(9))
        );
        let mut b = GOLDEN_REQUEST;
        b[7] = 0x80;
        assert_eq!(
            FrameHeader::decode(&recrc(b), max),
            Err(FrameError::Flags(0x80))
        );
        let mut b = GOLDEN_REQUEST;
        b[20] = 1;
        assert_eq!(
            FrameHeader::decode(&recrc(b), max),
            Err(FrameError::RequestStatus(1))
        );
        let mut b = GOLDEN_REPLY;
        b[24] = 1;
        assert_eq!(
            FrameHeader::decode(&recrc(b), max),
            Err(FrameError::ReplyTimeout(1))
        );
        let mut b = GOLDEN_REQUEST;
        b[13] ^= 1;
        assert!(matches!(
            FrameHeader::decode(&b, max),
            Err(FrameError::Crc { .. })
        ));
        assert_eq!(
            FrameHeader::decode(&GOLDEN_REQUEST, 1 << 20),
            Err(FrameError::TooLong {
                len: 40 + 16 + (1 << 20),
                max: 1 << 20
            })
        );
        assert_eq!(
            FrameHeader::decode(&GOLDEN_REQUEST[..39], max),
            Err(FrameError::Truncated { have: 39, need: 40 })
        );
    }

    #[test]
    fn oversize_is_refused_before_the_payload_arrives() {
        let head = FrameHeader::request(1, 1, 10, u32::MAX, u32::MAX);
        let mut buf = BytesMut::from(&head.encode()[..]);
        assert!(matches!(
            split_frame(&mut buf, 64 << 20),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn garbage_is_refused_on_the_first_bytes() {
        let mut buf = BytesMut::from(&b"GET "[..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::Magic(_))
        ));
        let mut buf = BytesMut::from(&b"Ca"[..]);
        assert_eq!(split_frame(&mut buf, 1024), Ok(Decoded::Need(38)));
    }

    #[test]
    fn split_in_pieces_shares_the_buffer() {
        let f = Frame::new(
            FrameHeader::reply(3, 9, 0, 0, 0),
            Bytes::from_static(b"hdr"),
            Bytes::from(vec![7u8; 1000]),
        )
        .unwrap();
        let wire = f.to_vec();
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            match split_frame(&mut buf, 4096).unwrap() {
                Decoded::Need(n) if i < HEADER_LEN => assert_eq!(n, HEADER_LEN - i),
                Decoded::Need(n) => assert_eq!(n, wire.len() - i),
                Decoded::Frame(_) => panic!("frame before its last byte"),
            }
            buf.extend_from_slice(&[*b]);
        }
        buf.extend_from_slice(b"next");
        let base = buf.as_ptr() as usize;
        let Decoded::Frame(got) = split_frame(&mut buf, 4096).unwrap() else {
            panic!("no frame");
        };
        assert_eq!(got, f);
        // Views into the read buffer, not copies.
        assert_eq!(got.header.as_ptr() as usize, base + HEADER_LEN);
        assert_eq!(got.bulk.as_ptr() as usize, base + HEADER_LEN + 3);
        assert_eq!(&buf[..], b"next");
    }

    fn any_header() -> impl Strategy<Value = FrameHeader> {
        (
            any::<bool>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(req, op, id, st, to, hl, bl)| {
                if req {
                    FrameHeader::request(op, id, to, hl, bl)
                } else {
                    FrameHeader::reply(op, id, st, hl, bl)
                }
            })
    }

    proptest! {
        #[test]
        fn header_round_trips(h in any_header()) {
            let b = h.encode();
            for max in [u32::MAX, 1 << 16] {
                let got = FrameHeader::decode(&b, max);
                if h.frame_len() <= u64::from(max) {
                    prop_assert_eq!(got, Ok(h));
                } else {
                    prop_assert_eq!(got, Err(FrameError::TooLong { len: h.frame_len(), max }));
                }
            }
        }

        #[test]
        fn frame_round_trips(
            h in any_header(),
            header in proptest::collection::vec(any::<u8>(), 0..300),
            bulk in proptest::collection::vec(any::<u8>(), 0..3000),
            tail in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            let f = Frame::new(h, Bytes::from(header), Bytes::from(bulk)).unwrap();
            let mut buf = BytesMut::from(&f.to_vec()[..]);
            buf.extend_from_slice(&tail);
            prop_assert_eq!(split_frame(&mut buf, 4096), Ok(Decoded::Frame(f)));
            prop_assert_eq!(&buf[..], &tail[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(h) = FrameHeader::decode(&data, u32::MAX) {
                prop_assert_eq!(&h.encode()[..], &data[..HEADER_LEN]);
            }
            let mut buf = BytesMut::from(&data[..]);
            if let Ok(Decoded::Frame(f)) = split_frame(&mut buf, 1 << 20) {
                prop_assert_eq!(&f.to_vec()[..], &data[..data.len() - buf.len()]);
            }
        }

        #[test]
        fn corrupted_headers_never_panic(idx in 0..HEADER_LEN, bit in 0u8..8, h in any_header()) {
            let mut b = h.encode();
            b[idx] ^= 1 << bit;
            // A single flipped bit is always caught (CRC or an earlier check).
            prop_assert!(FrameHeader::decode(&b, u32::MAX).is_err());
        }
    }
}
