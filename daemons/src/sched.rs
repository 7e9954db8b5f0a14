//! The proxy's CPU scheduling policy.
//!
//! The proxy shares its machine with the application it serves. Under the
//! default policy (`SCHED_OTHER`), every frame an unbuffered client sends
//! wakes the proxy, and the kernel lets the woken proxy preempt the client
//! on the spot: the client is switched out after each send, and the proxy
//! reads one frame per wake-up. `SCHED_BATCH` (sched(7)) keeps everything
//! else of the default policy, nice value included, but a woken batch
//! thread does not preempt the running one: it takes an idle core, or
//! waits for the tick or for the client to block. The client goes on
//! writing, the proxy reads many frames per wake-up, and both spend less
//! CPU per write (docs/benchmarks.md: +30–50 % unbuffered throughput, the
//! proxy's CPU per write halved, latency at 10,000 and 100,000 writes/s no
//! worse). Threads inherit the policy, so it is set before any is started.

use thread_priority::unix::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
    ThreadSchedulePolicy,
};
use thread_priority::{ThreadPriority, ThreadPriorityValue};

/// The scheduling policy the daemon asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedPolicy {
    /// `SCHED_BATCH`: woken threads do not preempt the application.
    Batch,
    /// Leave the policy as the daemon was started with.
    Inherit,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("reading the nice value: {0}")]
    Nice(#[source] std::io::Error),
    #[error("nice value {0} cannot be kept")]
    NoSuchNice(i32),
    #[error("setting the scheduling policy: {0:?}")]
    Policy(thread_priority::Error),
}

/// Applies `policy` to the calling thread (and so to every thread it
/// starts later). Call it before starting any thread.
pub fn apply(policy: SchedPolicy) -> Result<(), SchedError> {
    match policy {
        SchedPolicy::Inherit => Ok(()),
        SchedPolicy::Batch => batch(),
    }
}

/// Takes the calling thread out of `SCHED_BATCH`, back to the default
/// policy with the same nice value; a thread under any other policy is
/// left as it is. For a thread whose wake-ups must not wait behind the
/// application: the proxy's links (proxy/mod.rs), which keep the target
/// fed while many clients write.
pub fn unbatch_current_thread() -> Result<(), SchedError> {
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    match thread_priority::unix::thread_schedule_policy() {
        Ok(p) if p == batch => normal(NormalThreadSchedulePolicy::Other),
        _ => Ok(()),
    }
}

fn batch() -> Result<(), SchedError> {
    normal(NormalThreadSchedulePolicy::Batch)
}

/// Sets a normal (non real-time) policy on the calling thread.
fn normal(kind: NormalThreadSchedulePolicy) -> Result<(), SchedError> {
    // thread-priority sets a normal policy together with a nice value (its
    // "priority" for these policies): it is given the one the daemon runs
    // with (systemd's `Nice=`, `nice proxy …`), so that nothing else
    // changes and no privilege is needed.
    let nice =
        rustix::process::getpriority_process(None).map_err(|e| SchedError::Nice(e.into()))?;
    let policy = ThreadSchedulePolicy::Normal(kind);
    let same = (0..=*ThreadPriorityValue::MAX)
        .filter_map(|p| ThreadPriorityValue::try_from(p).ok())
        .map(ThreadPriority::Crossplatform)
        .find(|p| p.to_posix(policy).ok() == Some(nice))
        .ok_or(SchedError::NoSuchNice(nice))?;
    set_thread_priority_and_policy(thread_native_id(), same, policy).map_err(SchedError::Policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::unix::thread_schedule_policy;

    #[test]
    fn batch_keeps_the_nice_value_and_passes_to_new_threads() {
        // On a thread of its own: the policy stays with that thread.
        std::thread::spawn(|| {
            // Lowering priority needs no privilege.
            rustix::process::setpriority_process(None, 3).expect("nice 3");
            apply(SchedPolicy::Batch).expect("SCHED_BATCH");
            let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
            assert_eq!(thread_schedule_policy().expect("policy"), batch);
            assert_eq!(rustix::process::getpriority_process(None).expect("nice"), 3);
            let child = std::thread::spawn(move || {
                (
                    thread_schedule_policy().expect("policy"),
                    rustix::process::getpriority_process(None).expect("nice"),
                )
            });
            assert_eq!(child.join().expect("child"), (batch, 3));
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn every_nice_value_can_be_kept() {
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        let reachable: std::collections::BTreeSet<i32> = (0..=*ThreadPriorityValue::MAX)
            .filter_map(|p| ThreadPriorityValue::try_from(p).ok())
            .filter_map(|p| ThreadPriority::Crossplatform(p).to_posix(policy).ok())
            .collect();
        assert_eq!(reachable, (-20..=19).collect());
    }

    #[test]
    fn unbatch_restores_the_default_policy_and_keeps_the_nice_value() {
        std::thread::spawn(|| {
            rustix::process::setpriority_process(None, 4).expect("nice 4");
            let other = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
            // Not batch: nothing changes.
            assert_eq!(thread_schedule_policy().expect("policy"), other);
            unbatch_current_thread().expect("nothing to do");
            assert_eq!(thread_schedule_policy().expect("policy"), other);
            apply(SchedPolicy::Batch).expect("SCHED_BATCH");
            unbatch_current_thread().expect("back to SCHED_OTHER");
            assert_eq!(thread_schedule_policy().expect("policy"), other);
            assert_eq!(rustix::process::getpriority_process(None).expect("nice"), 4);
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn inherit_changes_nothing() {
        std::thread::spawn(|| {
            let before = thread_schedule_policy().expect("policy");
            apply(SchedPolicy::Inherit).expect("nothing to do");
            assert_eq!(thread_schedule_policy().expect("policy"), before);
        })
        .join()
        .expect("test thread");
    }
}
