//! The HTTP services a rehearsal simulates on loopback, so the chain's requests are real HTTP:
//! a Prometheus with no alert firing and empty query results, a Pushgateway that stores pushes
//! and serves them on `/metrics`, and an apt repository for the next-minor probe of detection.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use chain_core::version::Version;

/// A parsed HTTP request (just what the simulators need).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string (without `?`).
    pub query: String,
    /// Body as text.
    pub body: String,
}

/// Status, content type and body.
type Response = (u16, &'static str, String);

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A tiny HTTP/1.1 server on `127.0.0.1:0` (one request per connection), stopped on drop.
pub struct Server {
    /// `http://127.0.0.1:<port>/`.
    pub url: url::Url,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(handler: Handler) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?).parse().expect("loopback URL");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                let (handler, counter) = (handler.clone(), counter.clone());
                tokio::spawn(async move {
                    // Every wait has a deadline: a stuck client cannot hold a task forever.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), serve(sock, handler, counter)).await;
                });
            }
        });
        Ok(Self { url, requests, task })
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn serve(mut sock: tokio::net::TcpStream, handler: Handler, counter: Arc<AtomicUsize>) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or("/"));
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let req = Request {
        method: method.clone(),
        path: path.to_string(),
        query: query.to_string(),
        body: String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string(),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let (code, ctype, body) = handler(&req);
    let head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        if code < 400 { "OK" } else { "Error" },
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    if method != "HEAD" {
        let _ = sock.write_all(body.as_bytes()).await;
    }
    let _ = sock.shutdown().await;
}

