//! The errors of the transport and the DER codes they carry over the wire.
//!
//! Invariant: every failure of a call is one of these, and each maps to
//! exactly one DER code through [`CartError::to_daos`]; a handler's own error
//! is not a `CartError` but a [`crate::Reply`] with a non-zero status.

use std::io;
use std::time::Duration;

use proto::{DaosError, Der};

/// What can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    /// A URI that does not parse.
    #[error("invalid CaRT address {uri:?}: {reason}")]
    Addr { uri: String, reason: String },
    /// A URI whose transport this build cannot speak.
    #[error("{uri}: {reason}")]
    NoProvider { uri: String, reason: &'static str },
    /// No reply came before the call's deadline. The request may still run
    /// on the server.
    #[error("{addr}: opcode {opcode:#x}: no reply within {timeout:?}")]
    Timedout {
        addr: String,
        opcode: u32,
        timeout: Duration,
    },
    /// The peer could not be reached, or the connection broke while the call
    /// was in flight. The request may or may not have run.
    #[error("{addr}: unreachable: {reason}")]
    Unreach { addr: String, reason: String },
    /// The peer broke the wire protocol; the connection was dropped.
    #[error("{peer}: protocol error: {reason}")]
    Proto { peer: String, reason: String },
    /// The request does not fit the frame limit.
    #[error("{addr}: request of {len} bytes exceeds max_frame of {max} bytes")]
    TooBig { addr: String, len: u64, max: u32 },
    /// The client was closed by its owner.
    #[error("{addr}: client closed, call canceled")]
    Canceled { addr: String },
    /// Listening on an address failed.
    #[error("listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
}

impl CartError {
    /// The DER code that stands for this error on the wire.
    pub fn der(&self) -> Der {
        match self {
            CartError::Addr { .. } => Der::INVAL,
            CartError::NoProvider { .. } => Der::NOSYS,
            CartError::Timedout { .. } => Der::TIMEDOUT,
            CartError::Unreach { .. } => Der::UNREACH,
            CartError::Proto { .. } => Der::PROTO,
            CartError::TooBig { .. } => Der::OVERFLOW,
            CartError::Canceled { .. } => Der::CANCELED,
            CartError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                Der::BUSY
            }
            CartError::Bind { .. } => Der::IO,
        }
    }

    /// The error as it crosses a process boundary: its DER code and message.
    pub fn to_daos(&self) -> DaosError {
        DaosError::new(self.der(), self.to_string())
    }
}

impl From<CartError> for DaosError {
    fn from(e: CartError) -> Self {
        e.to_daos()
    }
}
