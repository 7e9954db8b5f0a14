//! One proxy connection: handshake, then batches handed to the stream's
//! lanes (one per target, `lane.rs`) and acknowledged as the slowest lane
//! advances.
//!
//! A stream belongs to one session at a time: a new connection with the
//! same stream id (the proxy reconnected) cancels the old session, waits
//! until its lanes have finished their runs in hand, and continues from
//! each target's position.
//!
//! A version 3 proxy also gets TAKEN (records applied at every target
//! that keeps up: its send window moves on past a target that lags, and
//! waits for those that keep up, so a target that is up holds at most a
//! window of records here) and REWIND (send again from a sequence: a
//! lagging target's backlog ran out of room and has drained).
//! A version 1 or 2 proxy gets neither: its window follows the ACK, and a
//! rewind closes its session so that it resends from WELCOME.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use syncs_engine::stats;
use syncs_engine::wire::peer::{
    refuse, Message, PeerCodec, PeerError, LANES_VERSION, MIN_VERSION, VERSION,
};
use tokio::sync::Notify;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::batch::{prepare_batch, Prepared, RUN_RECORDS};
use super::lane::{Arrivals, Entry, Lane, LaneContext};
use super::Shared;
use crate::security::server::PRE_SESSION_DEADLINE;

/// Protocol overhead allowed above the largest record in one message.
const PEER_SLACK: u64 = 1 << 20;
/// How often the per-target gauges are brought up to date (and whether a
/// lane has started to lag looked at again).
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// A lane whose oldest queued record has waited longer than this lags: the
/// proxy's window no longer waits for it.
const LAG_GRACE: Duration = Duration::from_secs(1);
/// Bytes (as `target_backlog` counts them) a lane that keeps up may have
/// queued before the session stops reading batches, while the rest of the
/// proxy's window waits in the socket: three full runs of small records
/// (~400 bytes each, as counted), the one at the target, the one sent
/// ahead of it (redis/ahead.rs in the engine) and the one after, being
/// prepared. With 4 MiB the queue held one run and the next was never
/// there in time to be sent ahead.
const KEEP_UP_QUEUE: usize = 12 << 20;

/// The largest message before authentication: HELLO and AUTH (a token of
/// at most 4 KiB) fit many times over.
const PRE_AUTH_LIMIT: u64 = 64 * 1024;

/// A stream's place in the server.
#[derive(Debug, Default)]
pub struct StreamSlot {
    state: tokio::sync::Mutex<StreamState>,
    owner: std::sync::Mutex<Option<CancellationToken>>,
}

/// What the server remembers of a stream between its sessions.
#[derive(Debug, Default)]
struct StreamState {
    /// Every record up to here has been decoded, routed, and its refusals
    /// and drops written down; later copies of them are only routed again.
    prepared_upto: u64,
    /// Per target (by name): every record up to here is done there.
    positions: HashMap<String, u64>,
}

impl StreamState {
    /// What every target is done with: the ACK.
    fn applied(&self) -> u64 {
        lowest(self.positions.values().copied(), self.prepared_upto)
    }
}

/// The lowest of `marks` (one per target), never above `prepared_upto`;
/// with no target, `prepared_upto` itself.
fn lowest(marks: impl Iterator<Item = u64>, prepared_upto: u64) -> u64 {
    marks.min().unwrap_or(prepared_upto).min(prepared_upto)
}

