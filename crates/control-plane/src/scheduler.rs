//! The one owner of every periodic job (SPEC §9). A job is a service exposing
//! `run_once()` and its interval; it starts no timer of its own.
//!
//! Each job runs in its own task: wait one interval, run once, repeat. A run that fails is
//! logged; a run that panics is logged and the job keeps its schedule — neither affects
//! other jobs. Shutdown stops the timers and waits for runs in progress.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[async_trait]
pub trait Job: Send + Sync + 'static {
    /// Low-cardinality name for logs and metrics.
    fn name(&self) -> &'static str;
    fn interval(&self) -> Duration;
    async fn run_once(&self) -> anyhow::Result<()>;
}

#[derive(Default)]
pub struct Scheduler {
    jobs: Vec<Arc<dyn Job>>,
}

/// Stops the scheduler; dropping it without `shutdown` leaves the jobs running.
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    pub fn add(&mut self, job: Arc<dyn Job>) {
        self.jobs.push(job);
    }

    pub fn start(self) -> SchedulerHandle {
        let (stop, stopped) = watch::channel(false);
        let tasks = self
            .jobs
            .into_iter()
            .map(|job| {
                let stopped = stopped.clone();
                tokio::spawn(run_job(job, stopped))
            })
            .collect();
        SchedulerHandle { stop, tasks }
    }
}

impl SchedulerHandle {
    /// Stops every timer and waits for the runs in progress to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn run_job(job: Arc<dyn Job>, mut stopped: watch::Receiver<bool>) {
    let name = job.name();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(job.interval()) => {}
        }
        let run = {
            let job = job.clone();
            // Its own task, so a panic is contained and reported as a JoinError.
            tokio::spawn(async move { job.run_once().await })
        };
        let outcome = match run.await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(job = name, error = %format!("{e:#}"), "scheduled job failed");
                "error"
            }
            Err(e) if e.is_panic() => {
                tracing::error!(job = name, "scheduled job panicked");
                "panic"
            }
            Err(_) => "cancelled",
        };
        metrics::counter!(crate::metrics::JOB_RUNS, "job" => name, "outcome" => outcome).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting {
        name: &'static str,
        every: Duration,
        runs: AtomicUsize,
        behaviour: fn(usize) -> anyhow::Result<()>,
    }

    #[async_trait]
    impl Job for Counting {
        fn name(&self) -> &'static str {
            self.name
        }

        fn interval(&self) -> Duration {
            self.every
        }

        async fn run_once(&self) -> anyhow::Result<()> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst);
            (self.behaviour)(n)
        }
    }

    fn job(name: &'static str, secs: u64, behaviour: fn(usize) -> anyhow::Result<()>) -> Arc<Counting> {
        Arc::new(Counting {
            name,
            every: Duration::from_secs(secs),
            runs: AtomicUsize::new(0),
            behaviour,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_run_on_their_own_intervals_despite_failures_and_panics() {
        let steady = job("steady", 10, |_| Ok(()));
        let failing = job("failing", 10, |_| anyhow::bail!("always fails"));
        let panicking = job(
            "panicking",
            10,
            |n| if n % 2 == 0 { panic!("boom") } else { Ok(()) },
        );
        let fast = job("fast", 1, |_| Ok(()));
        let mut scheduler = Scheduler::new();
        for j in [&steady, &failing, &panicking, &fast] {
            scheduler.add(j.clone());
        }
        let handle = scheduler.start();

        // The paused clock advances only while every task waits: 55 s of schedule.
        tokio::time::sleep(Duration::from_secs(55)).await;
        assert_eq!(steady.runs.load(Ordering::SeqCst), 5);
        assert_eq!(
            failing.runs.load(Ordering::SeqCst),
            5,
            "failures do not stop a job"
        );
        assert_eq!(
            panicking.runs.load(Ordering::SeqCst),
            5,
            "panics do not stop a job"
        );
        assert!(fast.runs.load(Ordering::SeqCst) >= 54);
        handle.shutdown().await;

        let after = steady.runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(steady.runs.load(Ordering::SeqCst), after, "no run after shutdown");
    }

    struct Slow {
        finished: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Job for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }

        fn interval(&self) -> Duration {
            Duration::from_secs(1)
        }

        async fn run_once(&self) -> anyhow::Result<()> {
            tokio::time::sleep(Duration::from_secs(30)).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_a_run_in_progress() {
        let finished = Arc::new(AtomicUsize::new(0));
        let mut scheduler = Scheduler::new();
        scheduler.add(Arc::new(Slow {
            finished: finished.clone(),
        }));
        let handle = scheduler.start();
        tokio::time::sleep(Duration::from_secs(2)).await; // the run has started
        handle.shutdown().await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "shutdown returned before the run finished"
        );
    }
}
