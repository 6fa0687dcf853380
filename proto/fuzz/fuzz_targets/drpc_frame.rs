//! dRPC frames from a peer: the length prefix and the `Call` inside must be
//! refused cleanly, never panic or allocate past the limit; a credential in
//! the body must not panic the identity decoder either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let got: Result<Option<proto::drpc_pb::Call>, _> =
        futures::executor::block_on(proto::drpc::read_frame_limited(&mut r, 1 << 16, None));
    if let Ok(Some(call)) = got {
        if let Ok(cred) = proto::auth_pb::Credential::decode(call.body.as_slice()) {
            let _ = proto::auth::identity_unverified(&cred);
        }
    }
});
