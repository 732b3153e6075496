//! A host of its own on this machine, standing in for a third party that functions call: a
//! network namespace joined to this one by a veth pair, with private addresses. Its traffic
//! never leaves the machine. Needs root (`ip netns`).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;

/// Tells the hosts of one test process apart; the process id tells test processes apart.
static NEXT_HOST: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct TestHost {
    namespace: String,
    /// The host's address on its link to this machine.
    pub address: Ipv4Addr,
}

impl TestHost {
    /// Creates the host; `extra` are further addresses it answers on, routed to it from here
    /// (a metadata address, say).
    pub fn create(extra: &[Ipv4Addr]) -> TestHost {
        let number = NEXT_HOST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{:05x}{number:x}", std::process::id() & 0xfffff);
        let namespace = format!("tsvc-{tag}");
        // A /30 of 10.248.0.0/13 per host, from the process id and the counter.
        let block = (std::process::id().wrapping_mul(64) + number) % (1 << 17);
        let base = u32::from(Ipv4Addr::new(10, 248, 0, 0)) + block * 4;
        let (here, address) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let (outside, inside) = (format!("tsa{tag}"), format!("tsb{tag}"));
        let host = TestHost { namespace, address };
        let ns = host.namespace.as_str();
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", ns,
        ]);
        ip(&["addr", "add", &format!("{here}/30"), "dev", &outside]);
        ip(&["link", "set", &outside, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{address}/30"),
            "dev",
            &inside,
        ]);
        ip(&["-n", ns, "link", "set", &inside, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &here.to_string(),
        ]);
        for extra in extra {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{extra}/32"),
                "dev",
                &inside,
            ]);
            // Goes with the link when the namespace is deleted.
            ip(&[
                "route",
                "add",
                &format!("{extra}/32"),
                "via",
                &address.to_string(),
            ]);
        }
        host
    }

    /// A listener on `port` of every address of the host.
    pub fn listen(&self, port: u16) -> TcpListener {
        let path = format!("/var/run/netns/{}", self.namespace);
        // A socket belongs to the namespace of the thread that creates it.
        std::thread::spawn(move || {
            let namespace = File::open(&path).expect("open the host's namespace");
            // SAFETY: setns takes a descriptor this thread holds; it moves only this thread.
            let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).expect("bind in the host")
        })
        .join()
        .expect("the listening thread")
    }

    /// Answers every HTTP request on `port` with what `respond` makes of the request's first
    /// 8 KiB (a whole response), until the returned server is dropped, and the host with it.
    pub fn serve(
        self,
        port: u16,
        respond: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> TestHostServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = self.listen(port);
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let address = self.address;
        let respond = std::sync::Arc::new(respond);
        let task = tokio::spawn(async move {
            let _host = self;
            while let Ok((mut socket, _)) = listener.accept().await {
                let respond = respond.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 8192];
                    let read = socket.read(&mut buffer).await.unwrap_or(0);
                    let response = respond(&String::from_utf8_lossy(&buffer[..read]));
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        TestHostServer { address, task }
    }
}

/// A whole HTTP response with `status` and `body`, closing the connection.
pub fn http_response(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair, and the routes through it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

/// A test host serving HTTP; stopping it (or dropping it) deletes the host.
pub struct TestHostServer {
    pub address: Ipv4Addr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestHostServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ip(arguments: &[&str]) {
    let output = Command::new("ip")
        .args(arguments)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A third-party API stub on a host of its own: answers every request with `status` and
/// records each request line with whether it carried
/// `Authorization: Bearer secret-token`. It serves until the returned server is dropped.
pub fn third_party_stub(
    status: u16,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    TestHostServer,
) {
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = requests.clone();
    let server = TestHost::create(&[]).serve(80, move |request| {
        let first_line = request.lines().next().unwrap_or_default().to_owned();
        let authorized = request
            .to_ascii_lowercase()
            .contains("authorization: bearer secret-token");
        if let Ok(mut recorded) = recorded.lock() {
            recorded.push(format!("{first_line} auth={authorized}"));
        }
        http_response(status, "{}")
    });
    (format!("http://{}", server.address), requests, server)
}
