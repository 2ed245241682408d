//! Names that are not ours go to the asking container's upstream servers, as they are: the
//! question's bytes out, the answer's bytes back (so EDNS, DNSSEC bits and sizes are the
//! client's business). Each question gets a fresh socket (a random source port), each
//! server a bounded wait.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

/// How long one upstream server gets to answer.
const WAIT: Duration = Duration::from_secs(2);

fn same_id(query: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 12 && query.len() >= 2 && answer[..2] == query[..2]
}

/// Over UDP: the first server that answers, in order.
pub async fn udp(query: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        let Ok(sock) = UdpSocket::bind(local).await else {
            continue;
        };
        if sock.connect(server).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        // Room for the largest datagram, not zeroed first (recv_buf fills spare capacity).
        let mut buf = Vec::with_capacity(65535);
        let deadline = tokio::time::Instant::now() + WAIT;
        // A stray datagram with another ID is skipped, not taken for the answer.
        loop {
            buf.clear();
            match tokio::time::timeout_at(deadline, sock.recv_buf(&mut buf)).await {
                Ok(Ok(_)) if same_id(query, &buf) => return Some(buf),
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
    }
    None
}

/// Over TCP (a client that came over TCP, usually after a truncated UDP answer).
pub async fn tcp(query: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let exchange = async {
            let mut s = TcpStream::connect(server).await?;
            let mut msg = (query.len() as u16).to_be_bytes().to_vec();
            msg.extend_from_slice(query);
            s.write_all(&msg).await?;
            let len = s.read_u16().await? as usize;
            let mut buf = vec![0u8; len];
            s.read_exact(&mut buf).await?;
            std::io::Result::Ok(buf)
        };
        if let Ok(Ok(buf)) = timeout(WAIT, exchange).await {
            if same_id(query, &buf) {
                return Some(buf);
            }
        }
    }
    None
}

/// DNS64 for a container with IPv6 alone: `answer` (to `query`, forwarded already) completed
/// with AAAA records in 64:ff9b::/96 when it has none and the name has IPv4 addresses.
pub async fn dns64(
    query: &[u8],
    answer: Vec<u8>,
    servers: &[SocketAddr],
    over_tcp: bool,
) -> Vec<u8> {
    let Some(ask) = super::dns64::a_query(query, &answer) else {
        return answer;
    };
    let a = match over_tcp {
        true => tcp(&ask, servers).await,
        false => udp(&ask, servers).await,
    };
    a.and_then(|a| super::dns64::synthesize(query, &a))
        .unwrap_or(answer)
}
