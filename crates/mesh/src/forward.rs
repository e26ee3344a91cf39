//! Byte forwarding between a client and a backend connection, with half-close.

use std::io;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Per-direction buffer. One per direction per connection keeps memory small.
// later: splice(2) between the two sockets.
const BUF_SIZE: usize = 16 * 1024;

/// Copies both directions until both have ended. When one side reads EOF the
/// other side's write half is shut down and the opposite direction keeps
/// flowing. The first I/O error ends both directions.
pub(crate) async fn forward(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    from_client: &IntCounter,
    to_client: &IntCounter,
) -> io::Result<()> {
    let (mut cr, mut cw) = client.split();
    let (mut br, mut bw) = backend.split();
    tokio::try_join!(
        copy_half(&mut cr, &mut bw, from_client, "client -> backend"),
        copy_half(&mut br, &mut cw, to_client, "backend -> client"),
    )?;
    Ok(())
}

/// Copies one direction; an error names the direction it happened in.
async fn copy_half<R, W>(
    r: &mut R,
    w: &mut W,
    bytes: &IntCounter,
    direction: &'static str,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{direction}: {e}"));
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = r.read(&mut buf).await.map_err(context)?;
        if n == 0 {
            // Propagate the half-close; the peer may already be gone.
            let _ = w.shutdown().await;
            return Ok(());
        }
        w.write_all(&buf[..n]).await.map_err(context)?;
        bytes.inc_by(n as u64);
    }
}
