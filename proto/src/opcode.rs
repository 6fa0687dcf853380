//! CaRT opcodes of the data plane: what each request's header and reply are.
//!
//! Like DAOS, an opcode is a module number in the high 16 bits and the operation
//! in the low 16. Every request header and reply header is the prost message
//! named beside the opcode; values travel in the bulk payload.

/// Object I/O, client -> engine.
pub mod obj {
    const M: u32 = 0x01 << 16;
    /// `obj::UpdateReq` -> `obj::UpdateResp`; bulk: iod data in order.
    pub const UPDATE: u32 = M | 1;
    /// `obj::FetchReq` -> `obj::FetchResp`; reply bulk: the data in order.
    pub const FETCH: u32 = M | 2;
    /// `obj::PunchReq` -> `obj::PunchResp`.
    pub const PUNCH: u32 = M | 3;
    /// `obj::EnumReq` -> `obj::EnumResp`.
    pub const ENUMERATE: u32 = M | 4;
    /// `obj::QueryKeyReq` -> `obj::QueryKeyResp`.
    pub const QUERY_KEY: u32 = M | 5;
    /// `obj::TxCommitReq` -> `obj::TxCommitResp`; bulk: update data in op order.
    pub const TX_COMMIT: u32 = M | 6;
    /// `obj::QueryKeysReq` -> `obj::QueryKeysResp`: several QUERY_KEYs on one rank.
    pub const QUERY_KEYS: u32 = M | 7;
    /// The most queries one QUERY_KEYS carries.
    pub const MAX_QUERY_KEYS: usize = 1024;
}

/// Distributed transactions, engine -> engine.
pub mod dtx {
    const M: u32 = 0x02 << 16;
    /// `obj::DtxPrepareReq` -> `obj::Empty`; bulk: update data in op order.
    pub const PREPARE: u32 = M | 1;
    /// `obj::DtxResolveReq` -> `obj::Empty`.
    pub const RESOLVE: u32 = M | 2;
    /// `obj::DtxStateReq` -> `obj::DtxStateResp`.
    pub const STATE: u32 = M | 3;
}

/// The pool service, client -> pool service replica.
pub mod pool {
    const M: u32 = 0x03 << 16;
    /// `pool::PoolConnectReq` -> `pool::PoolConnectResp`.
    pub const CONNECT: u32 = M | 1;
    /// `pool::PoolHdlReq` -> `obj::Empty`.
    pub const DISCONNECT: u32 = M | 2;
    /// `pool::PoolHdlReq` -> `pool::PoolQueryResp`.
    pub const QUERY: u32 = M | 3;
    /// `pool::TgtSpaceReq` -> `pool::TgtSpaceResp` (engine -> engine).
    pub const TGT_SPACE: u32 = M | 4;
    /// `pool::RdbMsg` -> `pool::RdbReply` (replica -> replica).
    pub const RDB: u32 = M | 5;
}

/// The container service (in the pool service), client -> replica.
pub mod cont {
    const M: u32 = 0x04 << 16;
    /// `pool::ContCreateReq` -> `pool::ContResp`.
    pub const CREATE: u32 = M | 1;
    /// `pool::ContReq` -> `pool::ContResp`.
    pub const OPEN: u32 = M | 2;
    /// `pool::ContReq` -> `obj::Empty`.
    pub const CLOSE: u32 = M | 3;
    /// `pool::ContReq` -> `obj::Empty`.
    pub const DESTROY: u32 = M | 4;
    /// `pool::ContReq` -> `pool::ContListResp`.
    pub const LIST: u32 = M | 5;
    /// `pool::ContReq` -> `pool::ContResp`.
    pub const QUERY: u32 = M | 6;
    /// `pool::ContPropSetReq` -> `obj::Empty`.
    pub const SET_PROP: u32 = M | 7;
    /// `pool::ContAttrReq` -> `obj::Empty`.
    pub const SET_ATTR: u32 = M | 8;
    /// `pool::ContAttrReq` -> `pool::ContAttrResp` (no names: all).
    pub const GET_ATTR: u32 = M | 9;
    /// `pool::ContAttrReq` -> `obj::Empty`.
    pub const DEL_ATTR: u32 = M | 10;
    /// `pool::ContSnapReq` -> `pool::ContSnapResp` (the new snapshot).
    pub const SNAP_CREATE: u32 = M | 11;
    /// `pool::ContSnapReq` -> `pool::ContSnapResp`.
    pub const SNAP_LIST: u32 = M | 12;
    /// `pool::ContSnapReq` -> `obj::Empty`.
    pub const SNAP_DESTROY: u32 = M | 13;
    /// `pool::ContTgtReq` -> `obj::Empty` (pool service -> every engine).
    pub const TGT_UPDATE: u32 = M | 14;
    /// `pool::OidAllocReq` -> `pool::OidAllocResp`.
    pub const ALLOC_OIDS: u32 = M | 15;
}
