//! A sender's side of the fan-out bench: post stamped texts, flat out within the window or on a
//! schedule.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::member::RoomProgress;
use super::FanoutConfig;
use crate::bench::event::{stamp_text, Stamp};
use crate::bench::{stopped_before_done, Clock};
use crate::grpc::client::CallSender;
use crate::pb::chat::v1::ChatMessage;

/// Longest a sender held by the window waits before it looks at the members again.
const STALL_RECHECK: Duration = Duration::from_millis(1);

pub(super) struct SenderCtx {
    pub(super) room: Arc<RoomProgress>,
    pub(super) id: u32,
    pub(super) notify: Arc<Notify>,
    pub(super) clock: Clock,
}

#[derive(Default)]
pub(super) struct SenderStats {
    pub(super) posted: u64,
    /// Times the window held the sender back.
    pub(super) stalls: u64,
    pub(super) error: Option<String>,
}

pub(super) async fn run_sender(
    mut tx: CallSender,
    ctx: SenderCtx,
    cfg: Arc<FanoutConfig>,
    ticks: Option<watch::Receiver<u64>>,
    mut stop: watch::Receiver<bool>,
) -> (SenderStats, CallSender) {
    let mut stats = SenderStats::default();
    stopped_before_done(send(&mut tx, &ctx, &cfg, ticks, &mut stats), &mut stop).await;
    (stats, tx)
}

async fn send(
    tx: &mut CallSender,
    ctx: &SenderCtx,
    cfg: &FanoutConfig,
    mut ticks: Option<watch::Receiver<u64>>,
    stats: &mut SenderStats,
) {
    let window = cfg.window as u64;
    let mut slowest = 0;
    for k in 0..cfg.messages {
        if let Some(ticks) = ticks.as_mut() {
            // Post k (from 0) goes out on tick k + 1; the ticker never stops short of that.
            if ticks.wait_for(|&t| t > k as u64).await.is_err() {
                stats.error = Some("the ticker stopped".into());
                return;
            }
        }
        let mut stalled = false;
        // Window 0: a flood, held back by nothing but the server.
        if window > 0 {
            loop {
                let posted = ctx.room.posted.load(Ordering::Acquire);
                if posted < slowest + window {
                    break;
                }
                slowest = ctx.room.slowest();
                if posted < slowest + window {
                    break;
                }
                if !stalled {
                    stats.stalls += 1;
                    stalled = true;
                }
                let _ = tokio::time::timeout(STALL_RECHECK, ctx.notify.notified()).await;
            }
        }
        ctx.room.posted.fetch_add(1, Ordering::AcqRel);
        let stamp = Stamp {
            sent_ns: ctx.clock.now_ns(),
            sender: ctx.id,
        };
        let post = ChatMessage {
            text: stamp_text(stamp, cfg.size),
            ..Default::default()
        };
        if let Err(status) = tx.send(&post).await {
            stats.error = Some(status.to_string());
            return;
        }
        stats.posted += 1;
    }
}
