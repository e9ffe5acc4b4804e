//! Real Prometheus and Pushgateway processes for tests, plus a scripted HTTP stub.
//!
//! Each harness starts its own process from the Debian package binaries on a free loopback
//! port, in a temp dir, waits for readiness with a deadline, and kills the process on drop. The
//! system services the Debian packages may start are neither used nor touched.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";
/// Deadline for a process to become ready.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `expr` of alert `name` in the shipped rules file (deploy/alerts), to evaluate the real
/// rule against what the chain really pushed.
pub fn shipped_alert_expr(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alerts/k8s-upgrade-chain.rules.yaml");
    let rules: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .find(|r| r["alert"] == name)
        .and_then(|r| r["expr"].as_str())
        .unwrap_or_else(|| panic!("no alert {name} in deploy/alerts/k8s-upgrade-chain.rules.yaml"))
        .to_string()
}

/// The path of a fixture under `tests/fixtures/prometheus/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prometheus").join(name)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

/// A child process killed (and reaped) on drop, with its output in a log file.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {:?}: {e}", cmd.get_program()));
        Self { child: Some(child), log }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `url` until it answers 2xx; panics with the process log at the deadline or if the
/// process died.
async fn wait_ready(proc: &mut Proc, url: &str) -> Result<(), String> {
    let client = http();
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if proc.exited() {
            return Err(format!("process exited before {url} was ready:\n{}", proc.log()));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{url} not ready within {START_DEADLINE:?}:\n{}", proc.log()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `prometheus-pushgateway` (no persistence).
pub struct Pushgateway {
    proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The listen address `127.0.0.1:<port>`.
    pub addr: String,
    _dir: TempDir,
}

impl Pushgateway {
    /// Starts one and waits for `/-/ready`.
    pub async fn start() -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let mut proc = Proc::spawn(
                Command::new(PUSHGATEWAY).arg(format!("--web.listen-address={addr}")),
                dir.path().join("pushgateway.log"),
            );
            let url = format!("http://{addr}");
            match wait_ready(&mut proc, &format!("{url}/-/ready")).await {
                Ok(()) => {
                    return Self { proc, url, addr, _dir: dir };
                }
                Err(e) => last = e, // most likely the port was taken in between: retry
            }
        }
        panic!("pushgateway did not start: {last}");
    }

    /// Pushes raw 0.0.4 text to `job/<job>` (POST), bypassing the code under test.
    pub async fn push_raw(&self, job: &str, text: &str) {
        let resp = http()
            .post(format!("{}/metrics/job/{job}", self.url))
            .header("content-type", "text/plain; version=0.0.4")
            .body(text.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "raw push failed: {}", resp.status());
    }

    /// The raw `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        http().get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap()
    }

    /// The process log (for failure messages).
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// A running `prometheus` with rule files and (optionally) a Pushgateway scraped every second.
pub struct Prometheus {
    proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the given rule fixtures (names under tests/fixtures/prometheus),
    /// 1 s scrape and evaluation intervals, scraping `pushgateway` if given; waits for `/-/ready`.
    pub async fn start(rule_fixtures: &[&str], pushgateway: Option<&Pushgateway>) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let rules: Vec<String> =
                rule_fixtures.iter().map(|r| format!("  - {:?}", fixture(r).display().to_string())).collect();
            let scrape = match pushgateway {
                Some(pgw) => format!(
                    "scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: [{:?}]\n",
                    pgw.addr
                ),
                None => String::new(),
            };
            let config = format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\n{scrape}",
                rules.join("\n")
            );
            let config_path = dir.path().join("prometheus.yml");
            std::fs::write(&config_path, config).unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let mut proc = Proc::spawn(
                Command::new(PROMETHEUS)
                    .arg(format!("--config.file={}", config_path.display()))
                    .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                    .arg(format!("--web.listen-address={addr}")),
                dir.path().join("prometheus.log"),
            );
            let url = format!("http://{addr}");
            match wait_ready(&mut proc, &format!("{url}/-/ready")).await {
                Ok(()) => {
                    return Self { proc, url, _dir: dir };
                }
                Err(e) => last = e,
            }
        }
        panic!("prometheus did not start: {last}");
    }

    /// Kills the process now (to test an unreachable Prometheus).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// `(alertname, state)` of every alert Prometheus reports, read with plain JSON (not the
    /// code under test).
    pub async fn alert_states(&self) -> Vec<(String, String)> {
        let v: serde_json::Value =
            http().get(format!("{}/api/v1/alerts", self.url)).send().await.unwrap().json().await.unwrap();
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Waits (deadline 60 s) until every `(name, state)` is reported, e.g. `("X", "firing")`.
    pub async fn wait_for_alerts(&self, want: &[(&str, &str)]) {
        self.wait_until(
            |states| want.iter().all(|(n, s)| states.iter().any(|(an, st)| an == n && st == s)),
            &format!("alerts {want:?}"),
        )
        .await;
    }

    /// Waits (deadline 60 s) until no alert named `name` is firing.
    pub async fn wait_for_not_firing(&self, name: &str) {
        self.wait_until(
            |states| !states.iter().any(|(an, st)| an == name && st == "firing"),
            &format!("{name} to stop firing"),
        )
        .await;
    }

    async fn wait_until(&self, ok: impl Fn(&[(String, String)]) -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let states = self.alert_states().await;
            if ok(&states) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; have {states:?}\n{}",
                self.proc.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The samples of the instant `query` (the `data.result` array), read with plain JSON.
    pub async fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let mut url = url::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("query", query);
        let v: serde_json::Value = http().get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["status"], "success", "{query}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (deadline 60 s) until the instant `query` returns at least one sample.
    pub async fn wait_for_series(&self, query: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut url = url::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
            url.query_pairs_mut().append_pair("query", query);
            let v: serde_json::Value = http().get(url).send().await.unwrap().json().await.unwrap();
            if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for series {query}: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One request seen by a [`StubHttp`].
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// e.g. `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// What a [`StubHttp`] answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status code, extra headers, body.
    Status(u16, Vec<(String, String)>, String),
    /// Read the request and never answer (to test client timeouts).
    Hang,
}

/// A tiny HTTP/1.1 server on a free loopback port that records requests and gives one
/// scripted reply to every request. Stops when dropped.
pub struct StubHttp {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StubHttp {
    /// Starts answering every request with `reply`.
    pub async fn start(reply: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    seen.lock().unwrap().push(req);
                    match reply {
                        Reply::Hang => {
                            // Hold the connection open well past any client timeout in tests.
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        Reply::Status(code, headers, body) => {
                            let mut head = format!(
                                "HTTP/1.1 {code} Stub\r\ncontent-length: {}\r\nconnection: close\r\n",
                                body.len()
                            );
                            for (k, v) in headers {
                                head.push_str(&format!("{k}: {v}\r\n"));
                            }
                            head.push_str("\r\n");
                            let _ = sock.write_all(head.as_bytes()).await;
                            let _ = sock.write_all(body.as_bytes()).await;
                            let _ = sock.shutdown().await;
                        }
                    }
                });
            }
        });
        Self { url, seen, task }
    }

    /// A stub answering `code` with a JSON body.
    pub async fn json(code: u16, body: &str) -> Self {
        Self::start(Reply::Status(
            code,
            vec![("content-type".into(), "application/json".into())],
            body.into(),
        ))
        .await
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for StubHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<SeenRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Some(SeenRequest { method, path, headers, body })
}
