//! One target's way through one stream: its own queue, its own position.
//!
//! A session hands every lane its share of each batch (an empty share too:
//! it moves the lane's position). Each lane applies its queue in order on a
//! task of its own and retries while its target is down, so a target that
//! is down or slow holds back only itself; the stream's ACK is the lowest
//! position over its lanes, so the proxy keeps every record until each
//! target that needs it is done with it.
//!
//! A lane's memory is capped: past its backlog budget it takes no more
//! records (the session asks the proxy for them again once the lane's
//! queue has drained, see `session.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncs_engine::apply::{Run, RunId, Target};
use syncs_engine::op::Op;
use syncs_engine::stats;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::{apply_with_retry, DownSince, RUN_RECORDS};
use super::Shared;

/// A lane's share of one batch.
pub(crate) struct Entry {
    /// Every record up to here is in this entry or before it.
    pub(crate) upto: u64,
    /// The target to apply `items` at (the one the batch's rules named).
    pub(crate) target: Option<Arc<Target>>,
    pub(crate) items: Vec<(u64, Op)>,
    pub(crate) bytes: usize,
    pub(crate) arrived: Instant,
}

/// What a lane's task shares with its session.
#[derive(Debug, Default)]
struct Progress {
    /// Every record up to here is done for this target.
    position: AtomicU64,
    /// Bytes of records queued and not yet done.
    queued_bytes: AtomicUsize,
    down: DownSince,
}

/// What every lane of a session needs to run.
#[derive(Clone)]
pub(crate) struct LaneContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) source: Arc<str>,
    pub(crate) stream: u64,
    /// Interrupts a retry (takeover, shutdown).
    pub(crate) stop: CancellationToken,
    /// Told whenever a lane's position moves.
    pub(crate) wake: Arc<Notify>,
}

/// The session's handle on one lane.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) name: String,
    tx: mpsc::UnboundedSender<Entry>,
    progress: Arc<Progress>,
    task: JoinHandle<()>,
    /// Ends the task after the run in hand; the queue behind it is dropped
    /// (the proxy still has those records: they are not acknowledged).
    closing: CancellationToken,
    /// Every record up to here is queued or done.
    pub(crate) queued_upto: u64,
    /// The `upto` of the last entry handed to the task. Shares with
    /// nothing in them are not sent: [`Lane::skip_idle`] moves the
    /// position over them once the task has caught up.
    sent_upto: u64,
    /// REWIND was asked from here and those records have not come yet.
    pub(crate) rewound: Option<u64>,
}

impl Lane {
    /// A lane whose target is done with every record up to `position`.
    pub(crate) fn spawn(name: String, position: u64, ctx: &LaneContext) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        progress.position.store(position, Ordering::Release);
        let closing = CancellationToken::new();
        let task = tokio::spawn(run(rx, Arc::clone(&progress), ctx.clone(), closing.clone()));
        Lane {
            name,
            tx,
            progress,
            task,
            closing,
            queued_upto: position,
            sent_upto: position,
            rewound: None,
        }
    }

    pub(crate) fn position(&self) -> u64 {
        self.progress.position.load(Ordering::Acquire)
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.progress.queued_bytes.load(Ordering::Acquire)
    }

    /// Whether everything queued is done.
    pub(crate) fn drained(&self) -> bool {
        self.position() >= self.queued_upto
    }

    /// How long the target has been failing here; `None`: it is not.
    pub(crate) fn down_for(&self) -> Option<Duration> {
        self.progress.down.duration()
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        self.queued_upto = entry.upto;
        self.rewound = None;
        if entry.items.is_empty() {
            // Nothing to apply: a lane a stream's traffic does not touch
            // costs no queue (however long its target is down).
            self.skip_idle();
            return;
        }
        self.sent_upto = entry.upto;
        self.progress
            .queued_bytes
            .fetch_add(entry.bytes, Ordering::AcqRel);
        // The task ends only after `closing`, which only `finish` sets.
        let _ = self.tx.send(entry);
    }

    /// Once the task has applied every entry it was sent, moves the
    /// position over the empty shares queued since. Only the session sends
    /// entries, so an idle task cannot be handed one meanwhile.
    pub(crate) fn skip_idle(&self) {
        let at = self.position();
        let to = past_idle(at, self.sent_upto, self.queued_upto);
        if to > at {
            self.progress.position.store(to, Ordering::Release);
        }
    }

    /// Lets the run in hand finish (or be interrupted by `stop`), drops the
    /// rest of the queue, and returns the lane's position.
    pub(crate) async fn finish(self) -> u64 {
        self.closing.cancel();
        let Lane {
            name,
            task,
            progress,
            sent_upto,
            queued_upto,
            ..
        } = self;
        if let Err(e) = task.await {
            tracing::error!(target = %name, "lane task failed: {e}");
        }
        past_idle(
            progress.position.load(Ordering::Acquire),
            sent_upto,
            queued_upto,
        )
    }
}

