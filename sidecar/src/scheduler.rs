//! The scheduler: one task that owns the `JobTable` and the one timer. It sleeps until the
//! earliest pending slot (or a command), then emits a `Due` for every slot that has come, on a
//! bounded channel to the run engine.
//!
//! Time enters only through the injected `Clock`; everything the task decides is in `JobTable`,
//! which is pure. Slots are tracked per job as "the next slot not yet emitted", so a wall-clock
//! step backwards never repeats a slot, and a late wake-up (load, suspend, a step forwards) emits
//! the slots it passed, marked with their lateness. The sleep is capped (`MAX_SLEEP`) so that a
//! wall-clock step forwards is noticed within that time even when the next slot is far away.
//!
//! Bursts (10,000 jobs at `0 0 * * *`) cost nothing at the instant: the table keeps one bucket
//! per instant, the batch for the next instant is taken while idle (and put back if a command
//! arrives first), and the next slots are computed after the batch is sent.

mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use table::{DEFAULT_LATE_WINDOW, JobTable};

use crate::config::{Job, JobDiff, JobName};

/// The longest the timer sleeps without looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Where "now" comes from: the system clock in the daemon, a fake one in tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// How far this clock runs ahead of the wall clock on purpose (the daemon's runs it ahead
    /// by the lead time, so that slots reach the engine early enough to be pre-armed).
    fn ahead(&self) -> chrono::Duration {
        chrono::Duration::zero()
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Why a run was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Its schedule came.
    Schedule,
    /// Someone asked for it to run now.
    Manual,
    /// A slot missed (sidecar down, or far too late) replayed by the job's `catch_up` policy.
    CatchUp,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::CatchUp => "catch-up",
        })
    }
}

/// A job is due: the run engine takes it from here.
#[derive(Clone, Debug)]
pub struct Due {
    pub job: Arc<Job>,
    /// The slot's instant (for a manual run: when it was asked for).
    pub scheduled: DateTime<Utc>,
    pub trigger: Trigger,
    /// How long after `scheduled` the scheduler emitted it (zero unless it woke late).
    pub late_by: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("no job named `{0}`")]
    UnknownJob(JobName),
    #[error("the scheduler has stopped")]
    Stopped,
}

enum Command {
    Reload {
        jobs: BTreeMap<JobName, Arc<Job>>,
        reply: oneshot::Sender<JobDiff>,
    },
    RunNow {
        job: JobName,
        reply: oneshot::Sender<Result<DateTime<Utc>, SchedulerError>>,
    },
    Upcoming {
        job: JobName,
        n: usize,
        reply: oneshot::Sender<Result<Vec<DateTime<Utc>>, SchedulerError>>,
    },
}

/// Talks to the scheduler task; cheap to clone. The task ends when the last handle drops.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
}

impl SchedulerHandle {
    /// Replaces the job set; only added, removed and changed jobs are rescheduled.
    pub async fn reload(
        &self,
        jobs: BTreeMap<JobName, Arc<Job>>,
    ) -> Result<JobDiff, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Reload { jobs, reply }).await.map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)
    }

    /// Emits a manual `Due` for `job` at once; returns its instant.
    pub async fn run_now(&self, job: JobName) -> Result<DateTime<Utc>, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::RunNow { job, reply }).await.map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)?
    }

    /// The next `n` slots of `job` (its pending slot first).
    pub async fn upcoming(
        &self,
        job: JobName,
        n: usize,
    ) -> Result<Vec<DateTime<Utc>>, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Upcoming { job, n, reply })
            .await
            .map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)?
    }
}

/// Starts the scheduler task on `tasks` with `table`; `Due`s go to `due`.
pub fn spawn(
    tasks: &TaskTracker,
    table: JobTable,
    clock: Arc<dyn Clock>,
    due: mpsc::Sender<Due>,
    cancel: CancellationToken,
) -> SchedulerHandle {
    let (tx, rx) = mpsc::channel(64);
    let mut table = table;
    table.set_ahead(clock.ahead());
    tasks.spawn(run(table, clock, rx, due, cancel));
    SchedulerHandle { tx }
}

