//! A TCP proxy between a process under test and a real service (PostgreSQL,
//! Redis), so a test can take the service away and bring it back without touching
//! the shared server itself.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy the test can stop (connections dropped, port closed) and restart
/// on the same port: a database or Redis going away and coming back.
pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = Proxy {
            addr,
            target,
            task: None,
        };
        proxy.task = Some(Self::serve(listener, target));
        proxy
    }

    fn serve(listener: TcpListener, target: SocketAddr) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        })
    }

    pub fn stop(&mut self) {
        // Aborting the task drops the listener and every proxied connection.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn restart(&mut self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.task = Some(Self::serve(listener, self.target));
    }
}
