//! The HTTP side of `--prometheus`: bound at start-up (a busy port is a
//! start-up error), then `GET /metrics` served in the background from the
//! shared snapshot.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::report::prometheus::{Snapshot, render};

/// Bind `addr` now (so a busy port is a start-up error) and serve
/// `GET /metrics` in the background.
pub async fn serve(addr: SocketAddr, snapshot: Arc<Mutex<Snapshot>>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--prometheus {addr}: cannot listen"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let snapshot = Arc::clone(&snapshot);
            tokio::spawn(async move {
                let mut req = vec![0u8; 2048];
                let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut req));
                let Ok(Ok(n)) = read.await else {
                    return;
                };
                let first = String::from_utf8_lossy(&req[..n]);
                let (status, ctype, body) =
                    if first.starts_with("GET /metrics ") || first.starts_with("GET /metrics?") {
                        match render(&snapshot) {
                            Ok(b) => (
                                "200 OK",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                b,
                            ),
                            Err(_) => (
                                "500 Internal Server Error",
                                "text/plain",
                                "encoding failed\n".to_owned(),
                            ),
                        }
                    } else {
                        (
                            "404 Not Found",
                            "text/plain",
                            "tcptrace serves /metrics\n".to_owned(),
                        )
                    };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(())
}