/// A lane's position counting the empty shares queued after the last
/// entry sent, once the task has applied everything it was sent.
fn past_idle(position: u64, sent_upto: u64, queued_upto: u64) -> u64 {
    if position >= sent_upto {
        position.max(queued_upto)
    } else {
        position
    }
}

/// A lane's entries gathered into one run: the first and those queued
/// behind it while they go to the same target (a reload may have replaced
/// it) or to none, up to [`RUN_RECORDS`]. The entries are kept as they
/// came (moving each operation into one vector copied every run's
/// operations once more, on the way between two runs, while the target
/// waited).
struct Gathered {
    id: RunId,
    entries: Vec<Entry>,
    upto: u64,
    bytes: usize,
    arrived: Instant,
    target: Option<Arc<Target>>,
    count: usize,
}

impl Gathered {
    /// `first` and what is queued behind it; an entry for another target
    /// is left in `held`, to start the run after.
    fn gather(
        first: Entry,
        rx: &mut mpsc::UnboundedReceiver<Entry>,
        held: &mut Option<Entry>,
    ) -> Self {
        let mut run = Gathered {
            id: RunId::fresh(),
            upto: first.upto,
            bytes: first.bytes,
            arrived: first.arrived,
            target: first.target.clone(),
            count: first.items.len(),
            entries: vec![first],
        };
        while run.count < RUN_RECORDS {
            let Ok(more) = rx.try_recv() else { break };
            let same = match (&run.target, &more.target) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => true,
            };
            if !same {
                *held = Some(more);
                break;
            }
            run.upto = more.upto;
            run.bytes += more.bytes;
            run.count += more.items.len();
            if run.target.is_none() {
                run.target = more.target.clone();
            }
            run.entries.push(more);
        }
        run
    }

    /// The run's target, when it has records for one.
    fn target(&self) -> Option<&Arc<Target>> {
        self.target.as_ref().filter(|_| self.count > 0)
    }

    fn items(&self) -> Vec<(u64, &Op)> {
        // Sized up front: collected from `flat_map`, the vector grew by
        // doubling, ~90 instructions per record in reallocations.
        let mut items = Vec::with_capacity(self.count);
        for e in &self.entries {
            items.extend(e.items.iter().map(|(seq, op)| (*seq, op)));
        }
        items
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Entry>,
    progress: Arc<Progress>,
    ctx: LaneContext,
    closing: CancellationToken,
) {
    // An entry for another target than the run before it.
    let mut held: Option<Entry> = None;
    // The run after the one in hand, gathered from what was queued when
    // that one started: the target gets it ahead (redis/ahead.rs).
    let mut upcoming: Option<Gathered> = None;
    // The last run's entries: freed while the next run is at the target
    // (a reference count per command, ~0.1 ms for a full run, was time
    // the target spent waiting for the next run), or when the lane idles.
    let mut retired: Option<Vec<Entry>> = None;
    loop {
        let run = match upcoming.take() {
            Some(run) => run,
            None => {
                let first = match held.take().map_or_else(|| rx.try_recv().ok(), Some) {
                    Some(e) => e,
                    None => {
                        retired = None;
                        tokio::select! {
                            biased;
                            _ = closing.cancelled() => return,
                            e = rx.recv() => match e {
                                Some(e) => e,
                                None => return,
                            },
                        }
                    }
                };
                Gathered::gather(first, &mut rx, &mut held)
            }
        };
        if closing.is_cancelled() {
            return;
        }
        upcoming = held
            .take()
            .map_or_else(|| rx.try_recv().ok(), Some)
            .map(|first| Gathered::gather(first, &mut rx, &mut held));
        if let Some(target) = run.target() {
            let items = run.items();
            // Sent ahead only to the same target.
            let next = upcoming
                .as_ref()
                .filter(|u| u.target().is_some_and(|t| Arc::ptr_eq(t, target)))
                .map(|u| (u.id, u.items()));
            let retire = retired.take();
            let (applied, ()) = tokio::join!(
                apply_with_retry(
                    &ctx.shared,
                    &ctx.source,
                    ctx.stream,
                    target,
                    Run::new(run.id, &items),
                    next.as_ref().map(|(id, items)| Run::new(*id, items)),
                    &ctx.stop,
                    &progress.down,
                ),
                async move { drop(retire) }
            );
            if applied.is_err() {
                return;
            }
            metrics::histogram!(stats::SERVER_BATCH_SECONDS)
                .record(run.arrived.elapsed().as_secs_f64());
        }
        progress.position.store(run.upto, Ordering::Release);
        progress.queued_bytes.fetch_sub(run.bytes, Ordering::AcqRel);
        ctx.wake.notify_one();
        retired = Some(run.entries);
    }
}

