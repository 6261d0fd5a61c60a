//! Threads of their own, at a lower scheduling priority, for password hashing.
//!
//! argon2id is meant to be expensive: one hash keeps a core busy for tens of milliseconds.
//! A bounded pool stops a login storm from queueing unbounded work, but on its own it still
//! lets the hashes take every core, and ordinary requests then wait their turn behind them.
//! These threads run under `SCHED_IDLE` (and nice 10), so whenever anything else wants a
//! core the kernel gives it to that first; when nothing else does, hashing runs at full
//! speed. The server also sizes the pool one below the core count, and each thread rests
//! after a job as long as the job took, because argon2id's memory traffic slows whatever
//! shares its caches, which no priority prevents. The caller gets its answer before the
//! rest, so one login is as fast as ever; only a storm of them is slowed. Tokio's blocking pool
//! is not used because it also runs the SQLite store's I/O, which must not be slowed down.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The longest rest after one job (a pathological job must not idle the thread for long).
const MAX_REST: std::time::Duration = std::time::Duration::from_millis(500);

/// How much lower than the rest of the process the hashing threads run (Linux nice values
/// range from -20 to 19).
const NICE: i32 = 10;

pub struct HashingPool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot start a hashing thread: {0}")]
    Spawn(std::io::Error),
    #[error("the hashing pool is gone")]
    Gone,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one). They end when the pool is dropped.
    pub fn new(threads: usize) -> Result<Self, PoolError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("egec-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => {
                                let started = std::time::Instant::now();
                                job();
                                // Rest as long as the job took (the caller already has its
                                // answer): a thread hashes at most half the time. argon2id
                                // sweeps 19 MiB per hash through the caches every other
                                // request shares; without the gaps a login storm doubled
                                // the p99 of ordinary requests, with them it adds ~20 %.
                                std::thread::sleep(started.elapsed().min(MAX_REST));
                            }
                            Err(_) => return,
                        }
                    }
                })
                .map_err(PoolError::Spawn)?;
        }
        Ok(Self {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on a hashing thread and waits for its answer.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        self.jobs
            .lock()
            .map_err(|_| PoolError::Gone)?
            .send(job)
            .map_err(|_| PoolError::Gone)?;
        answer.await.map_err(|_| PoolError::Gone)
    }
}

/// Lowers the calling thread's scheduling priority. On Linux the nice value belongs to the
/// thread, so only this thread is affected. Failing to lower it is harmless (the bounded pool
/// still caps the work), so it is only logged.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers and touch no memory
        // of ours.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            // A new thread starts with its creator's nice value; go NICE below that.
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            let niced = libc::setpriority(libc::PRIO_PROCESS, tid, (current + NICE).min(19));
            // SCHED_IDLE: run only when no ordinary thread wants the core. The nice value
            // above still orders these threads among themselves should this be refused.
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(tid as libc::pid_t, libc::SCHED_IDLE, &param);
            niced
        };
        if result != 0 {
            tracing::debug!("could not lower the priority of a hashing thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pool_threads_and_answer() {
        let pool = HashingPool::new(2).expect("pool");
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("ran");
        assert!(name.is_some_and(|n| n.starts_with("egec-hash-")));
        assert_eq!(pool.run(|| 6 * 7).await.expect("ran"), 42);
    }

    #[tokio::test]
    async fn a_thread_rests_as_long_as_its_last_job_took_but_answers_first() {
        let pool = HashingPool::new(1).expect("pool");
        let job = std::time::Duration::from_millis(120);
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(
            pool.run(move || {
                std::thread::sleep(job);
                std::time::Instant::now()
            }),
            pool.run(std::time::Instant::now)
        );
        let (first_done, second_started) = (a.expect("ran"), b.expect("ran"));
        // The first answer came as soon as its job was done…
        assert!(first_done.duration_since(started) < job + std::time::Duration::from_millis(100));
        // …and the second job started only after a rest as long as the first job.
        assert!(
            second_started.duration_since(first_done) >= job - std::time::Duration::from_millis(10),
            "rest was {:?}",
            second_started.duration_since(first_done)
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_pool_threads_run_at_a_lower_priority() {
        let pool = HashingPool::new(1).expect("pool");
        let nice = pool
            .run(|| {
                // SAFETY: plain integer calls, as in `lower_priority`.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, tid)
                }
            })
            .await
            .expect("ran");
        // Relative to the thread that started the pool (the test may itself run niced).
        // SAFETY: as above.
        let own = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        assert_eq!(
            nice,
            (own + NICE).min(19),
            "hashing thread vs starting thread"
        );
        let policy = pool
            .run(|| {
                // SAFETY: plain integer calls, as in `lower_priority`.
                unsafe { libc::sched_getscheduler(libc::syscall(libc::SYS_gettid) as libc::pid_t) }
            })
            .await
            .expect("ran");
        assert_eq!(
            policy,
            libc::SCHED_IDLE,
            "hashing threads yield to every other thread"
        );
    }
}
