//! Real Prometheus and Pushgateway processes for tests, plus a scripted HTTP stub.
//!
//! Each harness starts its own process from the Debian package binaries on a free loopback
//! port, waits for readiness with a deadline, and kills the process on drop. The system
//! services the Debian packages may start are neither used nor touched.
//!
//! **Every piece of state lives in the test's own temp dir**, removed when the harness is
//! dropped: the Debian builds default to shared files (`prometheus-pushgateway
//! --persistence.file=/var/lib/prometheus/pushgateway.data`, `prometheus
//! --storage.tsdb.path=/var/lib/prometheus/metrics2/`), so a
//! Pushgateway started without the flag loads whatever an earlier one (another test, another
//! run, another suite on the machine) wrote there at shutdown (issue 17 item 8). [`state_flags`]
//! lists the flags each harness sets, and `tests/harness.rs` checks them against every
//! path-valued default the installed binaries print in `--help`.
//!
//! **Readiness is checked against the process itself**: `/-/ready` answering is not enough,
//! since the port was free when we picked it and another test's process may have taken it
//! before ours bound it. After `/-/ready` the harness reads the server's own flags
//! (`/api/v1/status`, `/api/v1/status/flags`) and requires the state path of *its* temp dir.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";
/// Deadline for a process to become ready.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for a graceful stop (SIGTERM) before the process is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

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

/// The flags through which each harness keeps a binary's state in its temp dir `dir`, as
/// `(binary, flag, value)`. The one place these paths are chosen: the harnesses start their
/// processes with them, and `tests/harness.rs` checks that they cover every path-valued
/// default of the installed binaries.
pub fn state_flags(binary: &str, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    match binary {
        PUSHGATEWAY => vec![("persistence.file", dir.join("pushgateway.data"))],
        PROMETHEUS => {
            vec![("config.file", dir.join("prometheus.yml")), ("storage.tsdb.path", dir.join("data"))]
        }
        other => panic!("no state flags known for {other}"),
    }
}

