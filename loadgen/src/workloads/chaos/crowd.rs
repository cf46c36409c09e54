//! The chaos workload's clients together: started (their first joins paced
//! by a gate), the rooms formed (everyone in and told of everyone, then the
//! plan of who relays to whom), the short sessions besides them, and at the
//! end every session they were all welcomed into.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::args::ChaosArgs;
use super::churner::Churner;
use super::client::{Back, ClientTask, CycleCounts, Plan, SeenSession, Shared};
use crate::workloads::room_name;

/// Tasks opening the short sessions of `--churn-rate`.
const CHURNERS: usize = 10;

/// Every client of the run, and the short sessions once started.
pub struct Crowd {
    pub shared: Arc<Shared>,
    /// Each client's latest peer id.
    pub peer_ids: Vec<String>,
    /// Each client's report when it is in its room (again).
    pub back_rx: mpsc::UnboundedReceiver<Back>,
    plan_tx: watch::Sender<Plan>,
    cancel: CancellationToken,
    clients: JoinSet<(usize, Vec<SeenSession>)>,
    churners: JoinSet<(Vec<SeenSession>, usize)>,
    addr: SocketAddr,
    room_size: usize,
}

/// What the clients and the short sessions saw, once they all left.
pub struct Finished {
    /// Each client's sessions (by client), then each churner's.
    pub seen: Vec<Vec<SeenSession>>,
    /// Short sessions welcomed, and joined and closed normally.
    pub churned: (usize, usize),
    /// The clients' counts, per cycle.
    pub counts: Vec<CycleCounts>,
}

impl Crowd {
    /// Starts every client against the server on `addr`.
    pub fn spawn(args: &ChaosArgs, addr: SocketAddr) -> Self {
        let size = args.room_size.max(1);
        let n = args.clients;
        let shared = Arc::new(Shared::new(args.cycles));
        let (back_tx, back_rx) = mpsc::unbounded_channel();
        let (plan_tx, plan_rx) = watch::channel::<Plan>(None);
        let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
        let cancel = CancellationToken::new();
        let interval = Duration::from_secs_f64(n as f64 / f64::from(args.rate.max(1)));
        let mut clients = JoinSet::new();
        for i in 0..n {
            let task = ClientTask {
                index: i,
                room: room_name("chaos", i / size),
                room_index: i / size,
                addr,
                shared: shared.clone(),
                cancel: cancel.clone(),
                retry: Duration::from_millis(args.retry_ms),
                interval,
                payload_bytes: args.payload_bytes,
            };
            let (gate, back_tx, plan_rx) = (gate.clone(), back_tx.clone(), plan_rx.clone());
            clients.spawn(async move { (i, task.run(gate, back_tx, plan_rx).await) });
        }
        Crowd {
            shared,
            peer_ids: vec![String::new(); n],
            back_rx,
            plan_tx,
            cancel,
            clients,
            churners: JoinSet::new(),
            addr,
            room_size: size,
        }
    }

    /// Waits (up to 2 minutes) until everyone is in and everyone was told
    /// of everyone, then gives the clients the plan.
    pub async fn form(&mut self) -> Result<(), String> {
        let (n, size) = (self.peer_ids.len(), self.room_size);
        let formed_by = Instant::now() + Duration::from_secs(120);
        let mut first_in = 0;
        while first_in < n {
            match tokio::time::timeout_at(formed_by.into(), self.back_rx.recv()).await {
                Ok(Some(back)) => {
                    self.peer_ids[back.client] = back.joined.peer_id;
                    first_in += 1;
                }
                _ => break,
            }
        }
        let expected = (n / size) * size * (size - 1) + (n % size) * (n % size).saturating_sub(1);
        let formation = || self.shared.formation.load(Ordering::Relaxed);
        while formation() < expected && Instant::now() < formed_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if first_in < n || formation() < expected {
            return Err(format!(
                "rooms did not form: {first_in} of {n} joined, {} of {expected} membership notifications",
                formation()
            ));
        }
        let plan: Vec<Vec<String>> = self.peer_ids.chunks(size).map(<[String]>::to_vec).collect();
        self.shared.formed.store(true, Ordering::Relaxed);
        let _ = self.plan_tx.send(Some(Arc::new(plan)));
        eprintln!("  chaos: {n} clients in {} rooms", n.div_ceil(size));
        Ok(())
    }

    /// Starts `churn_rate` short sessions a second in all (none at 0).
    pub fn start_churners(&mut self, churn_rate: u32) {
        if churn_rate == 0 {
            return;
        }
        let every = Duration::from_secs_f64(CHURNERS as f64 / f64::from(churn_rate));
        for c in 0..CHURNERS {
            let churner = Churner {
                addr: self.addr,
                room: room_name("chaos-churn", c),
                every,
                phase: every.mul_f64(c as f64 / CHURNERS as f64),
                cancel: self.cancel.clone(),
            };
            self.churners.spawn(churner.run());
        }
    }

    /// Ends the run: every client closes (up to 30 s), then every short
    /// session (up to 20 s).
    pub async fn finish(self) -> Finished {
        let Crowd {
            shared,
            peer_ids,
            plan_tx,
            cancel,
            mut clients,
            mut churners,
            ..
        } = self;
        cancel.cancel();
        let mut seen: Vec<Vec<SeenSession>> = vec![Vec::new(); peer_ids.len()];
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(joined) = clients.join_next().await {
                if let Ok((i, sessions)) = joined {
                    seen[i] = sessions;
                }
            }
        })
        .await;
        clients.abort_all();
        drop(plan_tx);
        let mut churned = (0, 0);
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(joined) = churners.join_next().await {
                if let Ok((sessions, closed)) = joined {
                    churned.0 += sessions.len();
                    churned.1 += closed;
                    seen.push(sessions);
                }
            }
        })
        .await;
        churners.abort_all();
        let counts = shared.counts.lock().unwrap().clone();
        Finished {
            seen,
            churned,
            counts,
        }
    }
}
