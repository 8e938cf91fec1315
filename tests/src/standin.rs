//! A stand-in broker: registers with the quorum and heartbeats through the Controller RPCs,
//! following NOT_CONTROLLER hints to the active controller. Lets controller tests create
//! topics (which need live brokers) and observe fencing without a real broker.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::status::error_detail;
use sluice_proto::v1::{BrokerHeartbeatRequest, RegisterBrokerRequest};

use crate::controller;

/// A running stand-in broker.
pub struct StandIn {
    /// Broker id.
    pub id: i32,
    /// Broker epoch from the last registration.
    pub epoch: Arc<AtomicI64>,
    /// Whether the last heartbeat said "fenced".
    pub fenced: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn call<T, F, Fut>(addrs: &[String], preferred: &mut usize, mut f: F) -> Option<T>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    for attempt in 0..addrs.len() * 2 {
        let addr = addrs[(*preferred + attempt) % addrs.len()].clone();
        match f(addr).await {
            Ok(v) => {
                *preferred = (*preferred + attempt) % addrs.len();
                return Some(v);
            }
            Err(s) => {
                if let Some(hint) = error_detail(&s).and_then(|d| d.leader) {
                    let want = format!("{}:{}", hint.host, hint.port);
                    if let Some(i) = addrs.iter().position(|a| *a == want) {
                        *preferred = i;
                        if let Ok(v) = f(want).await {
                            return Some(v);
                        }
                    }
                }
            }
        }
    }
    None
}

impl StandIn {
    /// Registers broker `id` with the quorum at `addrs` and heartbeats every 300 ms until
    /// dropped or [`stop`](Self::stop)ped.
    pub fn start(addrs: Vec<String>, id: i32) -> StandIn {
        let epoch = Arc::new(AtomicI64::new(-1));
        let fenced = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, fe, st) = (epoch.clone(), fenced.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut preferred = 0usize;
            let incarnation = format!("standin-{id}-{}", std::process::id());
            // This loop runs until the stand-in is stopped (the test owns its lifetime).
            while !st.load(Ordering::SeqCst) {
                if e.load(Ordering::SeqCst) < 0 {
                    let inc = incarnation.clone();
                    let r = call(&addrs, &mut preferred, |addr| {
                        let inc = inc.clone();
                        async move {
                            controller(&addr)
                                .register_broker(RegisterBrokerRequest {
                                    broker_id: id,
                                    incarnation_id: inc,
                                    cluster_id: String::new(),
                                    host: "127.0.0.1".into(),
                                    port: 20000 + id,
                                    rack: None,
                                    log_dirs: vec![],
                                    // A stand-in restarted with the same id stands for the same
                                    // broker (its "log dir"), so it may register at once.
                                    directory_id: format!("standin-{id}"),
                                    ..Default::default()
                                })
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await;
                    if let Some(r) = r {
                        e.store(r.broker_epoch, Ordering::SeqCst);
                    }
                } else {
                    let epoch = e.load(Ordering::SeqCst);
                    let r = call(&addrs, &mut preferred, |addr| async move {
                        controller(&addr)
                            .broker_heartbeat(BrokerHeartbeatRequest {
                                broker_id: id,
                                broker_epoch: epoch,
                                current_metadata_offset: Some(epoch as u64),
                                want_fence: false,
                                want_shut_down: false,
                                directory_id: format!("standin-{id}"),
                                high_watermarks: vec![],
                            })
                            .await
                            .map(|r| r.into_inner())
                    })
                    .await;
                    if let Some(r) = r {
                        fe.store(r.is_fenced, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        StandIn {
            id,
            epoch,
            fenced,
            stop,
            task,
        }
    }

    /// Stops heartbeating (the broker "dies" from the controller's point of view).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the broker is registered and unfenced.
    pub fn is_active(&self) -> bool {
        self.epoch.load(Ordering::SeqCst) >= 0 && !self.fenced.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
        self.task.abort();
    }
}
