//! Object-level benchmark: KV put/get at queue depth 1 and 64 (ops/s and
//! latency percentiles) and 1 MiB array writes and reads (MiB/s), through
//! libdaos against a running system. Prints one JSON object per figure.
//!
//! ```text
//! cargo run --release -p libdaos --example obj_bench -- tank c1 --seconds 5 --array-mib 512
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use libdaos::{DaosOpts, ObjectClass, ObjectType, PoolFlags};
use serde_json::json;

#[derive(Parser)]
struct Args {
    pool: String,
    cont: String,
    /// How long each KV phase runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Bytes per KV value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Size of the array phases, MiB.
    #[arg(long, default_value_t = 512)]
    array_mib: u64,
    #[arg(long, default_value = "SX")]
    oclass: String,
    /// Label for the output lines (e.g. the round number).
    #[arg(long, default_value = "")]
    tag: String,
    /// Drop the kernel's caches (as root, engines on this host) between the
    /// array write and read, so the read is cold like the raw reference's.
    #[arg(long)]
    drop_caches: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Runs `op(i)` at queue depth `depth` for `secs`; ops/s and latencies.
async fn timed<F, Fut>(depth: usize, secs: u64, op: F) -> (f64, Vec<Duration>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), libdaos::Error>> + Send,
{
    let op = Arc::new(op);
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut s = futures::stream::iter(0u64..)
        .take_while(|_| futures::future::ready(Instant::now() < end))
        .map(|i| {
            let op = op.clone();
            async move {
                let t = Instant::now();
                op(i).await.map(|()| t.elapsed())
            }
        })
        .buffer_unordered(depth);
    while let Some(r) = s.next().await {
        match r {
            Ok(d) => lat.push(d),
            Err(e) => {
                eprintln!("obj_bench: {e}");
                std::process::exit(1);
            }
        }
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (rate, lat)
}

fn emit(tag: &str, name: &str, rate: f64, unit: &str, lat: &[Duration]) {
    println!(
        "{}",
        json!({
            "tag": tag,
            "workload": name,
            "value": rate,
            "unit": unit,
            "p50_us": percentile(lat, 0.5),
            "p99_us": percentile(lat, 0.99),
            "ops": lat.len(),
        })
    );
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
    let daos = libdaos::Daos::with_opts(DaosOpts::default()).await?;
    let pool = daos.pool_connect(&a.pool, PoolFlags::ReadWrite).await?;
    let cont = pool.open_container(&a.cont, true).await?;
    let class = ObjectClass::from_name(&a.oclass)?;
    let kv = cont.kv(cont.alloc_oid(ObjectType::KvHashed, &class).await?)?;
    let value = Bytes::from(vec![7u8; a.value_size]);

    for depth in [1usize, 64] {
        let (k, v) = (kv.clone(), value.clone());
        let (rate, lat) = timed(depth, a.seconds, move |i| {
            let (k, v) = (k.clone(), v.clone());
            async move { k.put(format!("k{}", i % 100_000).as_bytes(), v).await }
        })
        .await;
        emit(&a.tag, &format!("kv_put_qd{depth}"), rate, "ops/s", &lat);
        let k = kv.clone();
        let (rate, lat) = timed(depth, a.seconds, move |i| {
            let k = k.clone();
            async move { k.get(format!("k{}", i % 1000).as_bytes()).await.map(|_| ()) }
        })
        .await;
        emit(&a.tag, &format!("kv_get_qd{depth}"), rate, "ops/s", &lat);
    }

    const MIB: u64 = 1 << 20;
    let arr = cont.array(cont.alloc_oid(ObjectType::ArrayByte, &class).await?, MIB)?;
    let block = Bytes::from(vec![0x5au8; MIB as usize]);
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut s = futures::stream::iter(0..a.array_mib)
        .map(|i| {
            let (arr, b) = (arr.clone(), block.clone());
            async move {
                let t = Instant::now();
                arr.write(i * MIB, b).await.map(|()| t.elapsed())
            }
        })
        .buffer_unordered(16);
    while let Some(r) = s.next().await {
        lat.push(r?);
    }
    let mbs = a.array_mib as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    emit(&a.tag, "array_write_1m", mbs, "MiB/s", &lat);
    if a.drop_caches {
        // Best effort: a benchmark, not a correctness step.
        let _ = std::process::Command::new("sync").status();
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }

    let start = Instant::now();
    let mut lat = Vec::new();
    let mut s = futures::stream::iter(0..a.array_mib)
        .map(|i| {
            let arr = arr.clone();
            async move {
                let t = Instant::now();
                arr.read(i * MIB, MIB).await.map(|_| t.elapsed())
            }
        })
        .buffer_unordered(16);
    while let Some(r) = s.next().await {
        lat.push(r?);
    }
    let mbs = a.array_mib as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    emit(&a.tag, "array_read_1m", mbs, "MiB/s", &lat);
    arr.object().punch().await?;
    kv.object().punch().await?;
    cont.close().await?;
    pool.disconnect().await?;
    Ok(())
}