async fn run(
    mut table: JobTable,
    clock: Arc<dyn Clock>,
    mut inbox: mpsc::Receiver<Command>,
    due: mpsc::Sender<Due>,
    cancel: CancellationToken,
) {
    // A batch taken ahead of its instant (`JobTable::take_first` is pure, so the work of a burst
    // happens while idle); at the instant only the sends remain.
    let mut prepared: Option<(DateTime<Utc>, Vec<Due>)> = None;
    loop {
        let now = clock.now();
        let (first, at) = match prepared.take() {
            // On time (or nearly): send what was prepared, with the real lateness.
            Some((at, mut batch)) if now >= at && now - at <= chrono::Duration::seconds(1) => {
                let late = (now - at).to_std().unwrap_or_default();
                batch.iter_mut().for_each(|d| d.late_by = late);
                (batch, now)
            }
            Some((at, batch)) => {
                // Woken early (a command) or very late: take again from the table's own state.
                if now < at {
                    table.untake();
                    drop(batch);
                    (Vec::new(), now)
                } else {
                    table.untake();
                    (table.take_first(now), now)
                }
            }
            None => (table.take_first(now), now),
        };
        let sent = send_all(first, &due, &cancel).await;
        // Let the receiver run before the next slots are computed: tokio puts the task a send
        // wakes in this worker's LIFO slot, where it would otherwise wait for `advance`.
        tokio::task::yield_now().await;
        let later = table.advance(at);
        if sent.is_err() || send_all(later, &due, &cancel).await.is_err() {
            return;
        }
        let now = clock.now();
        let deadline = table.next_deadline();
        let wait = deadline
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        // Fixed before preparing, so the preparation's time is not added to the sleep.
        let wake_at = tokio::time::Instant::now() + wait;
        if let Some(at) =
            deadline.filter(|at| *at > now && (*at - now).to_std().is_ok_and(|w| w <= MAX_SLEEP))
        {
            prepared = Some((at, table.take_first(at)));
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            cmd = inbox.recv() => match cmd {
                None => return,
                Some(cmd) => {
                    // Commands see the table as it is: put a prepared batch back first.
                    if prepared.take().is_some() {
                        table.untake();
                    }
                    if handle(&mut table, cmd, clock.as_ref(), &due, &cancel).await.is_err() {
                        return;
                    }
                }
            },
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

/// Sends in order, with backpressure from the run engine, but never past a shutdown.
async fn send_all(
    batch: Vec<Due>,
    due: &mpsc::Sender<Due>,
    cancel: &CancellationToken,
) -> Result<(), ()> {
    // Reserve room for as much of the batch as the channel holds, then send without awaiting
    // per event: a burst of 10,000 is a handful of awaits, not 10,000.
    let mut batch = batch.into_iter();
    while batch.len() > 0 {
        let room = batch.len().min(due.max_capacity());
        let permits = tokio::select! {
            permits = due.reserve_many(room) => permits.map_err(|_| ())?,
            () = cancel.cancelled() => return Err(()),
        };
        for (permit, d) in permits.zip(batch.by_ref()) {
            permit.send(d);
        }
    }
    Ok(())
}

async fn handle(
    table: &mut JobTable,
    cmd: Command,
    clock: &dyn Clock,
    due: &mpsc::Sender<Due>,
    cancel: &CancellationToken,
) -> Result<(), ()> {
    match cmd {
        Command::Reload { jobs, reply } => {
            let _ = reply.send(table.reload(&jobs, clock.now()));
        }
        Command::RunNow { job, reply } => match table.run_now(&job, clock.now()) {
            None => {
                let _ = reply.send(Err(SchedulerError::UnknownJob(job)));
            }
            Some(d) => {
                let at = d.scheduled;
                tokio::select! {
                    sent = due.send(d) => if sent.is_err() { return Err(()) },
                    () = cancel.cancelled() => return Err(()),
                }
                let _ = reply.send(Ok(at));
            }
        },
        Command::Upcoming { job, n, reply } => {
            let answer = match table.job(&job) {
                None => Err(SchedulerError::UnknownJob(job)),
                Some(j) => Ok(match table.next_slot(&j.name) {
                    None => Vec::new(),
                    Some(first) => {
                        let mut v = vec![first];
                        v.extend(j.schedule.upcoming(first, n.saturating_sub(1)));
                        v.truncate(n);
                        v
                    }
                }),
            };
            let _ = reply.send(answer);
        }
    }
    Ok(())
}
