//! A TCP proxy in front of moto_server that can be switched to refuse connections, to play
//! an S3/Glue endpoint that goes away in the middle of an invocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};

/// A running proxy; connections are cut while it is `down`.
pub struct Proxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let down = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let (d, r) = (down.clone(), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let d = d.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    // Pooled connections outlive a switch to down: cut them too.
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    tokio::select! {
                        _ = copy => {}
                        _ = wait_down(d) => {}
                    }
                });
            }
        });
        Ok(Proxy {
            endpoint,
            down,
            refused,
            task,
        })
    }

    /// Cuts (true) or restores (false) the endpoint.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

async fn wait_down(d: Arc<AtomicBool>) {
    while !d.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
