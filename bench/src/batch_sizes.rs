//! Captures the appender's `egec_append_batch_size` histogram in-process.
//!
//! Throughput of the write path follows the size of the appender's batches (one transaction
//! per batch), so printing the batch sizes beside each run shows at a glance whether the
//! appender is batching or committing one command at a time. A tiny `metrics` recorder is
//! enough for that; every other metric is dropped.

use std::sync::Arc;

use hdrhistogram::Histogram;
use metrics::{Counter, Gauge, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::Mutex;

const BATCH_METRIC: &str = "egec_append_batch_size";

/// Summary of the batch sizes recorded since the last reset.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchStats {
    /// Number of append transactions.
    pub batches: u64,
    pub mean: f64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// The shared histogram; a handle to it is what the recorder hands to the `histogram!` call
/// site in the appender.
#[derive(Clone)]
pub struct BatchSizes {
    hist: Arc<Mutex<Histogram<u64>>>,
}

struct Handle(Arc<Mutex<Histogram<u64>>>);

impl metrics::HistogramFn for Handle {
    fn record(&self, value: f64) {
        // Batch sizes are whole numbers of at least one; saturate rather than panic on an
        // out-of-range value, since a benchmark must not die of its own bookkeeping.
        let v = value.max(1.0) as u64;
        self.0.lock().saturating_record(v);
    }
}

struct BatchRecorder(Arc<Mutex<Histogram<u64>>>);

impl Recorder for BatchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        if key.name() == BATCH_METRIC {
            metrics::Histogram::from_arc(Arc::new(Handle(Arc::clone(&self.0))))
        } else {
            metrics::Histogram::noop()
        }
    }
}

impl BatchSizes {
    /// Installs the process-wide recorder. Call once, before the first append.
    pub fn install() -> anyhow::Result<Self> {
        let hist = Arc::new(Mutex::new(Histogram::new_with_bounds(1, 1_000_000, 3)?));
        metrics::set_global_recorder(BatchRecorder(Arc::clone(&hist)))
            .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
        Ok(Self { hist })
    }

    /// Forgets what was recorded so far (start of a measured window).
    pub fn reset(&self) {
        self.hist.lock().reset();
    }

    /// What was recorded since the last reset.
    pub fn stats(&self) -> BatchStats {
        let h = self.hist.lock();
        if h.is_empty() {
            return BatchStats::default();
        }
        BatchStats {
            batches: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}
