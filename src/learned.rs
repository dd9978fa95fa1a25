//! What the gateway learns about a provider while it runs, shared by every request to it:
//! the Code Assist project from the `loadCodeAssist` prewarm ([`crate::code_assist`]) and the
//! live model list ([`crate::catalog`]). Each is a watch channel, so a request can wait for a
//! fetch that is running.

use std::time::{Duration, Instant};

/// A provider's live model list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    pub models: Vec<String>,
    pub fetched: Option<Instant>,
    pub running: bool,
}

/// Where the prewarm of a provider is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Prewarm {
    #[default]
    NotStarted,
    Running,
    /// The project learned (`None`: the prewarm failed or the account has none).
    Done(Option<String>),
}

/// What a provider learned at run time (shared by every request to it): the Code Assist
/// project, the live model list.
#[derive(Debug)]
pub struct Learned {
    prewarm: tokio::sync::watch::Sender<Prewarm>,
    /// The provider's live model list (`crate::catalog`).
    pub live_models: tokio::sync::watch::Sender<Live>,
}

impl Default for Learned {
    fn default() -> Self {
        Self {
            prewarm: tokio::sync::watch::channel(Prewarm::NotStarted).0,
            live_models: tokio::sync::watch::channel(Live::default()).0,
        }
    }
}

impl Learned {
    /// Mark the prewarm as running: requests from now on wait for its outcome.
    pub fn prewarm_started(&self) {
        self.prewarm.send_replace(Prewarm::Running);
    }

    pub fn set_project(&self, project: Option<String>) {
        self.prewarm.send_replace(Prewarm::Done(project));
    }

    /// The Code Assist project; while the prewarm runs, waits for it (at most `wait`), so
    /// the first requests after start carry the project too.
    pub async fn project(&self, wait: Duration) -> Option<String> {
        let mut rx = self.prewarm.subscribe();
        if *rx.borrow() == Prewarm::Running {
            let _ = tokio::time::timeout(wait, rx.wait_for(|p| *p != Prewarm::Running)).await;
        }
        let state = rx.borrow().clone();
        match state {
            Prewarm::Done(p) => p,
            _ => None,
        }
    }
}
