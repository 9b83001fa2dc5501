//! Helpers: run `teller`, start a server on an ephemeral port, speak HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The engines this build runs; end-to-end tests run on each of them.
pub const ENGINES: &[&str] = if cfg!(feature = "wasmedge") {
    &["wasmtime", "wasmedge"]
} else {
    &["wasmtime"]
};

/// An in-process engine by name, with the tests' shared cache.
pub fn engine(name: &str) -> Box<dyn teller_engine::Engine> {
    teller_engine::register(ENGINE_KINDS);
    let cache = teller_engine::cache::ArtifactCache::at(cache_dir()).unwrap();
    teller_engine::by_name(
        name,
        cache,
        teller_engine::Workload::Server,
        teller_engine::GuestLimits::default(),
        teller_engine::state::GuestState::none(),
    )
    .unwrap()
}

/// The engines the `teller` binary has, in its order.
const ENGINE_KINDS: &[teller_engine::EngineKind] = &[
    #[cfg(feature = "wasmedge")]
    teller_wasmedge::ENGINE,
    teller_wasmtime::ENGINE,
];

/// Held by the tests that time something or compile under a deadline (the
/// shim's containers, the probe-latency test), so that they never overlap
/// on two cores. The HA drill needs the whole machine: it is a test binary
/// of its own (`tests/ha-drill.rs`).
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// `teller` with a cache shared by all tests (compiled guests are reused).
pub fn teller() -> Command {
    command(env!("CARGO_BIN_EXE_teller"))
}

/// `teller-bench`, likewise.
pub fn teller_bench() -> Command {
    command(env!("CARGO_BIN_EXE_teller-bench"))
}

fn command(exe: &str) -> Command {
    let mut cmd = Command::new(exe);
    // Only what a test sets: no TELLER_* setting leaks in from outside.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TELLER_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("TELLER_CACHE_DIR", cache_dir());
    cmd
}

pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("teller-cache")
}