/// A simulated Prometheus: `GET /api/v1/alerts` (no alert firing) and `GET /api/v1/query`
/// (an empty vector), at the root or under any route prefix (`<prefix>/api/v1/alerts`, as a
/// Prometheus started with `--web.route-prefix` serves them). Counts the gate's requests per
/// prefix: a rehearsal gives each chain Job its own prefix ([`Self::url_under`]) to tell whose
/// checks they were while several Jobs run.
pub struct Prometheus {
    /// The server.
    pub server: Server,
    /// Route prefix (`""` at the root) → `GET <prefix>/api/v1/alerts` requests.
    alert_checks: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Prometheus {
    /// Starts it on loopback.
    pub async fn start() -> std::io::Result<Self> {
        let checks = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
        let c = checks.clone();
        let server = Server::start(Arc::new(move |req: &Request| {
            if let Some(prefix) = req.path.strip_suffix("/api/v1/alerts") {
                *c.lock().expect("sim lock").entry(prefix.to_string()).or_default() += 1;
                (200, "application/json", r#"{"status":"success","data":{"alerts":[]}}"#.into())
            } else if req.path.ends_with("/api/v1/query") {
                (
                    200,
                    "application/json",
                    r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into(),
                )
            } else {
                (404, "text/plain", "404 page not found\n".into())
            }
        }))
        .await?;
        Ok(Self { server, alert_checks: checks })
    }

    /// The base URL of route prefix `prefix` (a path such as `/job/a`; `""` is the root):
    /// `http://127.0.0.1:<port><prefix>/`, the form `alerts.prometheus_url` takes.
    pub fn url_under(&self, prefix: &str) -> url::Url {
        let mut url = self.server.url.clone();
        url.set_path(&format!("{}/", prefix.trim_end_matches('/')));
        url
    }

    /// `GET /api/v1/alerts` requests so far under every prefix (one per alert-gate check).
    pub fn alert_checks(&self) -> usize {
        self.alert_checks.lock().expect("sim lock").values().sum()
    }

    /// `GET <prefix>/api/v1/alerts` requests so far under route prefix `prefix` (as given to
    /// [`Self::url_under`]).
    pub fn alert_checks_under(&self, prefix: &str) -> usize {
        let key = prefix.trim_end_matches('/');
        self.alert_checks.lock().expect("sim lock").get(key).copied().unwrap_or(0)
    }
}

/// One Pushgateway group: its grouping labels and, per metric family, the pushed lines.
type Groups = BTreeMap<Vec<(String, String)>, BTreeMap<String, Vec<String>>>;

/// A simulated Pushgateway: `POST` (replace the families pushed), `PUT` (replace the group)
/// and `DELETE` on `/metrics/job/<job>[/<label>/<value>...]`, and `GET /metrics` with every
/// sample labelled by its group, as the real one serves them.
pub struct Pushgateway {
    /// The server.
    pub server: Server,
    groups: Arc<Mutex<Groups>>,
}

impl Pushgateway {
    /// Starts it on loopback.
    pub async fn start() -> std::io::Result<Self> {
        let groups: Arc<Mutex<Groups>> = Arc::default();
        let g = groups.clone();
        let server = Server::start(Arc::new(move |req: &Request| {
            let mut groups = g.lock().expect("pushgateway lock");
            if req.path == "/metrics" && req.method == "GET" {
                return (200, "text/plain; version=0.0.4", render(&groups));
            }
            let Some(key) = req.path.strip_prefix("/metrics/").and_then(grouping_key) else {
                return (404, "text/plain", "not found\n".into());
            };
            match req.method.as_str() {
                "POST" | "PUT" => {
                    let families = parse_families(&req.body);
                    let group = groups.entry(key).or_default();
                    if req.method == "PUT" {
                        group.clear();
                    }
                    group.extend(families);
                    (200, "text/plain", String::new())
                }
                "DELETE" => {
                    groups.remove(&key);
                    (202, "text/plain", String::new())
                }
                _ => (405, "text/plain", "method not allowed\n".into()),
            }
        }))
        .await?;
        Ok(Self { server, groups })
    }

    /// What `GET /metrics` serves now.
    pub fn metrics_text(&self) -> String {
        render(&self.groups.lock().expect("pushgateway lock"))
    }
}

/// `job/<job>/<label>/<value>...` (values possibly `<label>@base64/<value>`) to labels.
fn grouping_key(path: &str) -> Option<Vec<(String, String)>> {
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() < 2 || !segs.len().is_multiple_of(2) || segs[0] != "job" {
        return None;
    }
    segs.chunks(2)
        .map(|kv| {
            let value = match kv[0].strip_suffix("@base64") {
                Some(_) => String::from_utf8(base64_url_decode(kv[1])?).ok()?,
                None => percent_decode(kv[1]),
            };
            Some((kv[0].trim_end_matches("@base64").to_string(), value))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn base64_url_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

/// Sample lines of exposition text, by family name (`# HELP`/`# TYPE` kept with their family).
fn parse_families(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = match line.strip_prefix("# ") {
            Some(rest) => rest.split_whitespace().nth(1).unwrap_or_default(),
            None => line.split(|c: char| c == '{' || c.is_whitespace()).next().unwrap_or_default(),
        };
        if !name.is_empty() {
            out.entry(name.to_string()).or_default().push(line.to_string());
        }
    }
    out
}

/// Every group's samples with the grouping labels added.
fn render(groups: &Groups) -> String {
    let mut out = String::new();
    for (key, families) in groups {
        let extra: Vec<String> = key
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", chain_core::metrics::escape_label_value(v)))
            .collect();
        for lines in families.values() {
            for line in lines {
                if line.starts_with('#') {
                    out.push_str(line);
                } else if let Some((name, rest)) = line.split_once('{') {
                    let sep = if rest.starts_with('}') { "" } else { "," };
                    out.push_str(&format!("{name}{{{}{sep}{rest}", extra.join(",")));
                } else if let Some((name, value)) = line.split_once(char::is_whitespace) {
                    out.push_str(&format!("{name}{{{}}} {value}", extra.join(",")));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// A simulated apt repository at `/v<X.Y>/deb/` (`Release`, `Release.key`, `Packages`) offering
/// `versions`, for detection's next-minor probe.
pub async fn apt_repository(versions: Vec<Version>) -> std::io::Result<Server> {
    Server::start(Arc::new(move |req: &Request| {
        let mut parts = req.path.trim_start_matches('/').splitn(3, '/');
        let (track, deb, file) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
        let in_track: Vec<&Version> =
            versions.iter().filter(|v| format!("v{}", v.minor_track()) == track).collect();
        if in_track.is_empty() || deb != Some("deb") {
            return (404, "text/plain", "not found\n".into());
        }
        match file {
            Some("Release") => (200, "text/plain", format!("Origin: rehearsal\nSuite: {track}\n")),
            Some("Release.key") => (200, "text/plain", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n".into()),
            Some("Packages") => (
                200,
                "text/plain",
                in_track
                    .iter()
                    .map(|v| format!("Package: kubeadm\nVersion: {v}-1.1\nArchitecture: amd64\n\n"))
                    .collect(),
            ),
            _ => (404, "text/plain", "not found\n".into()),
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTTP/1.1 GET over loopback; the status code.
    async fn get(url: &url::Url) -> u16 {
        let mut sock = tokio::net::TcpStream::connect(url.socket_addrs(|| None).unwrap()[0]).await.unwrap();
        let req = format!("GET {} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", url.path());
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).await.unwrap();
        out.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn prometheus_counts_alert_checks_per_route_prefix() {
        let prom = Prometheus::start().await.unwrap();
        let a = prom.url_under("/job/a");
        assert_eq!(a.path(), "/job/a/");
        for _ in 0..2 {
            assert_eq!(get(&a.join("api/v1/alerts").unwrap()).await, 200);
        }
        assert_eq!(get(&prom.url_under("/job/b").join("api/v1/alerts").unwrap()).await, 200);
        assert_eq!(get(&prom.server.url.join("api/v1/alerts").unwrap()).await, 200);
        assert_eq!(get(&a.join("api/v1/query").unwrap()).await, 200);
        assert_eq!(get(&a.join("api/v1/other").unwrap()).await, 404);
        assert_eq!(prom.alert_checks_under("/job/a"), 2);
        assert_eq!(prom.alert_checks_under("/job/b/"), 1);
        assert_eq!(prom.alert_checks_under(""), 1);
        assert_eq!(prom.alert_checks_under("/job/c"), 0);
        assert_eq!(prom.alert_checks(), 4);
    }

    #[test]
    fn base64_group_values_decode() {
        assert_eq!(
            grouping_key("job/k8s-version-upgrade/node@base64/=").unwrap(),
            [("job".to_string(), "k8s-version-upgrade".to_string()), ("node".to_string(), String::new())]
        );
        assert_eq!(base64_url_decode("YS9i").unwrap(), b"a/b");
    }
}
