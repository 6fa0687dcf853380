//! Containers: open handles, properties, user attributes, snapshots, object
//! id allocation, and the objects inside.
//!
//! Invariant: a [`Container`] is an open handle (its `coh` is known to the
//! container service) until [`Container::close`]; every object I/O names it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use placement::{ObjectClass, ObjectId, ObjectType};
use proto::opcode;
use proto::pool::*;
use proto::{DaosError, Der};
use tokio::sync::Mutex;

use crate::error::Error;
use crate::obj::{Array, Kv, Object};
use crate::pool::Pool;
use crate::tx::Tx;

/// An open container. Cheap to clone.
#[derive(Clone)]
pub struct Container {
    pub(crate) inner: Arc<ContInner>,
}

pub(crate) struct ContInner {
    pub(crate) pool: Pool,
    pub(crate) uuid: String,
    pub(crate) label: String,
    pub(crate) coh: String,
    pub(crate) rw: bool,
    props: Vec<(String, String)>,
    /// Object ids reserved from the service and not yet used: (next, end).
    oids: Mutex<(u64, u64)>,
    /// The newest epoch a write's reply carried (see [`Container::now`]).
    seen: AtomicU64,
}

/// How many object ids one reservation takes from the service.
const OID_BATCH: u64 = 1024;

impl Container {
    pub(crate) async fn open(pool: Pool, cont: &str, rw: bool) -> Result<Container, Error> {
        let coh = uuid::Uuid::new_v4().to_string();
        let mut req = pool.cont_req(cont);
        req.coh = coh.clone();
        req.flags = if rw { 2 } else { 1 };
        let r: ContResp = pool.svc(opcode::cont::OPEN, &req).await?;
        let info = r.info.ok_or_else(|| {
            DaosError::new(
                Der::PROTO,
                format!("container {cont:?}: open reply has no info"),
            )
        })?;
        Ok(Container {
            inner: Arc::new(ContInner {
                pool,
                uuid: info.uuid,
                label: info.label,
                coh,
                rw,
                props: info.props.into_iter().map(|p| (p.name, p.value)).collect(),
                oids: Mutex::new((0, 0)),
                seen: AtomicU64::new(0),
            }),
        })
    }

    /// The client's hybrid clock, in ns like the engines' epochs: the wall
    /// clock, or past every epoch a write through this container was given,
    /// whichever is later (DAOS's `d_hlc_get` after its replies' clock
    /// sync). A time taken after a write returned is after that write's
    /// epoch, however the engines' clocks are skewed from this one.
    pub fn now(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        wall.max(self.inner.seen.load(Ordering::Acquire).saturating_add(1))
    }

    /// Takes note of the epoch a write was given.
    pub(crate) fn observe(&self, epoch: u64) {
        self.inner.seen.fetch_max(epoch, Ordering::AcqRel);
    }

    pub fn uuid(&self) -> &str {
        &self.inner.uuid
    }

    pub fn label(&self) -> &str {
        &self.inner.label
    }

    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A property as it was when the container was opened.
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.inner
            .props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The default object class of the container, if it names one.
    pub fn default_oclass(&self) -> Option<ObjectClass> {
        self.prop("oclass")
            .and_then(|c| ObjectClass::from_name(c).ok())
    }

    /// Fails with `DER_NO_PERM` on a read-only handle.
    pub(crate) fn check_rw(&self) -> Result<(), Error> {
        if self.inner.rw {
            return Ok(());
        }
        Err(DaosError::new(
            Der::NO_PERM,
            format!("container {} is open read-only", self.inner.uuid),
        )
        .into())
    }

    fn req(&self) -> ContReq {
        let mut r = self.inner.pool.cont_req(&self.inner.uuid);
        r.coh = self.inner.coh.clone();
        r
    }

    /// The container's info and properties, as the service has them now.
    pub async fn query(&self) -> Result<ContInfo, Error> {
        let r: ContResp = self
            .inner
            .pool
            .svc(opcode::cont::QUERY, &self.req())
            .await?;
        r.info
            .ok_or_else(|| DaosError::new(Der::PROTO, "container query reply has no info").into())
    }

    pub async fn set_props(&self, props: Vec<(String, String)>) -> Result<(), Error> {
        let req = ContPropSetReq {
            c: Some(self.req()),
            props: props
                .into_iter()
                .map(|(name, value)| Prop { name, value })
                .collect(),
        };
        let _: proto::obj::Empty = self.inner.pool.svc(opcode::cont::SET_PROP, &req).await?;
        Ok(())
    }

