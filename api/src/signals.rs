//! Cross-node signals over core NATS (`NATS_URL`): what one node does that other nodes of the
//! same store must hear at once.
//!
//! | signal | sent when | a receiving node |
//! |---|---|---|
//! | `appended` | this node appended to the log | wakes its projections (it may lead one) |
//! | `applied` | this node, leading projections, applied a batch (with their positions) | raises its standby positions and wakes its waiters (read-your-writes) |
//! | `erased` | a customer was erased here | drops the subject's key and the customer's cached aggregate |
//! | `user_changed` | a user's role, activity or sessions changed here | drops the user's cached aggregate |
//!
//! Signals are hints, never the truth: every decision still reads the store (a stale cached
//! aggregate is caught by the append's version check, a destroyed key by the key table). They
//! only make the other nodes act now instead of at their next poll or cache miss. Without
//! NATS, or while it is down, nodes fall back to polling (`EGEC_PROJECTION_POLL_MS`) and say so
//! in `/readyz` (`signals`) and the gauge `egec_signals_connected`. An erasure signal missed
//! that way leaves the destroyed key usable in another node's key cache for at most
//! `egec_commands::vault::KEY_CACHE_TTL` (30 s).
//!
//! Messages carry ids and positions only, never personal data. Each node ignores its own.

use crate::state::AppState;
use egec_domain::UserId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a signal may wait to be handed to the NATS client; past it, it is dropped (a
/// signal is a hint, and requests must never wait on the bus).
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    Appended {
        position: i64,
    },
    /// The positions the sender's led projections have applied, by projection name.
    Applied {
        positions: std::collections::BTreeMap<String, i64>,
    },
    Erased {
        subject: String,
        stream: String,
    },
    UserChanged {
        user_id: Uuid,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The sending node, so that it ignores its own signals.
    node: Uuid,
    #[serde(flatten)]
    signal: Signal,
}

/// This node's side of the signals: `None` inside when no `NATS_URL` is set.
#[derive(Clone)]
pub struct Signals {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    client: async_nats::Client,
    subject: String,
    node: Uuid,
}

impl Signals {
    /// No bus: every node polls.
    pub fn off() -> Signals {
        Signals { inner: None }
    }

    /// Connects in the background (a NATS that is down at start-up only means polling until
    /// it is up) and reconnects for ever, at most a second apart.
    pub async fn connect(url: &str, subject: &str) -> anyhow::Result<Signals> {
        let client = async_nats::ConnectOptions::new()
            .name("egec")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * (attempts as u64).min(10))
            })
            .connect(url)
            .await?;
        Ok(Signals {
            inner: Some(Arc::new(Inner {
                client,
                subject: subject.to_owned(),
                node: Uuid::now_v7(),
            })),
        })
    }

    /// `nats` when signals flow, `polling (NATS unavailable)` while the bus is down, `polling`
    /// without a bus.
    pub fn status(&self) -> &'static str {
        match &self.inner {
            None => "polling",
            Some(i) if i.connected() => "nats",
            Some(_) => "polling (NATS unavailable)",
        }
    }

    /// Sends a signal to the other nodes without waiting for it (and drops it if the bus
    /// cannot take it soon).
    pub fn send(&self, signal: Signal) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        tokio::spawn(async move { inner.send(signal).await });
    }

    /// A customer's key was destroyed here: other nodes drop it and the cached aggregate.
    pub fn erased(&self, subject: &str, stream: &str) {
        self.send(Signal::Erased {
            subject: subject.to_owned(),
            stream: stream.to_owned(),
        });
    }

    /// A user changed here (role, activity, sessions): other nodes drop what they cached.
    pub fn user_changed(&self, user: UserId) {
        self.send(Signal::UserChanged {
            user_id: user.as_uuid(),
        });
    }
}

impl Inner {
    fn connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    async fn send(&self, signal: Signal) {
        let message = Message {
            node: self.node,
            signal,
        };
        let Ok(body) = serde_json::to_vec(&message) else {
            return;
        };
        match tokio::time::timeout(
            SEND_TIMEOUT,
            self.client.publish(self.subject.clone(), body.into()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "signal not sent"),
            Err(_) => tracing::debug!("signal not sent: the bus is not taking messages"),
        }
    }
}

/// Starts this node's signal tasks: one sends `appended` and `applied` as the local log head
/// and the local projections move, one acts on other nodes' signals, one keeps the gauge.
pub fn spawn(state: &AppState) {
    let Some(inner) = state.signals.inner.clone() else {
        metrics::gauge!("egec_signals_connected").set(0.0);
        return;
    };
    let mut head = state.bus.appender().subscribe_head();
    let mut progress = state.runner.subscribe_progress();
    let sender = inner.clone();
    let runner = state.runner.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() { break; }
                    let position = *head.borrow_and_update();
                    sender.send(Signal::Appended { position }).await;
                }
                changed = progress.changed() => {
                    if changed.is_err() { break; }
                    progress.borrow_and_update();
                    let positions = runner
                        .led_positions()
                        .into_iter()
                        .map(|(name, p)| (name.to_owned(), p))
                        .collect();
                    sender.send(Signal::Applied { positions }).await;
                }
            }
        }
    });

    let receiver = inner.clone();
    let state_rx = state.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        // Subscribing succeeds while disconnected too: the client replays subscriptions on
        // every reconnect.
        let mut sub = loop {
            match receiver.client.subscribe(receiver.subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to signals; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while let Some(msg) = sub.next().await {
            let Ok(m) = serde_json::from_slice::<Message>(&msg.payload) else {
                tracing::debug!("ignored a malformed signal");
                continue;
            };
            if m.node != receiver.node {
                act(&state_rx, m.signal);
            }
        }
    });

    let watched = inner;
    let waker = state.runner.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last = None;
        loop {
            tick.tick().await;
            let up = watched.connected();
            metrics::gauge!("egec_signals_connected").set(if up { 1.0 } else { 0.0 });
            if last.is_some() && last != Some(up) {
                if up {
                    tracing::info!("NATS is back: nodes signal each other again");
                    // What other nodes did while the bus was down: look now.
                    waker.wake();
                } else {
                    tracing::warn!("NATS is down: nodes fall back to polling");
                }
            }
            last = Some(up);
        }
    });
}

/// What a node does on another node's signal.
fn act(state: &AppState, signal: Signal) {
    match signal {
        Signal::Appended { .. } => state.runner.wake(),
        Signal::Applied { positions } => {
            for (name, position) in positions {
                state.runner.observe_remote(&name, position);
            }
            state.runner.wake();
        }
        Signal::Erased { subject, stream } => {
            state.bus.codec().vault().forget(&subject);
            state.bus.forget(&stream);
        }
        Signal::UserChanged { user_id } => {
            state.bus.forget(&UserId::from_uuid(user_id).stream_id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_carry_ids_and_positions_in_a_stable_shape() {
        let m = Message {
            node: Uuid::nil(),
            signal: Signal::Erased {
                subject: "customer-1".into(),
                stream: "customer-1".into(),
            },
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "node": Uuid::nil(), "kind": "erased",
                "subject": "customer-1", "stream": "customer-1"
            })
        );
        let back: Message = serde_json::from_value(json).unwrap();
        assert_eq!(back.signal, m.signal);
        let applied: Message = serde_json::from_str(
            r#"{"node":"00000000-0000-0000-0000-000000000000","kind":"applied","positions":{"audit":7}}"#,
        )
        .unwrap();
        assert_eq!(
            applied.signal,
            Signal::Applied {
                positions: [("audit".to_owned(), 7)].into()
            }
        );
    }
}
