//! openraft's type configuration for a database `D`: commands and responses are
//! `D`'s, node ids are `u64`, a node is its address, snapshots are whole byte buffers.

use std::cmp::Ordering;
use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;

use openraft::{BasicNode, Entry, RaftTypeConfig, TokioRuntime};

use crate::Db;

/// Raft types of an [`crate::Rdb`] over `D`. A marker: it holds no value, and
/// its trait impls are written out so they do not ask anything of `D`.
pub struct RdbTypes<D>(PhantomData<fn() -> D>);

impl<D> fmt::Debug for RdbTypes<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RdbTypes")
    }
}

impl<D> Clone for RdbTypes<D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for RdbTypes<D> {}

impl<D> Default for RdbTypes<D> {
    fn default() -> Self {
        RdbTypes(PhantomData)
    }
}

impl<D> PartialEq for RdbTypes<D> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<D> Eq for RdbTypes<D> {}

impl<D> PartialOrd for RdbTypes<D> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<D> Ord for RdbTypes<D> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}

impl<D: Db> RaftTypeConfig for RdbTypes<D> {
    type D = D::Cmd;
    type R = D::Resp;
    type NodeId = u64;
    type Node = BasicNode;
    type Entry = Entry<Self>;
    type SnapshotData = Cursor<Vec<u8>>;
    type AsyncRuntime = TokioRuntime;
    type Responder = openraft::impls::OneshotResponder<Self>;
}