    pub async fn set_attrs(&self, attrs: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        let req = ContAttrReq {
            c: Some(self.req()),
            attrs: attrs
                .into_iter()
                .map(|(name, value)| Attr { name, value })
                .collect(),
            names: vec![],
        };
        let _: proto::obj::Empty = self.inner.pool.svc(opcode::cont::SET_ATTR, &req).await?;
        Ok(())
    }

    /// The named attributes (all of them when `names` is empty); a missing
    /// name is `DER_NONEXIST`.
    pub async fn get_attrs(&self, names: &[String]) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let req = ContAttrReq {
            c: Some(self.req()),
            attrs: vec![],
            names: names.to_vec(),
        };
        let r: ContAttrResp = self.inner.pool.svc(opcode::cont::GET_ATTR, &req).await?;
        Ok(r.attrs.into_iter().map(|a| (a.name, a.value)).collect())
    }

    pub async fn del_attrs(&self, names: &[String]) -> Result<(), Error> {
        let req = ContAttrReq {
            c: Some(self.req()),
            attrs: vec![],
            names: names.to_vec(),
        };
        let _: proto::obj::Empty = self.inner.pool.svc(opcode::cont::DEL_ATTR, &req).await?;
        Ok(())
    }

    /// Takes a snapshot (optionally named); returns its epoch.
    pub async fn create_snap(&self, name: Option<&str>) -> Result<u64, Error> {
        let req = ContSnapReq {
            c: Some(self.req()),
            name: name.unwrap_or_default().to_string(),
            epoch: 0,
        };
        let r: ContSnapResp = self.inner.pool.svc(opcode::cont::SNAP_CREATE, &req).await?;
        r.snaps
            .first()
            .map(|s| s.epoch)
            .ok_or_else(|| DaosError::new(Der::PROTO, "snapshot reply names no snapshot").into())
    }

    pub async fn list_snaps(&self) -> Result<Vec<Snapshot>, Error> {
        let req = ContSnapReq {
            c: Some(self.req()),
            name: String::new(),
            epoch: 0,
        };
        let r: ContSnapResp = self.inner.pool.svc(opcode::cont::SNAP_LIST, &req).await?;
        Ok(r.snaps)
    }

    /// Destroys the snapshot at `epoch`, or the one named `name`.
    pub async fn destroy_snap(&self, epoch: Option<u64>, name: Option<&str>) -> Result<(), Error> {
        let req = ContSnapReq {
            c: Some(self.req()),
            name: name.unwrap_or_default().to_string(),
            epoch: epoch.unwrap_or(0),
        };
        let _: proto::obj::Empty = self
            .inner
            .pool
            .svc(opcode::cont::SNAP_DESTROY, &req)
            .await?;
        Ok(())
    }

    /// A fresh object id of `otype` and `class`, unique in this container.
    pub async fn alloc_oid(
        &self,
        otype: ObjectType,
        class: &ObjectClass,
    ) -> Result<ObjectId, Error> {
        let mut g = self.inner.oids.lock().await;
        if g.0 >= g.1 {
            let req = OidAllocReq {
                c: Some(self.req()),
                count: OID_BATCH,
            };
            let r: OidAllocResp = self.inner.pool.svc(opcode::cont::ALLOC_OIDS, &req).await?;
            *g = (r.start, r.start + OID_BATCH);
        }
        let lo = g.0;
        g.0 += 1;
        Ok(ObjectId::generate(0, lo, otype, class))
    }

    /// The object `oid` (no I/O happens until it is used).
    pub fn object(&self, oid: ObjectId) -> Result<Object, Error> {
        Object::new(self.clone(), oid)
    }

    /// A key-value view of `oid`.
    pub fn kv(&self, oid: ObjectId) -> Result<Kv, Error> {
        Ok(Kv::new(self.object(oid)?))
    }

    /// A byte-array view of `oid`, split into dkeys of `chunk_size` bytes.
    pub fn array(&self, oid: ObjectId, chunk_size: u64) -> Result<Array, Error> {
        Array::new(self.object(oid)?, chunk_size)
    }

    /// A transaction over objects of this container.
    pub fn tx(&self) -> Tx {
        Tx::new(self.clone())
    }

    /// Closes the handle.
    pub async fn close(self) -> Result<(), Error> {
        let _: proto::obj::Empty = self
            .inner
            .pool
            .svc(opcode::cont::CLOSE, &self.req())
            .await?;
        Ok(())
    }
}