/// Runs one session on a connection whose transport (TLS or plaintext) is
/// set up: HELLO, then AUTH and the token check (both by `deadline`), then
/// WELCOME and batches.
pub async fn run(
    socket: crate::security::BoxIo,
    peer: SocketAddr,
    shared: Arc<Shared>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    // Until the peer is authenticated nothing it sends may cost more than
    // a small message; the configured limit applies after.
    let mut framed = Framed::new(socket, PeerCodec::new(PRE_AUTH_LIMIT));
    let Ok(hello) = tokio::time::timeout_at(deadline, framed.next()).await else {
        metrics::counter!(stats::SERVER_AUTH_FAILURES, "reason" => "hello_timeout").increment(1);
        bail!("{peer}: no HELLO within {PRE_SESSION_DEADLINE:?} of connecting");
    };
    let (stream, name, version) = match hello {
        Some(Ok(Message::Hello {
            version,
            stream,
            name,
        })) => {
            if !(MIN_VERSION..=VERSION).contains(&version) {
                let reason = format!(
                    "this server speaks protocol versions {MIN_VERSION} to {VERSION}, not {version}"
                );
                let _ = framed
                    .send(Message::Refuse {
                        code: refuse::BAD_VERSION,
                        reason: reason.clone(),
                    })
                    .await;
                bail!("{peer}: {reason}");
            }
            // Refused here (REFUSE sent, counted) before any BATCH is read.
            shared
                .security
                .authenticate(&mut framed, version, peer, deadline)
                .await?;
            framed
                .codec_mut()
                .set_max_len(u64::from(shared.max_frame) * 2 + PEER_SLACK);
            (stream, name, version)
        }
        Some(Ok(other)) => {
            metrics::counter!(stats::SERVER_AUTH_FAILURES, "reason" => "bad_message").increment(1);
            let _ = framed
                .send(Message::Refuse {
                    code: refuse::BAD_MESSAGE,
                    reason: "expected HELLO".into(),
                })
                .await;
            bail!("{peer}: expected HELLO, got {other:?}");
        }
        Some(Err(e)) => {
            metrics::counter!(stats::SERVER_AUTH_FAILURES, "reason" => "bad_message").increment(1);
            bail!("{peer}: bad HELLO: {e}")
        }
        None => return Ok(()),
    };
    let source = format!("{name}/{stream:016x}");
    let slot = {
        let mut streams = shared.streams.lock().await;
        Arc::clone(streams.entry(stream).or_default())
    };
    let mine = shared.stop.child_token();
    if let Ok(mut owner) = slot.owner.lock() {
        if let Some(old) = owner.replace(mine.clone()) {
            old.cancel();
        }
    }
    let mut state = slot.state.lock().await;
    let welcome = state.applied();
    framed
        .send(Message::Welcome {
            // The proxy's own version: a version 1 proxy expects 1.
            version,
            last_applied: welcome,
        })
        .await?;
    tracing::info!(%peer, %source, last_applied = welcome, "proxy connected");

    let ctx = LaneContext {
        shared: Arc::clone(&shared),
        source: source.into(),
        stream,
        stop: mine.clone(),
        wake: Arc::new(Notify::new()),
    };
    let mut session = Session {
        lanes: state
            .positions
            .iter()
            .map(|(name, &at)| Lane::spawn(name.clone(), at, &ctx))
            .collect(),
        prepared_upto: state.prepared_upto,
        acked: welcome,
        taken: welcome,
        arrivals: Arrivals::default(),
        ctx,
        version,
    };
    let outcome = session.serve(&mut framed, &mine).await;
    // Every way out (the proxy gone, a read or write error, a bad message,
    // a stop) comes here: each lane finishes its run in hand, so a run
    // whose EXEC may have been sent is never dropped, and the positions
    // kept are what the targets have.
    state.prepared_upto = session.prepared_upto;
    state.positions.clear();
    for lane in session.lanes {
        let name = lane.name.clone();
        let at = lane.finish().await;
        state.positions.insert(name, at);
    }
    tracing::info!(source = %session.ctx.source, last_applied = state.applied(), "proxy session closed");
    outcome
}

/// One session's working state.
struct Session {
    lanes: Vec<Lane>,
    /// See [`StreamState::prepared_upto`].
    prepared_upto: u64,
    /// The last ACK sent (or WELCOME's position).
    acked: u64,
    /// The last TAKEN sent.
    taken: u64,
    arrivals: Arrivals,
    ctx: LaneContext,
    /// The proxy's protocol version.
    version: u16,
}

type Conn = Framed<crate::security::BoxIo, PeerCodec>;

