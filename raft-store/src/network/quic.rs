//! The cluster transport over QUIC (quinn) with mutual TLS. One bidirectional stream per RPC:
//! the caller writes one frame and finishes, the server answers one frame and finishes.
//! Connections are kept per peer and replaced after any failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{handle_rpc, ClusterRpc, RpcRequest, RpcResponse, TransportError, MAX_FRAME_BYTES};
use crate::codec;
use crate::error::{Error, Result};
use crate::tls::{TlsMaterial, CLUSTER_SERVER_NAME};
use crate::{NodeId, NodeInfo, Raft};

type PeerSlot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// A node's QUIC endpoint: serves peers and calls them.
#[derive(Debug)]
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    peers: Mutex<HashMap<String, PeerSlot>>,
}

fn looks_like_certificate_error(e: &impl std::fmt::Display) -> bool {
    let text = e.to_string();
    text.contains("certificate") || text.contains("UnknownIssuer") || text.contains("BadCert")
}

impl QuicTransport {
    /// Creates the endpoint on an already bound UDP socket.
    pub fn bind(socket: std::net::UdpSocket, tls: &TlsMaterial) -> Result<Arc<Self>> {
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(tls.quic_server_config()?),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| Error::Quic(format!("endpoint: {e}")))?;
        endpoint.set_default_client_config(tls.quic_client_config()?);
        Ok(Arc::new(Self {
            endpoint,
            peers: Mutex::new(HashMap::new()),
        }))
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| Error::Quic(e.to_string()))
    }

    /// Serves peers' requests on `raft` until the endpoint is closed.
    pub fn serve(
        self: &Arc<Self>,
        raft: Raft,
        change_timeout: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let raft = raft.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    let conn = match incoming.await {
                        Ok(conn) => conn,
                        Err(e) if looks_like_certificate_error(&e) => {
                            tracing::warn!(
                                %remote, error = %e,
                                "refused cluster connection: peer certificate is not issued by this cluster's CA"
                            );
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "cluster handshake failed");
                            return;
                        }
                    };
                    tracing::debug!(%remote, "cluster peer connected");
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        let raft = raft.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve_stream(&raft, send, recv, change_timeout).await {
                                tracing::debug!(%remote, error = %e, "cluster rpc stream failed");
                            }
                        });
                    }
                });
            }
        })
    }

    /// Closes the endpoint and waits (bounded) for peers to learn of it.
    pub async fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    fn slot(&self, addr: &str) -> PeerSlot {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.entry(addr.to_owned()).or_default().clone()
    }

    async fn connection(&self, addr: &str) -> Result<quinn::Connection, TransportError> {
        let slot = self.slot(addr);
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        *guard = None;
        let socket_addr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| TransportError::Unreachable(format!("resolve {addr}: {e}")))?
            .next()
            .ok_or_else(|| TransportError::Unreachable(format!("resolve {addr}: no address")))?;
        let connecting = self
            .endpoint
            .connect(socket_addr, CLUSTER_SERVER_NAME)
            .map_err(|e| TransportError::Unreachable(format!("connect {addr}: {e}")))?;
        let conn = connecting.await.map_err(|e| {
            if looks_like_certificate_error(&e) {
                tracing::warn!(
                    peer = addr, error = %e,
                    "cluster peer refused: certificates are not from the same cluster CA"
                );
            }
            TransportError::Unreachable(format!("connect {addr}: {e}"))
        })?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    fn forget(&self, addr: &str, conn: &quinn::Connection) {
        let slot = self.slot(addr);
        if let Ok(mut guard) = slot.try_lock() {
            if guard
                .as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                *guard = None;
            }
        }
        conn.close(0u32.into(), b"rpc failed");
    }

    async fn exchange(
        &self,
        addr: &str,
        frame: &[u8],
    ) -> Result<Vec<u8>, (TransportError, Option<quinn::Connection>)> {
        let conn = self.connection(addr).await.map_err(|e| (e, None))?;
        let failed = |e: String| (TransportError::Network(e), Some(conn.clone()));
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| failed(format!("open stream to {addr}: {e}")))?;
        send.write_all(frame)
            .await
            .map_err(|e| failed(format!("send to {addr}: {e}")))?;
        send.finish()
            .map_err(|e| failed(format!("finish to {addr}: {e}")))?;
        recv.read_to_end(MAX_FRAME_BYTES)
            .await
            .map_err(|e| failed(format!("receive from {addr}: {e}")))
    }

    /// Sends `request` to the node at `addr` and waits at most `timeout` for its answer.
    pub async fn call_addr(
        &self,
        addr: &str,
        request: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, TransportError> {
        let frame = codec::encode(request)
            .map_err(|e| TransportError::Network(format!("encode request: {e}")))?;
        let reply = match tokio::time::timeout(timeout, self.exchange(addr, &frame)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err((e, conn))) => {
                if let Some(conn) = conn {
                    self.forget(addr, &conn);
                }
                return Err(e);
            }
            Err(_) => {
                // A peer that restarted leaves our old connection silent until it idles out:
                // drop it so the next call connects afresh.
                let slot = self.slot(addr);
                if let Ok(mut guard) = slot.try_lock() {
                    if let Some(conn) = guard.take() {
                        conn.close(0u32.into(), b"rpc timed out");
                    }
                }
                return Err(TransportError::Network(format!(
                    "no answer from {addr} within {} ms",
                    timeout.as_millis()
                )));
            }
        };
        codec::decode(&reply).map_err(|e| TransportError::Network(format!("decode answer: {e}")))
    }
}

async fn serve_stream(
    raft: &Raft,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    change_timeout: Duration,
) -> Result<()> {
    let bytes = recv
        .read_to_end(MAX_FRAME_BYTES)
        .await
        .map_err(|e| Error::Quic(format!("read request: {e}")))?;
    let request: RpcRequest = codec::decode(&bytes)?;
    let response = handle_rpc(raft, request, change_timeout).await;
    let out = codec::encode(&response)?;
    send.write_all(&out)
        .await
        .map_err(|e| Error::Quic(format!("write answer: {e}")))?;
    send.finish()
        .map_err(|e| Error::Quic(format!("finish answer: {e}")))?;
    Ok(())
}

impl ClusterRpc for QuicTransport {
    fn call<'a>(
        &'a self,
        _target: NodeId,
        node: &'a NodeInfo,
        request: RpcRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RpcResponse, TransportError>> {
        Box::pin(async move { self.call_addr(&node.raft_addr, &request, timeout).await })
    }
}
