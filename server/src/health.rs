//! Readiness: whether this node can do its work now — reach storage and, in a cluster, publish
//! and receive on the bus. Background probes keep [`Health`] current; `/readyz` answers from
//! it, and metrics export it (`parley_ready`, and `parley_component_up` per component).
//!
//! A probe runs every [`PROBE_EVERY`]; a component is down as soon as a probe fails or has no
//! answer within [`PROBE_TIMEOUT`], and up again after the next probe that succeeds. Storage
//! is also down while the journal keeps delivered messages it cannot write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use crate::bus::Bus;
use crate::store::{self, Store};

/// Time between two probes of a component.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A probe without an answer this long marks its component down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A part of the node that must work for it to be ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The store (SQLite or PostgreSQL), reads and writes.
    Storage,
    /// The cluster bus (Redis): publishing and subscribing.
    Bus,
}

impl Component {
    /// Its name in `/readyz` and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Component::Storage => "storage",
            Component::Bus => "bus",
        }
    }
}

/// Whether each component works, as last probed. Written by the probe tasks, read by every
/// `/readyz` request and metrics scrape: atomics, since readers want only the latest value.
#[derive(Debug)]
pub struct Health {
    storage: AtomicBool,
    /// `None` when the node runs alone (no `--cluster`).
    bus: Option<AtomicBool>,
}

impl Health {
    /// Every component up; `clustered`: the node has a bus.
    pub fn new(clustered: bool) -> Arc<Self> {
        Arc::new(Self {
            storage: AtomicBool::new(true),
            bus: clustered.then(|| AtomicBool::new(true)),
        })
    }

    /// This node's components and whether each is up (`parley_component_up{component=…}`).
    pub fn components(&self) -> Vec<(&'static str, bool)> {
        let mut all = vec![(Component::Storage.name(), self.is_up(Component::Storage))];
        if self.bus.is_some() {
            all.push((Component::Bus.name(), self.is_up(Component::Bus)));
        }
        all
    }

    /// Every component is up.
    pub fn is_ready(&self) -> bool {
        self.components().iter().all(|(_, up)| *up)
    }

    /// One line per component that is down. `/readyz` answers anyone, so the reason (which
    /// may name hosts and ports) goes to the log only, when the component goes down.
    pub fn report(&self) -> String {
        let down: String = [Component::Storage, Component::Bus]
            .into_iter()
            .filter(|&c| !self.is_up(c))
            .map(|c| format!("{} down: the reason is in the node's log\n", c.name()))
            .collect();
        if down.is_empty() {
            "ready\n".to_owned()
        } else {
            down
        }
    }

    /// Whether `component` is up (a component this node lacks is).
    pub fn is_up(&self, component: Component) -> bool {
        self.flag(component)
            .is_none_or(|flag| flag.load(Ordering::Relaxed))
    }

    /// Records a probe's outcome, logging changes.
    pub fn set(&self, component: Component, outcome: Result<(), String>) {
        let Some(flag) = self.flag(component) else {
            return;
        };
        let up = outcome.is_ok();
        let was = flag.swap(up, Ordering::Relaxed);
        match (&outcome, was) {
            (Err(why), true) => warn!(component = component.name(), %why, "not ready"),
            (Ok(()), false) => info!(component = component.name(), "back: ready"),
            _ => {}
        }
    }

    fn flag(&self, component: Component) -> Option<&AtomicBool> {
        match component {
            Component::Storage => Some(&self.storage),
            Component::Bus => self.bus.as_ref(),
        }
    }
}

/// Starts the probes of `health`'s components; they end when `health` is dropped.
/// `journal_failing` is the journal's flag (set while writes fail).
pub fn start_probes(
    health: &Arc<Health>,
    store: Arc<dyn Store>,
    journal_failing: Arc<AtomicBool>,
    bus: Option<Arc<Bus>>,
) {
    tokio::spawn(probe_storage(
        Arc::downgrade(health),
        store,
        journal_failing,
    ));
    if let Some(bus) = bus {
        tokio::spawn(probe_bus(Arc::downgrade(health), bus));
    }
}

/// Asks storage for `SELECT 1` every [`PROBE_EVERY`]. A query without an answer marks storage
/// down at the timeout; the next one starts only once it ended (at worst when the pool's own
/// connection timeout ends it), so probes never pile up on the blocking pool.
async fn probe_storage(
    health: Weak<Health>,
    store: Arc<dyn Store>,
    journal_failing: Arc<AtomicBool>,
) {
    loop {
        let store = store.clone();
        let mut ping = tokio::spawn(async move { store::run(&store, |s| s.ping()).await });
        let answered = match tokio::time::timeout(PROBE_TIMEOUT, &mut ping).await {
            Ok(answered) => answered,
            Err(_) => {
                let Some(health) = health.upgrade() else {
                    return;
                };
                let late = format!("no answer within {PROBE_TIMEOUT:?}");
                health.set(Component::Storage, Err(late));
                drop(health);
                ping.await
            }
        };
        let outcome = match answered {
            Ok(Ok(())) if journal_failing.load(Ordering::Relaxed) => {
                Err("writes fail (the journal retries them)".to_owned())
            }
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("{error:#}")),
            Err(error) => Err(format!("probe failed: {error}")),
        };
        let Some(health) = health.upgrade() else {
            return;
        };
        health.set(Component::Storage, outcome);
        drop(health);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Asks the bus whether it can publish and subscribe every [`PROBE_EVERY`].
async fn probe_bus(health: Weak<Health>, bus: Arc<Bus>) {
    loop {
        let outcome = bus.probe(PROBE_TIMEOUT).await;
        let Some(health) = health.upgrade() else {
            return;
        };
        health.set(Component::Bus, outcome);
        drop(health);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_down_makes_the_node_unready_and_says_which() {
        let health = Health::new(true);
        assert!(health.is_ready());
        assert_eq!(health.components(), vec![("storage", true), ("bus", true)]);
        health.set(
            Component::Bus,
            Err("no answer from Redis at redis://r:6379".into()),
        );
        assert!(!health.is_ready());
        // The body anyone can read names the part, not the error (hosts, ports).
        assert_eq!(
            health.report(),
            "bus down: the reason is in the node's log\n"
        );
        assert_eq!(health.components(), vec![("storage", true), ("bus", false)]);
        health.set(Component::Bus, Ok(()));
        assert!(health.is_ready());
        assert_eq!(health.report(), "ready\n");
    }

    #[test]
    fn a_node_alone_has_no_bus_to_wait_for() {
        let health = Health::new(false);
        health.set(Component::Bus, Err("ignored".into()));
        assert!(health.is_ready());
        assert_eq!(health.components(), vec![("storage", true)]);
    }
}