impl Session {
    async fn serve(&mut self, framed: &mut Conn, mine: &CancellationToken) -> anyhow::Result<()> {
        let wake = Arc::clone(&self.ctx.wake);
        let mut gauges = tokio::time::interval(GAUGE_EVERY);
        // A message read while gathering batches, to handle next.
        let mut held = None;
        loop {
            // Lanes that keep up have enough queued: the next batch waits
            // in the socket (they will ask for it as they apply), not here.
            let room = self.has_room();
            let msg = if let Some(m) = held.take() {
                m
            } else {
                tokio::select! {
                    _ = mine.cancelled() => return Ok(()),
                    _ = wake.notified() => {
                        self.progress(framed).await?;
                        continue;
                    }
                    _ = gauges.tick() => {
                        self.gauges();
                        // A lane may have started to lag since: TAKEN
                        // no longer waits for it.
                        self.progress(framed).await?;
                        continue;
                    }
                    m = framed.next(), if room => m,
                }
            };
            match msg {
                None => return Ok(()),
                Some(Ok(Message::Batch {
                    first_seq,
                    mut records,
                })) => {
                    // Batches already waiting join this one (in sequence),
                    // so a busy server applies fewer, larger runs.
                    while records.len() < RUN_RECORDS {
                        match framed.next().now_or_never() {
                            None => break,
                            Some(Some(Ok(Message::Batch {
                                first_seq: next,
                                records: more,
                            }))) if next == first_seq + records.len() as u64 => {
                                records.extend(more)
                            }
                            Some(other) => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    if !records.is_empty() {
                        self.take(first_seq, &records).await;
                    }
                    self.progress(framed).await?;
                }
                Some(Ok(other)) => {
                    let _ = framed
                        .send(Message::Refuse {
                            code: refuse::BAD_MESSAGE,
                            reason: "expected BATCH".into(),
                        })
                        .await;
                    bail!("{}: unexpected {other:?}", self.ctx.source);
                }
                Some(Err(PeerError::Io(e))) => {
                    // Reset or cut: nothing was refused, the proxy
                    // reconnects and WELCOME tells it where to go on.
                    metrics::counter!(stats::SERVER_CONNECTION_ERRORS).increment(1);
                    bail!("{}: connection lost: {e}", self.ctx.source);
                }
                Some(Err(e)) => {
                    metrics::counter!(stats::SERVER_BAD_RECORDS, "reason" => "bad_peer_message")
                        .increment(1);
                    let _ = framed
                        .send(Message::Refuse {
                            code: refuse::BAD_MESSAGE,
                            reason: e.to_string(),
                        })
                        .await;
                    bail!("{}: {e}", self.ctx.source);
                }
            }
        }
    }

    /// Decodes and routes a batch and hands each lane the part it has not
    /// had yet, if it has room for it.
    async fn take(&mut self, first: u64, records: &[Bytes]) {
        let last = first + records.len() as u64 - 1;
        let source = &self.ctx.source;
        if first > self.prepared_upto + 1 && self.prepared_upto != 0 {
            tracing::error!(
                %source, first, prepared = self.prepared_upto,
                "sequence gap: records {}..{} never arrived (a proxy whose machine \
                 crashed skips the sequences it may have used: see its log)",
                self.prepared_upto + 1, first - 1
            );
        }
        // One snapshot for the lanes and the routing: a target a reload
        // adds between the two would get operations no lane takes.
        let snap = self.ctx.shared.rules.current();
        // Targets of the rules that have no lane yet start here.
        for def in snap.rules.targets() {
            if !self.lanes.iter().any(|l| l.name == def.name) {
                self.lanes
                    .push(Lane::spawn(def.name.clone(), first - 1, &self.ctx));
            }
        }
        // Nothing at or below every lane's queue is needed again.
        let needed_from = lowest(self.lanes.iter().map(|l| l.queued_upto), self.prepared_upto);
        let prepared = prepare_batch(
            &self.ctx.shared,
            snap,
            source,
            needed_from,
            self.prepared_upto,
            first,
            records,
        )
        .await;
        if last > self.prepared_upto {
            self.arrivals.push(last);
        }
        let Prepared {
            snap,
            mut per_target,
            started,
            ..
        } = prepared;
        let backlog = self.ctx.shared.target_backlog;
        for lane in &mut self.lanes {
            // Nothing new for it, or a hole before this batch: it ran out
            // of room earlier and waits for a REWIND. (A hole in the
            // stream itself, after a proxy's machine crashed, is no hole
            // for a lane that has had every record before it.)
            let behind = lane.queued_upto < self.prepared_upto;
            if lane.queued_upto >= last {
                continue;
            }
            if behind && lane.queued_upto + 1 < first {
                metrics::counter!(stats::SERVER_TARGET_SPILLED, "target" => lane.name.clone())
                    .increment(last + 1 - first);
                continue;
            }
            let index = snap.rules.target_id(&lane.name);
            let (items, bytes) = index
                .and_then(|id| per_target.get_mut(usize::from(id.0)))
                .map(|(items, bytes)| (std::mem::take(items), *bytes))
                .unwrap_or_default();
            let items: Vec<_> = items
                .into_iter()
                .filter(|(seq, _)| *seq > lane.queued_upto)
                .collect();
            if lane.queued_bytes() > 0 && lane.queued_bytes() + bytes > backlog {
                // No room: the lane holds what it has, and the rest is
                // asked again once that is done.
                metrics::counter!(stats::SERVER_TARGET_SPILLED, "target" => lane.name.clone())
                    .increment(last - lane.queued_upto);
                continue;
            }
            lane.push(Entry {
                upto: last,
                target: index.and_then(|id| snap.targets.get(id)).cloned(),
                items,
                bytes,
                arrived: started,
            });
        }
        self.prepared_upto = self.prepared_upto.max(last);
    }

    /// After a lane moved (or a batch was taken): ACK what every target
    /// is done with, and ask again for what a drained lane had no room for.
    async fn progress(&mut self, framed: &mut Conn) -> anyhow::Result<()> {
        for lane in &self.lanes {
            lane.skip_idle();
        }
        let applied = lowest(self.lanes.iter().map(Lane::position), self.prepared_upto);
        if applied > self.acked {
            self.acked = applied;
            self.arrivals.trim(applied);
            framed.send(Message::Ack { seq: applied }).await?;
        }
        // TAKEN: the proxy's window moves on past the lanes that lag (their
        // queues take records up to their cap, then spill), but waits for
        // the lanes that keep up, so that a target that is up holds at
        // most a window of records in the server, however fast they come.
        if self.version >= LANES_VERSION {
            let keeping_up = self
                .lanes
                .iter()
                .filter(|l| !self.lags(l))
                .map(Lane::position)
                .min();
            if let Some(taken) = keeping_up.filter(|&t| t > self.taken.max(applied)) {
                self.taken = taken;
                framed.send(Message::Taken { seq: taken }).await?;
            }
        }
        let rewind = self
            .lanes
            .iter()
            .filter(|l| {
                l.drained()
                    && l.queued_upto < self.prepared_upto
                    && l.rewound != Some(l.queued_upto + 1)
            })
            .map(|l| l.queued_upto + 1)
            .min();
        if let Some(from) = rewind {
            metrics::counter!(stats::SERVER_REWINDS).increment(1);
            if self.version < LANES_VERSION {
                bail!(
                    "{}: a target's backlog ran out of room; closing so that the proxy \
                     (protocol version {}) sends again from {}",
                    self.ctx.source,
                    self.version,
                    self.acked + 1
                );
            }
            tracing::info!(source = %self.ctx.source, from, "asking the proxy to send again for a target that lagged");
            for lane in &mut self.lanes {
                if lane.drained() && lane.queued_upto < self.prepared_upto {
                    lane.rewound = Some(lane.queued_upto + 1);
                }
            }
            framed.send(Message::Rewind { seq: from }).await?;
        }
        Ok(())
    }

    /// Whether every lane that keeps up has less than [`KEEP_UP_QUEUE`]
    /// queued (a lane that lags takes records up to its backlog cap).
    fn has_room(&self) -> bool {
        self.lanes
            .iter()
            .all(|l| l.queued_bytes() < KEEP_UP_QUEUE || self.lags(l))
    }

    /// Whether a lane lags: its target fails, or a record has waited in
    /// its queue longer than [`LAG_GRACE`] (a target that is slow).
    fn lags(&self, lane: &Lane) -> bool {
        lane.down_for().is_some() || self.arrivals.behind(lane.position()) > LAG_GRACE
    }

    /// Brings the per-target gauges up to date.
    fn gauges(&self) {
        let source = self.ctx.source.to_string();
        for lane in &self.lanes {
            let labels = [("source", source.clone()), ("target", lane.name.clone())];
            let at = lane.position();
            metrics::gauge!(stats::SERVER_TARGET_POSITION, &labels).set(at as f64);
            metrics::gauge!(stats::SERVER_TARGET_BEHIND_RECORDS, &labels)
                .set(self.prepared_upto.saturating_sub(at) as f64);
            metrics::gauge!(stats::SERVER_TARGET_BEHIND_SECONDS, &labels)
                .set(self.arrivals.behind(at).as_secs_f64());
            metrics::gauge!(stats::SERVER_TARGET_DOWN_SECONDS, &labels)
                .set(lane.down_for().unwrap_or_default().as_secs_f64());
            metrics::gauge!(stats::SERVER_TARGET_BACKLOG_BYTES, &labels)
                .set(lane.queued_bytes() as f64);
        }
    }
}
