//! A node's path, for real: a private containerd (Debian's 1.6.20) imports
//! teller's images and `ctr run --runtime io.containerd.wasmedge.v1` starts
//! them through `containerd-shim-wasmedge-v1`, which runs them on teller's
//! WasmEdge engine. The timings printed are from `ctr run` to the first
//! decision (a function command) and to the first HTTP answer (the
//! service image); `.ci/run` shows them.

use crate::support::{Containerd, EXAMPLE, compiled, doc, lines, request, shim, teller};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const RUNTIME: &str = "io.containerd.wasmedge.v1";

/// `teller package ARGS -o DIR/FILE`, then `ctr images import` of it.
fn package_and_import(containerd: &Containerd, dir: &Path, file: &str, args: &[&str]) {
    let image = dir.join(file);
    let out = teller()
        .arg("package")
        .args(args)
        .arg("--output")
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = containerd.ctr(&["images", "import", image.to_str().unwrap()]);
    assert!(out.status.success(), "ctr images import: {out:?}");
}

/// `ctr run --rm` of a command image with `input` on stdin: the exit code,
/// stdout, stderr, and the time from `ctr run` to the first line of output.
fn run_command(
    containerd: &Containerd,
    image: &str,
    id: &str,
    envs: &[&str],
    input: &str,
) -> (Option<i32>, String, String, Duration) {
    let mut ctr = Command::new("ctr");
    ctr.arg("--address")
        .arg(containerd.dir.path().join("containerd.sock"))
        .args(["--namespace", "teller", "run", "--rm", "--runtime", RUNTIME]);
    for env in envs {
        ctr.args(["--env", env]);
    }
    let id = containerd.id(id);
    let started = Instant::now();
    let mut child = ctr
        .args([image, &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    // Read on a thread, so that a command that never answers fails the
    // test (and `Containerd`'s drop kills it) instead of hanging it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let _ = tx.send((first.clone(), started.elapsed()));
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        first + &rest
    });
    let (_, to_first_line) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("ctr run {image} {id}: no output within 60 s"));
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        reader.join().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        to_first_line,
    )
}