/// Batches arriving within this of the newest entry share it: one entry
/// per interval, however small the batches.
const ARRIVAL_GRAIN: Duration = Duration::from_millis(100);
/// Entries kept at most; past it every two neighbours merge into one (a
/// target down for days costs a fixed amount here).
const ARRIVALS_MAX: usize = 1 << 16;

/// When batches arrived, to tell how long a lane has been behind: entries
/// `(last sequence, when)` in sequence order. An entry stands for the
/// batches that arrived within [`ARRIVAL_GRAIN`] after its time, so an age
/// read here is at most that much too old.
#[derive(Debug, Default)]
pub(crate) struct Arrivals(VecDeque<(u64, Instant)>);

impl Arrivals {
    pub(crate) fn push(&mut self, last: u64) {
        let now = Instant::now();
        if let Some((newest, at)) = self.0.back_mut() {
            if now.duration_since(*at) < ARRIVAL_GRAIN {
                *newest = last;
                return;
            }
        }
        if self.0.len() >= ARRIVALS_MAX {
            // Each merged pair keeps the older time and the later sequence.
            let merged: VecDeque<(u64, Instant)> = self
                .0
                .iter()
                .collect::<Vec<_>>()
                .chunks(2)
                .map(|pair| (pair[pair.len() - 1].0, pair[0].1))
                .collect();
            self.0 = merged;
        }
        self.0.push_back((last, now));
    }

    /// Forgets batches every lane is done with.
    pub(crate) fn trim(&mut self, done: u64) {
        while self.0.front().is_some_and(|&(last, _)| last <= done) {
            self.0.pop_front();
        }
    }

    /// How long ago the oldest record after `position` arrived (a binary
    /// search: this is asked for every lane on every message).
    pub(crate) fn behind(&self, position: u64) -> Duration {
        let i = self.0.partition_point(|&(last, _)| last <= position);
        self.0.get(i).map_or(Duration::ZERO, |(_, at)| at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_say_how_long_the_oldest_record_after_a_position_waited() {
        let mut a = Arrivals::default();
        a.push(10);
        assert!(a.behind(0) < Duration::from_secs(1));
        assert_eq!(a.behind(10), Duration::ZERO);
        // Batches within the grain share the entry: the age is the older.
        a.push(20);
        assert_eq!(a.0.len(), 1);
        assert_eq!(a.0[0].0, 20);
        a.trim(20);
        assert_eq!(a.behind(0), Duration::ZERO);
    }

    #[test]
    fn arrivals_stay_bounded_and_ordered() {
        let mut a = Arrivals::default();
        let t0 = Instant::now();
        for i in 0..(ARRIVALS_MAX as u64 + 10) {
            // Entries a grain apart, as a long outage makes them.
            a.0.push_back((i, t0 - ARRIVAL_GRAIN * 2));
        }
        a.push(ARRIVALS_MAX as u64 + 100);
        assert!(a.0.len() <= (ARRIVALS_MAX + 10) / 2 + 1, "{}", a.0.len());
        assert!(a.0.iter().zip(a.0.iter().skip(1)).all(|(x, y)| x.0 < y.0));
        // The oldest record after 0 still reads as old.
        assert!(a.behind(0) >= ARRIVAL_GRAIN * 2);
        assert_eq!(a.behind(ARRIVALS_MAX as u64 + 100), Duration::ZERO);
    }
}
