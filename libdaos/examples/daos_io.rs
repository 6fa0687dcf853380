//! A libdaos example: writes a byte array and many key-value pairs into a
//! container, then reads them all back and checks every byte.
//!
//! ```text
//! cargo run --release -p libdaos --example daos_io -- tank c1 --array-mib 1024 --kv 100000
//! cargo run --release -p libdaos --example daos_io -- tank c1 --verify-only
//! ```
//!
//! The object ids go into container attributes (`daos_io.array`,
//! `daos_io.kv`), so `--verify-only` checks an earlier run's data, for
//! example after an engine was killed and restarted in between.

use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use libdaos::{Daos, DaosOpts, ObjectClass, ObjectId, ObjectType, PoolFlags};

#[derive(Parser)]
struct Args {
    pool: String,
    cont: String,
    /// Size of the array to write, MiB.
    #[arg(long, default_value_t = 1024)]
    array_mib: u64,
    /// Number of key-value pairs.
    #[arg(long, default_value_t = 100_000)]
    kv: u64,
    /// Object class of both objects.
    #[arg(long, default_value = "SX")]
    oclass: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    depth: usize,
    /// Only check the data an earlier run wrote.
    #[arg(long)]
    verify_only: bool,
}

/// The byte at `off` of the array: a function of the offset only.
fn byte_at(off: u64) -> u8 {
    (off.wrapping_mul(2654435761) >> 13) as u8
}

fn chunk(off: u64, len: u64) -> Bytes {
    Bytes::from((off..off + len).map(byte_at).collect::<Vec<u8>>())
}

fn value_of(i: u64) -> Bytes {
    Bytes::from(format!("value-{i}-{}", i.wrapping_mul(7919)))
}

const MIB: u64 = 1 << 20;

fn progress(what: &str, done: u64, total: u64, start: Instant) {
    if done.is_multiple_of((total / 20).max(1)) || done == total {
        eprintln!(
            "{what}: {done}/{total} ({:.0}%), {:.1}s",
            done as f64 * 100.0 / total.max(1) as f64,
            start.elapsed().as_secs_f64()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let daos = Daos::with_opts(DaosOpts::default()).await?;
    let pool = daos.pool_connect(&a.pool, PoolFlags::ReadWrite).await?;
    let cont = pool.open_container(&a.cont, true).await?;
    let class = ObjectClass::from_name(&a.oclass)?;

    let (array_oid, kv_oid) = if a.verify_only {
        let attrs = cont
            .get_attrs(&["daos_io.array".into(), "daos_io.kv".into()])
            .await?;
        let parse = |v: &[u8]| -> Result<ObjectId, Box<dyn std::error::Error>> {
            Ok(String::from_utf8_lossy(v).parse::<ObjectId>()?)
        };
        (parse(&attrs[0].1)?, parse(&attrs[1].1)?)
    } else {
        let array_oid = cont.alloc_oid(ObjectType::ArrayByte, &class).await?;
        let kv_oid = cont.alloc_oid(ObjectType::KvHashed, &class).await?;
        cont.set_attrs(vec![
            ("daos_io.array".into(), array_oid.to_string().into_bytes()),
            ("daos_io.kv".into(), kv_oid.to_string().into_bytes()),
        ])
        .await?;
        (array_oid, kv_oid)
    };
    let arr = cont.array(array_oid, MIB)?;
    let kv = cont.kv(kv_oid)?;

    if !a.verify_only {
        let start = Instant::now();
        let n = a.array_mib;
        let mut done = 0;
        let mut s = futures::stream::iter(0..n)
            .map(|i| {
                let arr = arr.clone();
                async move { arr.write(i * MIB, chunk(i * MIB, MIB)).await }
            })
            .buffer_unordered(a.depth);
        while let Some(r) = s.next().await {
            r?;
            done += 1;
            progress("array write (MiB)", done, n, start);
        }
        println!(
            "array: wrote {n} MiB in {:.2}s ({:.0} MiB/s)",
            start.elapsed().as_secs_f64(),
            n as f64 / start.elapsed().as_secs_f64()
        );
        let start = Instant::now();
        let mut done = 0;
        let mut s = futures::stream::iter(0..a.kv)
            .map(|i| {
                let kv = kv.clone();
                async move { kv.put(format!("key-{i}").as_bytes(), value_of(i)).await }
            })
            .buffer_unordered(a.depth);
        while let Some(r) = s.next().await {
            r?;
            done += 1;
            progress("kv put", done, a.kv, start);
        }
        println!(
            "kv: put {} pairs in {:.2}s ({:.0} ops/s)",
            a.kv,
            start.elapsed().as_secs_f64(),
            a.kv as f64 / start.elapsed().as_secs_f64()
        );
    }

    let start = Instant::now();
    let size = arr.size().await?;
    if size != a.array_mib * MIB {
        return Err(format!("array size is {size}, expected {}", a.array_mib * MIB).into());
    }
    futures::stream::iter(0..a.array_mib)
        .map(|i| {
            let arr = arr.clone();
            async move {
                let got = arr.read(i * MIB, MIB).await?;
                if got != chunk(i * MIB, MIB) {
                    return Err(format!("array MiB {i} does not read back").into());
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            }
        })
        .buffer_unordered(a.depth)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "array: verified {} MiB in {:.2}s",
        a.array_mib,
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    futures::stream::iter(0..a.kv)
        .map(|i| {
            let kv = kv.clone();
            async move {
                match kv.get(format!("key-{i}").as_bytes()).await? {
                    Some(v) if v == value_of(i) => Ok(()),
                    other => Err(format!("key-{i}: read {other:?}").into()),
                }
            }
        })
        .buffer_unordered(a.depth)
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e: Box<dyn std::error::Error>| e)?;
    println!(
        "kv: verified {} pairs in {:.2}s",
        a.kv,
        start.elapsed().as_secs_f64()
    );
    cont.close().await?;
    pool.disconnect().await?;
    Ok(())
}
