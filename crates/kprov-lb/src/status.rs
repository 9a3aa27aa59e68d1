//! `kprov lb status`: the running balancer's [`Snapshot`], read from its
//! metrics listener (`GET /status`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::{response_body, Snapshot};
use crate::LbError;

/// Reads the snapshot from the balancer whose metrics listener is
/// `address` (within 5 s).
pub async fn fetch(address: SocketAddr) -> Result<Snapshot, LbError> {
    let err = |reason: String| LbError::Status {
        address: address.to_string(),
        reason,
    };
    let response = tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET /status HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    })
    .await
    .map_err(|_| err("no answer within 5 s".into()))?
    .map_err(|e| err(e.to_string()))?;
    let body = response_body(&response).map_err(err)?;
    serde_json::from_slice(body).map_err(|e| err(format!("not a status document: {e}")))
}