/// Runs `cmd` with `stdin` as its standard input; its status and output.
pub fn output_with_stdin(mut cmd: Command, stdin: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The README's example document.
pub const EXAMPLE: &str = r#"{"action":"transfer","amount":250000,"currency":"CNY","from_account":"6222020200001234567","to_account":"6222020200007654321","user":{"id":"u-17","role":"authorized"},"audit":{"enabled":true},"approval":{"required":false},"request_id":"r-1"}"#;

/// A running `teller serve`, killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

impl Server {
    /// `teller serve --engine ENGINE ARGS` on an ephemeral loopback port.
    pub fn start(engine: &str, args: &[&str]) -> Server {
        Self::spawn(engine, args, Stdio::inherit())
    }

    /// As `start`, with every log line (stderr) sent to the receiver.
    pub fn start_logged(
        engine: &str,
        args: &[&str],
    ) -> (Server, std::sync::mpsc::Receiver<String>) {
        let mut server = Self::spawn(engine, args, Stdio::piped());
        let stderr = server.child.stderr.take().unwrap();
        (server, lines(stderr))
    }

    fn spawn(engine: &str, args: &[&str], stderr: Stdio) -> Server {
        let mut child = teller()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--engine", engine])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn teller serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("teller serve did not start: {line:?}"))
            .parse()
            .unwrap();
        Server { addr, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        request(self.addr, "POST", path, body.as_bytes())
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, b"")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Sends a signal (`HUP`, `TERM`, ...) and returns at once.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// kill -9: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// kill -9 through a shared reference (other threads still use `addr`).
    pub fn kill_now(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Every line `output` gives, sent to the receiver as it comes.
pub fn lines(output: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits (a minute at most for each line) for the log lines saying WasmEdge
/// now runs each of `policies` as compiled code, which come in whatever order
/// their compilations end; the lines, in that order. A compilation that
/// fails fails the test with its error.
#[cfg_attr(not(feature = "wasmedge"), allow(dead_code))]
pub fn compiled(logs: &std::sync::mpsc::Receiver<String>, policies: &[&str]) -> Vec<String> {
    let mut waiting: Vec<&str> = policies.to_vec();
    let mut lines = Vec::new();
    while !waiting.is_empty() {
        let line = logs
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{waiting:?} not compiled within 60 s"));
        assert!(!line.contains("cannot compile"), "{line}");
        if let Some(i) = waiting.iter().position(|policy| {
            line.contains("compiled: new instances run native code")
                && line.contains(&format!("\"{policy}\""))
        }) {
            waiting.remove(i);
            lines.push(line);
        }
    }
    lines
}

/// One HTTP/1.1 exchange over a fresh loopback connection.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(body);
    raw(addr, &head)
}

/// Sends raw bytes and parses whatever HTTP response comes back.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // A server may answer (413) and close before reading everything.
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    Response {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

/// Runs `op` `each` times on each of `threads` threads at once; all results.
pub fn concurrently<T: Send>(threads: usize, each: usize, op: impl Fn() -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| (0..each).map(|_| op()).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// A transfer document with the fields tests vary.
pub fn doc(
    action: &str,
    amount: u64,
    role: &str,
    audit: Option<bool>,
    approval: Option<bool>,
) -> String {
    let mut v = serde_json::json!({
        "action": action,
        "amount": amount,
        "user": {"id": "u-1", "role": role},
        "request_id": "t-1",
    });
    if let Some(a) = audit {
        v["audit"] = serde_json::json!({ "enabled": a });
    }
    if let Some(a) = approval {
        v["approval"] = serde_json::json!({ "required": a });
    }
    v.to_string()
}

/// A containerd of the test's own: private root, state, socket and
/// config, no CRI, stopped and removed on drop. Fails loudly when
/// containerd cannot start; it never skips.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("teller-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        // containerd finds `containerd-shim-wasmedge-v1` on its PATH: the
        // one this build made, next to `teller` (see `shim`).
        let path = std::env::join_paths(
            std::iter::once(
                Path::new(env!("CARGO_BIN_EXE_teller"))
                    .parent()
                    .unwrap()
                    .to_path_buf(),
            )
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
        )
        .unwrap();
        let child = Command::new("containerd")
            .env("PATH", path)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start containerd (scripts/setup installs it): {e}"));
        let containerd = Containerd { dir, child };
        for _ in 0..100 {
            if containerd.ctr(&["version"]).status.success() {
                return containerd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(containerd.dir.path().join("containerd.log"))
            .unwrap_or_default();
        panic!("containerd did not come up within 10 s (it needs root):\n{log}");
    }

    /// A container id no other test's containerd uses: the shim keeps its
    /// containers' state under one host-wide directory.
    pub fn id(&self, name: &str) -> String {
        let dir = self.dir.path().file_name().unwrap().to_string_lossy();
        format!("{name}-{}", dir.trim_start_matches("teller-containerd-"))
    }

    /// `ctr --address SOCK --namespace teller ARGS`.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "teller"])
            .args(args)
            .output()
            .unwrap()
    }
}

/// The node's shim this build made (the `teller-shim` package's binary,
/// built into the same directory as `teller`).
pub fn shim() -> PathBuf {
    let shim =
        Path::new(env!("CARGO_BIN_EXE_teller")).with_file_name("containerd-shim-wasmedge-v1");
    assert!(
        shim.exists(),
        "{} is missing: build the workspace (scripts/test does)",
        shim.display()
    );
    shim
}

impl Drop for Containerd {
    /// Kills what is still running in it first, so that no shim outlives
    /// the test.
    fn drop(&mut self) {
        let tasks = self.ctr(&["tasks", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
            for _ in 0..50 {
                if self.ctr(&["tasks", "delete", id]).status.success() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The threads of process `pid` that take SIGTERM: those that do not
/// block it (bit 14 of SigBlk), by name. A thread in sigwait(3) is among
/// them, as the kernel unblocks what it waits for.
pub fn threads_taking_sigterm(pid: u32) -> Vec<String> {
    let mut takers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue; // the thread ended
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {status}"))
                .trim()
                .to_string()
        };
        let blocked = u64::from_str_radix(&field("SigBlk:"), 16).unwrap();
        if blocked & (1 << 14) == 0 {
            takers.push(field("Name:"));
        }
    }
    takers
}