/// Five sorted times of `ctr run --rm --rootfs` (runc, containerd's default
/// runtime) of a root file system holding only a static `true`, from `ctr
/// run` to its exit.
fn native_true_runs(containerd: &Containerd, dir: &Path) -> Vec<Duration> {
    let rootfs = dir.join("true-rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let source = dir.join("true.c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let built = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(rootfs.join("true"))
        .arg(&source)
        .output()
        .unwrap();
    assert!(built.status.success(), "cc -static: {built:?}");
    let mut times: Vec<Duration> = (0..5)
        .map(|i| {
            let id = containerd.id(&format!("runc-true{i}"));
            let started = Instant::now();
            let out = containerd.ctr(&[
                "run",
                "--rm",
                "--rootfs",
                rootfs.to_str().unwrap(),
                &id,
                "/true",
            ]);
            let took = started.elapsed();
            assert!(out.status.success(), "ctr run of runc true: {out:?}");
            took
        })
        .collect();
    times.sort();
    times
}

#[test]
fn ctr_runs_a_function_command_through_the_shim() {
    let _heavy = crate::support::heavy();
    shim();
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start();
    package_and_import(
        &containerd,
        dir.path(),
        "tc.tar",
        &["--command", "transfer-check"],
    );
    let image = concat!("teller-transfer-check:", env!("CARGO_PKG_VERSION"));

    // Five runs: the time from `ctr run` to the decision on stdout.
    let mut times = Vec::new();
    for i in 0..5 {
        let (code, stdout, stderr, took) =
            run_command(&containerd, image, &format!("tc-allow{i}"), &[], EXAMPLE);
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        let decision: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(decision["verdict"], "allow", "{decision}");
        assert_eq!(decision["allow"], true);
        if i == 0 {
            println!(
                "ctr run {image} (README example): exit {code:?}: {}",
                stdout.trim()
            );
        }
        times.push(took);
    }
    times.sort();
    println!(
        "ctr run {image}: from ctr run to the decision on stdout, 5 runs: median {:?}, min {:?}, max {:?}",
        times[2], times[0], times[4]
    );
    // The lightest native container on the same containerd: runc running a
    // static `true` (built here), from `ctr run` to its exit.
    let native = native_true_runs(&containerd, dir.path());
    println!(
        "ctr run of a runc container running a static true, 5 runs: median {:?}, min {:?}, max {:?}; function image / runc: {:.2}x",
        native[2],
        native[0],
        native[4],
        times[2].as_secs_f64() / native[2].as_secs_f64()
    );

    // The container's environment reaches the command: the limit is 500.
    let (code, stdout, stderr, took) = run_command(
        &containerd,
        image,
        "tc-deny",
        &["TELLER_AMOUNT_LIMIT=500"],
        EXAMPLE,
    );
    println!(
        "ctr run {image} with TELLER_AMOUNT_LIMIT=500: exit {code:?} after {took:?}: {stdout}"
    );
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    let decision: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(decision["verdict"], "deny", "{decision}");
    assert!(
        decision["reasons"].to_string().contains("amount"),
        "{decision}"
    );

    let (code, stdout, stderr, _) =
        run_command(&containerd, image, "tc-bad", &[], r#"{"action": 7}"#);
    println!("ctr run {image} with bad input: exit {code:?}: {stdout}");
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(stdout.contains("\"code\""), "{stdout}");

    // The guest limits of `teller serve` apply to a command too: out of
    // fuel, teller stops it (125) and says why; a bad limit is refused.
    let (code, stdout, stderr, _) = run_command(
        &containerd,
        image,
        "tc-fuel",
        &["TELLER_GUEST_FUEL=1000"],
        EXAMPLE,
    );
    println!(
        "ctr run {image} with TELLER_GUEST_FUEL=1000: exit {code:?}: {}",
        stderr.trim()
    );
    assert_eq!(code, Some(125), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("guest_out_of_fuel") || stderr.contains("fuel"),
        "{stderr}"
    );
    let (code, stdout, stderr, _) = run_command(
        &containerd,
        image,
        "tc-fuel-enough",
        &["TELLER_GUEST_FUEL=100000000", "TELLER_GUEST_MEMORY_MIB=16"],
        EXAMPLE,
    );
    assert_eq!(code, Some(0), "enough fuel and memory: {stdout}\n{stderr}");
    let (code, _, stderr, _) = run_command(
        &containerd,
        image,
        "tc-badlimit",
        &["TELLER_GUEST_MEMORY_MIB=lots"],
        EXAMPLE,
    );
    assert_eq!(code, Some(125), "{stderr}");
    assert!(stderr.contains("TELLER_GUEST_MEMORY_MIB"), "{stderr}");

    // An entrypoint that is neither a wasm file nor `teller` is refused
    // when the container is created, saying why.
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image,
        &containerd.id("tc-wrong"),
        "/no-such.wasm",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "ctr run {image} /no-such.wasm: {:?}: {}",
        out.status.code(),
        stderr.trim()
    );
    assert!(!out.status.success(), "{out:?}");
    // containerd-shim-wasm says only "can't handle"; the reason is in the
    // shim's log, which containerd writes to its own.
    let log = std::fs::read_to_string(containerd.dir.path().join("containerd.log")).unwrap();
    let reason = log
        .lines()
        .find(|l| l.contains("/no-such.wasm") && l.contains("cannot read the command"))
        .unwrap_or_else(|| panic!("no reason in containerd's log:\n{log}"));
    println!("  containerd's log: {reason}");
}

/// Waits until `addr` answers a transfer check; when it did.
fn first_answer(
    addr: SocketAddr,
    body: &str,
    ctr: &mut std::process::Child,
    logs: &Receiver<String>,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            let r = request(addr, "POST", "/v1/transfer/check", body.as_bytes());
            if r.status == 200 {
                return Instant::now();
            }
            panic!("the first answer was {r:?}");
        }
        if let Some(status) = ctr.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            let out: Vec<String> = logs.try_iter().collect();
            panic!(
                "ctr run ended ({status}) before teller answered:\n{}",
                out.join("\n")
            );
        }
        assert!(Instant::now() < deadline, "no answer on {addr} within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ctr_runs_the_service_image_through_the_shim() {
    let _heavy = crate::support::heavy();
    shim();
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start();
    let limits = dir.path().join("limits.toml");
    std::fs::write(
        &limits,
        "[transfer_check]\namount_limit = 500\nauthorized_roles = [\"teller\"]\n",
    )
    .unwrap();
    package_and_import(
        &containerd,
        dir.path(),
        "svc.tar",
        &["--config", limits.to_str().unwrap()],
    );
    let image = concat!("teller-policies:", env!("CARGO_PKG_VERSION"));
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let addr: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };

    let id = containerd.id("svc");
    // A setting teller refuses ends the container with teller's own
    // message and exit code, as `teller serve` would.
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--env",
        "TELLER_GUEST_DEADLINE_MS=0",
        image,
        &containerd.id("svc-bad"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "ctr run {image} with TELLER_GUEST_DEADLINE_MS=0: {:?}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("guest-deadline-ms"), "{stderr}");

    let started = Instant::now();
    let mut ctr = Command::new("ctr")
        .arg("--address")
        .arg(containerd.dir.path().join("containerd.sock"))
        .args(["--namespace", "teller", "run", "--rm", "--net-host"])
        // As deployment.yaml runs it: a read-only root, TMPDIR on a volume.
        .args(["--read-only", "--runtime", RUNTIME])
        .args(["--env", &format!("TELLER_LISTEN={addr}")])
        .args(["--env", "TELLER_AUDIT_DIR=/audit"])
        .args(["--env", "TELLER_LOG_FORMAT=json"])
        .args(["--env", "TMPDIR=/scratch/tmp"])
        .arg("--mount")
        .arg(format!(
            "type=bind,src={},dst=/audit,options=rbind:rw",
            audit.display()
        ))
        .arg("--mount")
        .arg(format!(
            "type=bind,src={},dst=/scratch,options=rbind:rw",
            scratch.display()
        ))
        .args([image, &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = lines(ctr.stderr.take().unwrap());
    let allow = doc("transfer", 500, "teller", Some(true), None);
    let answered = first_answer(addr, &allow, &mut ctr, &logs);
    println!(
        "ctr run {image}: first HTTP answer after {:?}",
        answered - started
    );
    // In the container's process (the shim's threads and teller's), only
    // teller's signal thread takes SIGTERM.
    let tasks = containerd.ctr(&["tasks", "ls"]);
    let tasks = String::from_utf8_lossy(&tasks.stdout);
    let pid = tasks
        .lines()
        .find_map(|l| l.strip_prefix(id.as_str()))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no task {id}: {tasks}"));
    let takers = crate::support::threads_taking_sigterm(pid.parse().unwrap());
    assert_eq!(takers, ["teller-signals"], "container process {pid}");

    let r = request(addr, "POST", "/v1/transfer/check", allow.as_bytes()).json();
    assert_eq!(r["verdict"], "allow", "{r}");
    assert_eq!(r["engine"], "wasmedge", "{r}");
    assert_eq!(
        r["policy"]["sha256"],
        teller_engine::artifact::sha256_hex(teller_policy_artifacts::TRANSFER_CHECK.module)
    );
    let deny = doc("transfer", 501, "teller", Some(true), None);
    let r = request(addr, "POST", "/v1/transfer/check", deny.as_bytes()).json();
    assert_eq!(r["verdict"], "deny", "the image's teller.toml applies: {r}");
    println!("ctr run {image}: 500 → allow, 501 → deny, engine wasmedge");

    // Meanwhile WasmEdge compiles both guests in the container (into the
    // container's TMPDIR), and new instances switch to the compiled code.
    for line in compiled(&logs, &["transfer-check", "audit"]) {
        println!("ctr run {image}: {line}");
    }
    let r = request(addr, "POST", "/v1/transfer/check", deny.as_bytes()).json();
    assert_eq!(r["verdict"], "deny", "compiled, the same answer: {r}");

    // SIGTERM, as a pod's deletion sends: teller drains and exits 0.
    let out = containerd.ctr(&["tasks", "kill", &id]);
    assert!(out.status.success(), "{out:?}");
    let out = ctr.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("listening on"), "{stdout}");

    // Every decision is in the mounted audit directory, and the chain holds.
    let out = teller()
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let verified = String::from_utf8_lossy(&out.stdout);
    println!("teller audit verify (the pod's audit volume): {verified}");
    assert!(out.status.success(), "{out:?}");
    let out = teller()
        .args(["audit", "head"])
        .arg(&audit)
        .output()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(head["seq"], 4, "four decisions: {head}");
}
