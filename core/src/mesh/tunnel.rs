//! The tunnel protocol between daemons (DESIGN §8): the opening node sends one header frame naming
//! the task and port; the task's node answers one verdict frame — `ok`, or why it refuses, so the
//! opener can try another backend before the client has seen a byte — and from then on the stream
//! carries the client's bytes both ways. Frames are a 4-byte big-endian length and JSON.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::env::runtime;

/// The largest frame either side accepts; a header is a few hundred bytes.
const MAX_FRAME: usize = 16 * 1024;

/// What a tunnel is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelHeader {
    pub service_id: String,
    pub task_id: String,
    /// The task's target port.
    pub port: u16,
    /// The original client's address (for the task node's accounting and logs).
    pub client: String,
    /// A UDP flow: after the verdict the stream carries datagrams, each a 2-byte big-endian
    /// length and its bytes ([`write_datagram`], [`read_datagram`]).
    #[serde(default)]
    pub udp: bool,
    /// How long the task's node may take to connect to the task (ms; 0 = its default): the last
    /// backend a proxy tries gets a client's patience.
    #[serde(default)]
    pub connect_ms: u64,
    /// Any ready task of the service will do: a node that no longer runs `task_id` ready may
    /// serve the connection from its own table instead (see `Mesh::redirect`).
    #[serde(default)]
    pub any_task: bool,
    /// Already redirected once; never again (no loops between stale tables).
    #[serde(default)]
    pub redirected: bool,
}

/// Send one datagram over a UDP tunnel.
pub async fn write_datagram<W: AsyncWrite + Unpin>(writer: &mut W, datagram: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(datagram.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "datagram over 65535 bytes"))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(datagram);
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Receive one datagram from a UDP tunnel.
pub async fn read_datagram<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    reader.read_exact(&mut len).await?;
    let mut datagram = vec![0u8; u16::from_be_bytes(len) as usize];
    reader.read_exact(&mut datagram).await?;
    Ok(datagram)
}

/// The task's node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Ok,
    Refused(String),
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the peer closed the tunnel: {0}")]
    Io(String),
    #[error("garbled tunnel frame: {0}")]
    Garbled(String),
    #[error("no tunnel frame within {0} ms")]
    Timeout(u64),
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(writer: &mut W, value: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(value).map_err(|e| FrameError::Garbled(e.to_string()))?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    writer.write_all(&frame).await.map_err(|e| FrameError::Io(e.to_string()))?;
    writer.flush().await.map_err(|e| FrameError::Io(e.to_string()))
}

pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    deadline: Duration,
) -> Result<T, FrameError> {
    let read = async {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).await.map_err(|e| FrameError::Io(e.to_string()))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::Garbled(format!("a frame of {len} bytes (at most {MAX_FRAME})")));
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await.map_err(|e| FrameError::Io(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| FrameError::Garbled(e.to_string()))
    };
    runtime::timeout(deadline, read).await.map_err(|_| FrameError::Timeout(deadline.as_millis() as u64))?
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_garbage_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let header = TunnelHeader {
            service_id: "s".into(),
            task_id: "t".into(),
            port: 80,
            client: "1.2.3.4:5".into(),
            udp: false,
            connect_ms: 0,
            any_task: false,
            redirected: false,
        };
        write_frame(&mut a, &header).await.unwrap();
        let got: TunnelHeader = read_frame(&mut b, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got, header);
        a.write_all(&[0, 0, 0, 3, b'x', b'y', b'z']).await.unwrap();
        let err = read_frame::<_, TunnelHeader>(&mut b, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, FrameError::Garbled(_)), "{err}");
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame::<_, TunnelHeader>(&mut b, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, FrameError::Garbled(_)), "{err}");
    }

    #[tokio::test]
    async fn datagrams_keep_their_boundaries() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_datagram(&mut a, b"one").await.unwrap();
        write_datagram(&mut a, b"").await.unwrap();
        write_datagram(&mut a, b"three").await.unwrap();
        assert_eq!(read_datagram(&mut b).await.unwrap(), b"one");
        assert_eq!(read_datagram(&mut b).await.unwrap(), b"");
        assert_eq!(read_datagram(&mut b).await.unwrap(), b"three");
    }
}
