//! The `berth` binary as a user runs it: `init`, `serve` and `rotate-key` on embedded storage,
//! and the plain messages it gives for bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const PASSWORD: &str = "Cli-test-Passw0rd";

fn berth(data_dir: &Path) -> Command {
    let mut command = Command::new(BERTH);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BERTH_DATA_DIR", data_dir)
        .env("BERTH_ADMIN_PASSWORD", PASSWORD);
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("berth runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One plain HTTP/1.1 GET: the status line and the headers, lower-cased names.
fn get(port: u16, path: &str) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    Ok((status, headers))
}

fn wait_until_serving(server: &mut Child, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = server.try_wait().expect("the server's status") {
            panic!("berth serve exited before it answered: {status}");
        }
        if get(port, "/v2/").is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("berth serve did not answer on port {port} within 60 s");
}

fn terminate(server: &mut Child) -> ExitStatus {
    let pid = server.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM could not be sent to {pid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.try_wait().expect("the server's status") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "berth serve did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn init_makes_the_storage_and_is_safe_to_run_again() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let data = dir.path().join("data");
    for attempt in ["first", "second"] {
        let output = run(berth(&data).arg("init"));
        assert!(
            output.status.success(),
            "the {attempt} init failed: {}",
            text(&output.stderr)
        );
        // The password came from the environment: it is never printed.
        assert!(!text(&output.stdout).contains(PASSWORD));
        assert!(!text(&output.stderr).contains(PASSWORD));
    }
    for made in ["metadata.redb", "blobs", "uploads"] {
        assert!(data.join(made).exists(), "init made no {made}");
    }
}

#[test]
fn serve_answers_with_a_token_challenge_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let port = free_port();
    let mut server = berth(&dir.path().join("data"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--shutdown-grace", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth serve starts");
    wait_until_serving(&mut server, port);

    let (status, headers) = get(port, "/v2/").expect("an answer to GET /v2/");
    let challenge = headers
        .iter()
        .find(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| value.as_str());
    let stopped = terminate(&mut server);
    assert_eq!(status, 401, "an anonymous GET /v2/ is challenged");
    let challenge = challenge.expect("a WWW-Authenticate header");
    assert!(
        challenge.starts_with("Bearer realm=\"http://127.0.0.1:")
            && challenge.contains("/service/token\"")
            && challenge.contains("service=\"berth\""),
        "{challenge}"
    );
    assert!(stopped.success(), "berth serve exited with {stopped}");
}

/// Starts `berth serve` on `data`, waits until it answers, and stops it.
fn serve_once(data: &Path) {
    let port = free_port();
    let mut server = berth(data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth serve starts");
    wait_until_serving(&mut server, port);
    let stopped = terminate(&mut server);
    assert!(stopped.success(), "berth serve exited with {stopped}");
}

#[test]
fn rotate_key_keeps_the_old_key_for_verifying() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let data = dir.path().join("data");
    let keys = data.join("token-keys");

    // A data directory no server ran on has no key to retire: rotating makes the first one.
    let first = run(berth(&data).arg("rotate-key"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("there was no token key"),
        "{}",
        text(&first.stdout)
    );
    assert_eq!(
        std::fs::read_dir(keys.join("previous"))
            .expect("token-keys/previous")
            .count(),
        0,
        "nothing was retired"
    );
    std::fs::remove_dir_all(&keys).expect("the keys removed again");

    // `berth serve` makes the signing key on its first start.
    serve_once(&data);
    let before = std::fs::read(keys.join("current.pem")).expect("the signing key");
    let rotated = run(berth(&data).arg("rotate-key"));
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let after = std::fs::read(keys.join("current.pem")).expect("the new signing key");
    assert_ne!(before, after, "the signing key did not change");
    let previous: Vec<_> = std::fs::read_dir(keys.join("previous"))
        .expect("token-keys/previous")
        .collect::<Result<_, _>>()
        .expect("its entries");
    assert_eq!(previous.len(), 1, "one retired key is kept");
    assert_eq!(
        std::fs::read(previous[0].path()).expect("the retired key"),
        before,
        "the retired key is the old signing key"
    );
    assert!(text(&rotated.stdout).contains("still verifies"));

    // And the server starts again with the new key and the retired one.
    serve_once(&data);
}

#[test]
fn bad_input_gets_a_plain_message() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let data = dir.path().join("data");

    let grace = run(berth(&data).args(["serve", "--shutdown-grace", "soon"]));
    assert_eq!(grace.status.code(), Some(2));
    assert!(
        text(&grace.stderr).contains("\"soon\" is not a number of seconds, like 30s"),
        "{}",
        text(&grace.stderr)
    );

    let kms_alone = run(berth(&data).args(["init", "--token-keys-kms-key", "alias/k"]));
    assert_eq!(kms_alone.status.code(), Some(2));
    assert!(
        text(&kms_alone.stderr).contains("--token-keys-ssm"),
        "{}",
        text(&kms_alone.stderr)
    );

    // Names DynamoDB and S3 would refuse stop berth before it starts, naming the option.
    for (option, value, problem) in [
        (
            "--metadata",
            "dynamodb://tr",
            "is not a DynamoDB table name",
        ),
        ("--blob-store", "s3://My_Bucket", "is not an S3 bucket name"),
    ] {
        let refused = run(berth(&data).args(["serve", option, value]));
        assert_eq!(refused.status.code(), Some(2), "{value}");
        let stderr = text(&refused.stderr);
        assert!(
            stderr.contains(option) && stderr.contains(problem),
            "{value}: {stderr}"
        );
    }
    assert!(!data.exists(), "a refused start made the data directory");

    let region = run(berth(&data)
        .args(["serve", "--metadata", "dynamodb://berth-test"])
        .env("AWS_REGION", "US East"));
    assert!(
        !region.status.success(),
        "serve with a malformed region started"
    );
    assert!(
        text(&region.stderr).contains("AWS_REGION is \"US East\", not a region name"),
        "{}",
        text(&region.stderr)
    );

    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port to occupy");
    let port = taken.local_addr().expect("its address").port();
    let busy = run(berth(&data).args(["serve", "--listen", &format!("127.0.0.1:{port}")]));
    assert!(!busy.status.success(), "serve on a port in use succeeded");
    assert!(
        text(&busy.stderr).contains(&format!("berth: cannot listen on 127.0.0.1:{port}")),
        "{}",
        text(&busy.stderr)
    );
}
