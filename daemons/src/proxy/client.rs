//! One client library connection on the unix socket.
//!
//! Frames are cut from the byte stream and validated with the engine's
//! decoder; the valid ones of each read are appended to the spool together
//! (one fsync covers them). A bad frame is logged and counted and the
//! stream goes on with the next one. An oversized length prefix is skipped
//! without buffering its payload, so the stream stays in step.
//!
//! A SYNC control frame is answered on the same socket once every frame
//! before it is in the spool, with the number of frames refused since the
//! previous SYNC: that is how a client learns its writes are safe.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use syncs_engine::op::Op;
use syncs_engine::stats;
use syncs_engine::wire::client::{
    decode_payload, parse_sync_request, sync_reply, FrameDecoder, Framed, CONTROL_MARK,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use super::spool::{Spool, SpoolError};

pub async fn serve(
    mut sock: UnixStream,
    spool: Arc<Spool>,
    max_frame: u32,
    stop: CancellationToken,
) {
    let peer = peer_pid(&sock);
    metrics::gauge!(stats::PROXY_CLIENTS).increment(1.0);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut decoder = FrameDecoder::new(max_frame);
    let mut refused = 0u64;
    let mut refused_since_sync = 0u32;
    let mut accepted: Vec<(Bytes, &'static str)> = Vec::new();
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => break,
            r = sock.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                if !decoder.is_idle(&buf) {
                    metrics::counter!(stats::PROXY_FRAMES_REFUSED, "reason" => "truncated")
                        .increment(1);
                    tracing::warn!(
                        ?peer,
                        bytes = buf.len(),
                        "client closed in the middle of a frame; partial frame discarded"
                    );
                }
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(?peer, "client read failed: {e}");
                break;
            }
        }
        while let Some(item) = decoder.decode(&mut buf) {
            match item {
                Framed::Frame(payload) if payload.first() == Some(&CONTROL_MARK) => {
                    let Some(token) = parse_sync_request(&payload) else {
                        refused += 1;
                        refused_since_sync = refused_since_sync.saturating_add(1);
                        metrics::counter!(stats::PROXY_FRAMES_REFUSED, "reason" => "bad_control")
                            .increment(1);
                        tracing::warn!(?peer, "unknown control frame refused");
                        continue;
                    };
                    refused_since_sync = refused_since_sync
                        .saturating_add(push_all(&spool, &mut accepted, peer, &mut refused).await);
                    let reply = sync_reply(token, refused_since_sync);
                    refused_since_sync = 0;
                    if let Err(e) = sock.write_all(&reply).await {
                        tracing::warn!(?peer, "cannot answer a SYNC: {e}");
                        break;
                    }
                }
                Framed::Frame(payload) => match decode_payload(&payload) {
                    Ok(op) => {
                        let kind = match op {
                            Op::Redis(_) => "redis",
                            Op::Mongo(_) => "mongo",
                        };
                        accepted.push((payload, kind));
                    }
                    Err(e) => {
                        refused += 1;
                        refused_since_sync = refused_since_sync.saturating_add(1);
                        metrics::counter!(stats::PROXY_FRAMES_REFUSED, "reason" => e.reason())
                            .increment(1);
                        if refused.is_power_of_two() {
                            tracing::warn!(?peer, refused, "bad frame refused: {e}");
                        }
                    }
                },
                Framed::Oversize { len } => {
                    refused += 1;
                    refused_since_sync = refused_since_sync.saturating_add(1);
                    metrics::counter!(stats::PROXY_FRAMES_REFUSED, "reason" => "oversize")
                        .increment(1);
                    tracing::warn!(
                        ?peer,
                        len,
                        max_frame,
                        "frame larger than max_frame refused; its bytes are skipped"
                    );
                }
            }
        }
        refused_since_sync = refused_since_sync
            .saturating_add(push_all(&spool, &mut accepted, peer, &mut refused).await);
    }
    metrics::gauge!(stats::PROXY_CLIENTS).decrement(1.0);
}

/// Appends `accepted` to the spool together (the spool keeps their order
/// and one fsync covers them all); returns how many it refused.
async fn push_all(
    spool: &Spool,
    accepted: &mut Vec<(Bytes, &'static str)>,
    peer: Option<i32>,
    refused: &mut u64,
) -> u32 {
    if accepted.is_empty() {
        return 0;
    }
    let results =
        futures::future::join_all(accepted.iter().map(|(p, _)| spool.push(p.clone()))).await;
    let mut failed = 0u32;
    for ((_, kind), result) in accepted.drain(..).zip(results) {
        match result {
            Ok(_) => metrics::counter!(stats::PROXY_FRAMES_ACCEPTED, "kind" => kind).increment(1),
            Err(e) => {
                let reason = match e {
                    SpoolError::Full { .. } => "spool_full",
                    SpoolError::TooLarge { .. } => "spool_too_large",
                    _ => "spool_failed",
                };
                metrics::counter!(stats::PROXY_FRAMES_REFUSED, "reason" => reason).increment(1);
                *refused += 1;
                failed = failed.saturating_add(1);
                if refused.is_power_of_two() {
                    tracing::error!(?peer, refused = *refused, "frame not accepted: {e}");
                }
            }
        }
    }
    failed
}

/// The client's pid, for log lines (Linux peer credentials).
fn peer_pid(sock: &UnixStream) -> Option<i32> {
    sock.peer_cred().ok().and_then(|c| c.pid())
}