fn state_args(binary: &str, dir: &Path) -> Vec<String> {
    state_flags(binary, dir).into_iter().map(|(f, p)| format!("--{f}={}", p.display())).collect()
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

    /// SIGTERM, as a service manager stops it (the Pushgateway then writes its persistence
    /// file), and waits for the exit; killed after [`STOP_DEADLINE`].
    fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = std::time::Instant::now() + STOP_DEADLINE;
        while c.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `url` until it answers 2xx; Err with the process log at the deadline or if the
/// process died. Readiness alone does not prove the answer came from `proc`: see
/// [`check_flag`].
async fn wait_ready(proc: &mut Proc, url: &str) -> Result<(), String> {
    let client = http();
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    loop {
        if proc.exited() {
            return Err(format!("process exited before {url} was ready:\n{}", proc.log()));
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{url} not ready within {START_DEADLINE:?}:\n{}", proc.log()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the server at `url` (a status endpoint answering `{"data": ...}`) runs with `flag`
/// set to `want`, i.e. it is the process this harness started and not another one that took
/// the port first. `flags_at` is the JSON pointer of the flags object in `data`.
async fn check_flag(url: &str, flags_at: &str, flag: &str, want: &Path) -> Result<(), String> {
    let v: serde_json::Value = http()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let have = v["data"].pointer(flags_at).and_then(|f| f.get(flag)).and_then(|f| f.as_str());
    if have == Some(want.to_str().unwrap()) {
        Ok(())
    } else {
        Err(format!(
            "{url} answers with {flag}={have:?}, not ours ({}): another process holds the port",
            want.display()
        ))
    }
}

/// A running `prometheus-pushgateway`, its persistence file in its own temp dir.
pub struct Pushgateway {
    proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The listen address `127.0.0.1:<port>`.
    pub addr: String,
    dir: TempDir,
}

impl Pushgateway {
    /// Starts one and waits until it is ready and proven to be ours.
    pub async fn start() -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("pushgateway-").tempdir().unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let mut proc = Proc::spawn(
                Command::new(PUSHGATEWAY)
                    .arg(format!("--web.listen-address={addr}"))
                    .args(state_args(PUSHGATEWAY, dir.path())),
                dir.path().join("pushgateway.log"),
            );
            let url = format!("http://{addr}");
            let persistence = &state_flags(PUSHGATEWAY, dir.path())[0].1;
            let ready = match wait_ready(&mut proc, &format!("{url}/-/ready")).await {
                Ok(()) => {
                    check_flag(&format!("{url}/api/v1/status"), "/flags", "persistence.file", persistence)
                        .await
                }
                Err(e) => Err(e),
            };
            match ready {
                Ok(()) => return Self { proc, url, addr, dir },
                Err(e) => last = e, // most likely the port was taken in between: retry
            }
        }
        panic!("pushgateway did not start: {last}");
    }

    /// The temp dir holding its state (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops it the way a service manager does (SIGTERM): the Pushgateway writes its
    /// persistence file on the way out.
    pub fn stop_gracefully(&mut self) {
        self.proc.terminate();
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

/// A running `prometheus` with rule files and (optionally) a Pushgateway scraped every second,
/// its configuration and TSDB in its own temp dir.
pub struct Prometheus {
    proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the given rule fixtures (names under tests/fixtures/prometheus),
    /// 1 s scrape and evaluation intervals, scraping `pushgateway` if given; waits until it is
    /// ready and proven to be ours.
    pub async fn start(rule_fixtures: &[&str], pushgateway: Option<&Pushgateway>) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("prometheus-").tempdir().unwrap();
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
            let flags = state_flags(PROMETHEUS, dir.path());
            std::fs::write(&flags[0].1, config).unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let mut proc = Proc::spawn(
                Command::new(PROMETHEUS)
                    .args(state_args(PROMETHEUS, dir.path()))
                    .arg(format!("--web.listen-address={addr}")),
                dir.path().join("prometheus.log"),
            );
            let url = format!("http://{addr}");
            let ready = match wait_ready(&mut proc, &format!("{url}/-/ready")).await {
                Ok(()) => {
                    check_flag(&format!("{url}/api/v1/status/flags"), "", "storage.tsdb.path", &flags[1].1)
                        .await
                }
                Err(e) => Err(e),
            };
            match ready {
                Ok(()) => return Self { proc, url, dir },
                Err(e) => last = e,
            }
        }
        panic!("prometheus did not start: {last}");
    }

    /// The temp dir holding its configuration and TSDB (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the process now (to test an unreachable Prometheus).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Stops it with SIGTERM (it closes its TSDB cleanly) and waits for the exit.
    pub fn stop_gracefully(&mut self) {
        self.proc.terminate();
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

/// A recording proxy in front of a real [`Pushgateway`]: every request sent to [`Self::url`]
/// is kept and forwarded, and the Pushgateway's answer goes back unchanged. The sequence of
/// pushes is what a test needs to see a flap (1 → 0 → 1), which the final state hides.
pub struct PushRecorder {
    /// `http://127.0.0.1:<port>`, to use as the Pushgateway URL of the code under test.
    pub url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PushRecorder {
    /// Starts a recorder forwarding to `upstream`.
    pub async fn start(upstream: &Pushgateway) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, upstream) = (seen.clone(), upstream.url.clone());
        let task = tokio::spawn(async move {
            let client = http();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let (seen, client, upstream) = (seen2.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else { return };
                    seen.lock().unwrap().push(req.clone());
                    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
                    let mut fwd = client.request(method, format!("{upstream}{}", req.path)).body(req.body);
                    if let Some((_, ct)) = req.headers.iter().find(|(k, _)| k == "content-type") {
                        fwd = fwd.header("content-type", ct);
                    }
                    let (code, body) = match fwd.send().await {
                        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                        Err(e) => (502, format!("recorder: upstream failed: {e}")),
                    };
                    let head = format!(
                        "HTTP/1.1 {code} Recorded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { url, seen, task }
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// The values of `metric` in every push (POST or PUT) to the group `job/<job>`, in order.
    pub fn pushed(&self, job: &str, metric: &str) -> Vec<f64> {
        pushed_values(&self.seen(), job, metric)
    }
}

/// The values of `metric` in the pushes (POST or PUT) of `requests` to the group `job/<job>`.
pub fn pushed_values(requests: &[SeenRequest], job: &str, metric: &str) -> Vec<f64> {
    let group = format!("/metrics/job/{job}");
    requests
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT"))
        .filter(|r| r.path == group || r.path.starts_with(&format!("{group}/")))
        .flat_map(|r| {
            r.body
                .lines()
                .filter(|l| l.split([' ', '{']).next() == Some(metric))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Drop for PushRecorder {
    fn drop(&mut self) {
        self.task.abort();
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
