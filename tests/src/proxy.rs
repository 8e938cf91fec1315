//! Per-link TCP proxies on 127.0.0.1 for network faults without root.
//!
//! A [`Proxy`] forwards every connection to its target and can be switched, at any time, to
//! * [`Mode::Pass`]: forward both ways;
//! * [`Mode::DropResponses`]: requests still reach the target, but the first bytes coming
//!   back are thrown away and the connection is closed (the server acted, the client never
//!   hears of it);
//! * [`Mode::Blackhole`]: nothing is forwarded either way; connections stay open and silent
//!   (a partition: callers see timeouts, not refusals) until the mode changes, then close.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward requests, drop the responses and close.
    DropResponses,
    /// Forward nothing; hold connections open and silent.
    Blackhole,
}

/// Waits until the mode is something other than `Blackhole` (or the proxy is gone).
async fn until_not_blackholed(mode: &mut watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m != Mode::Blackhole).await;
}

/// One proxy: listens on `addr`, forwards to a target set with [`Proxy::set_target`].
pub struct Proxy {
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
    mode: watch::Sender<Mode>,
    target: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds a free port; forwards once a target is set.
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("local addr").to_string();
        let (mode, _) = watch::channel(Mode::Pass);
        let target: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let task = {
            let (mode, target) = (mode.clone(), target.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let t = target.lock().expect("target").clone();
                    let Some(t) = t else { continue };
                    tokio::spawn(serve(client, t, mode.subscribe()));
                }
            })
        };
        Proxy {
            addr,
            mode,
            target,
            task,
        }
    }

    /// Where connections go.
    pub fn set_target(&self, target: &str) {
        *self.target.lock().expect("target") = Some(target.to_string());
    }

    /// Switches the mode for existing and new connections.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(client: TcpStream, target: String, mut mode: watch::Receiver<Mode>) {
    // A blackholed link accepts and then says nothing.
    until_not_blackholed(&mut mode).await;
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone(), false);
    let down = pump(sr, cw, mode, true);
    // Either direction ending ends the connection.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    response: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *mode.borrow_and_update();
        match now {
            Mode::Pass => {}
            Mode::DropResponses if !response => {}
            Mode::DropResponses => return,
            Mode::Blackhole => {
                // Silence until the partition heals, then drop the connection (its bytes
                // were lost, the stream cannot continue).
                until_not_blackholed(&mut mode).await;
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
