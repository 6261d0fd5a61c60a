//! `--rate-limits`: checks per second and latency of one check, for the in-memory limiter, the
//! Redis limiter, and beside them the Redis server's own limit in the same run: the same
//! number of clients sending a bare `INCR` each over the same kind of connection.
//!
//! Each client charges its own keys (a budget no client exhausts), as a node under load from
//! many users would.

use egec_api::rate_limit::{RateLimits, Settings};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent clients of every run.
const CLIENTS: usize = 16;

pub struct Row {
    pub name: &'static str,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "per_second": self.per_second.round(),
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
        })
    }
}

/// Runs `op` from `CLIENTS` tasks for `window` (after a second of warm-up) and measures it.
async fn measure<F, Fut>(name: &'static str, window: Duration, op: F) -> anyhow::Result<Row>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + window;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut i = 0u64;
            loop {
                let start = Instant::now();
                if start >= stop_at {
                    break;
                }
                op(client, i).await?;
                i += 1;
                if start >= warm_until {
                    hist.record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
                }
            }
            anyhow::Ok(hist)
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok(Row {
        name,
        per_second: all.len() as f64 / window.as_secs_f64(),
        p50_us: all.value_at_quantile(0.50) as f64 / 1_000.0,
        p99_us: all.value_at_quantile(0.99) as f64 / 1_000.0,
    })
}

pub async fn run(redis_url: &str, window: Duration) -> anyhow::Result<Vec<Row>> {
    let settings = Settings {
        api_per_minute: 1_000_000,
        ..Settings::default()
    };
    let mut rows = Vec::new();

    let memory = Arc::new(RateLimits::in_memory(settings));
    rows.push(
        measure("in-memory limiter", window, move |client, i| {
            let l = memory.clone();
            async move {
                l.check(&l.settings.api(), &format!("user:{client}:{}", i % 1_000))
                    .await;
                Ok(())
            }
        })
        .await?,
    );

    let prefix = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let shared = Arc::new(RateLimits::shared(settings, redis_url, &prefix, b"bench")?);
    rows.push(
        measure("Redis limiter", window, move |client, i| {
            let l = shared.clone();
            async move {
                l.check(&l.settings.api(), &format!("user:{client}:{}", i % 1_000))
                    .await;
                anyhow::ensure!(l.backend() == "redis", "the Redis limiter fell back");
                Ok(())
            }
        })
        .await?,
    );

    let client = redis::Client::open(redis_url)?;
    let conn = redis::aio::ConnectionManager::new(client).await?;
    rows.push(
        measure("bare Redis INCR", window, move |client, i| {
            let mut conn = conn.clone();
            let key = format!("{prefix}:bare:{client}:{}", i % 1_000);
            async move {
                let _: i64 = redis::cmd("INCR").arg(key).query_async(&mut conn).await?;
                Ok(())
            }
        })
        .await?,
    );
    Ok(rows)
}

pub fn print(rows: &[Row]) {
    println!("== Rate-limit checks, {CLIENTS} concurrent clients ==");
    println!(
        "{:<20} {:>12} {:>10} {:>10}",
        "", "checks/s", "p50 µs", "p99 µs"
    );
    for r in rows {
        println!(
            "{:<20} {:>12.0} {:>10.1} {:>10.1}",
            r.name, r.per_second, r.p50_us, r.p99_us
        );
    }
    if let [memory, redis, bare] = rows {
        println!(
            "Redis limiter: {:.2}x bare Redis INCR throughput; adds {:.0} µs at p99 per checked request over the in-memory limiter",
            redis.per_second / bare.per_second,
            redis.p99_us - memory.p99_us
        );
    }
}

pub fn json(rows: &[Row]) -> serde_json::Value {
    serde_json::Value::Array(rows.iter().map(Row::json).collect())
}
