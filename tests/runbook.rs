//! The runbook and the README say what the binary does; these tests hold them to it.
//!
//! - Every `k8s-upgrade-chain ...` command line in docs/runbook.md parses with the real CLI.
//! - A setting quoted as `` `drain.timeout` (default 30m) `` has that built-in default; the
//!   leaked-latch age is the detector's.
//! - No command the binary has is called missing ("not in this build").
//! - What the docs say happens to a node whose drain times out, or whose drain the kill switch
//!   halts, is what the phase does: both run on the test apiserver with real sshd nodes,
//!   Prometheus and Pushgateway, and the observed node state is compared with the text.

mod support;

use std::time::Duration;

use chain_core::{
    plan::{Kind, Step},
    settings::Settings,
};
use clap::{CommandFactory as _, Parser as _};
use k8s_upgrade_chain::{
    chain::{self, Ended, StepInput},
    cli::Cli,
    k8s::spawn::OnComplete,
};
use sim::apiserver::fixtures as tf;
use support::chain::{Cluster, Layout, NS};

fn doc(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The documents whose claims are checked here.
const DOCS: [&str; 3] = ["docs/runbook.md", "README.md", "docs/architecture.md"];

/// Splits a shell command line into words: quotes and backslash escapes handled, stops at a
/// pipe, redirection, `&&`, `;` or comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        _ => cur.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '|' | '>' | '<' | ';' | '&' | '#' if !in_word => break,
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Command lines starting with `k8s-upgrade-chain` inside fenced code blocks.
fn runbook_commands() -> Vec<(usize, String)> {
    let text = doc("docs/runbook.md");
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced && t.starts_with("k8s-upgrade-chain") {
            out.push((i + 1, t.to_string()));
        }
    }
    out
}

/// The subcommand: the first word after the binary that is not a flag or a flag's value.
fn subcommand(words: &[String]) -> Option<&str> {
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        if matches!(w.as_str(), "--config" | "--log-format" | "--context") {
            it.next();
        } else if !w.starts_with('-') {
            return Some(w);
        }
    }
    None
}

#[test]
fn runbook_commands_parse_with_the_real_cli() {
    let commands = runbook_commands();
    assert!(commands.len() >= 15, "expected the runbook's commands, found {}", commands.len());
    let mut checked = 0;
    for (line, cmd) in &commands {
        let words = shell_words(cmd);
        subcommand(&words).unwrap_or_else(|| panic!("docs/runbook.md:{line}: no subcommand in {cmd:?}"));
        if let Err(e) = Cli::try_parse_from(&words) {
            panic!("docs/runbook.md:{line}: {cmd:?} does not parse:\n{e}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} commands were checked");
}

#[test]
fn the_checker_rejects_wrong_flags() {
    for bad in [
        "k8s-upgrade-chain status --output yaml",
        "k8s-upgrade-chain manifests --namespace x",
        "k8s-upgrade-chain report --now 1",
    ] {
        assert!(Cli::try_parse_from(shell_words(bad)).is_err(), "{bad}");
    }
    assert_eq!(
        shell_words("k8s-upgrade-chain render --phase worker --node 'a b' | kubectl apply -f -"),
        ["k8s-upgrade-chain", "render", "--phase", "worker", "--node", "a b"]
    );
}

/// The built-in default of a setting (`drain.kill_switch_interval`) as the config file writes it
/// (`5s`), or None when there is no such setting.
fn default_of(key: &str) -> Option<String> {
    let mut v = serde_json::to_value(Settings::default()).unwrap();
    for part in key.split('.') {
        v = v.get(part)?.clone();
    }
    Some(match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

#[test]
fn settings_the_docs_quote_have_those_defaults() {
    let quoted = regex::Regex::new(r"`([a-z_]+(?:\.[a-z_]+)+)` \(default ([^)]+)\)").unwrap();
    let mut checked = Vec::new();
    for path in DOCS {
        let text = doc(path).replace('\n', " ");
        for c in quoted.captures_iter(&text) {
            let (key, claimed) = (&c[1], c[2].trim());
            let actual = default_of(key).unwrap_or_else(|| panic!("{path}: `{key}` is not a setting"));
            assert_eq!(
                claimed, actual,
                "{path} says `{key}` (default {claimed}); the built-in default is {actual}"
            );
            checked.push(key.to_string());
        }
    }
    for key in ["drain.kill_switch_interval", "drain.timeout", "ssh.user", "ssh.host_key_policy"] {
        assert!(checked.iter().any(|k| k == key), "the runbook no longer quotes `{key}`: {checked:?}");
    }
    // The checker catches a wrong figure.
    assert_ne!(default_of("drain.kill_switch_interval").as_deref(), Some("60s"));
    assert_eq!(default_of("no.such.key"), None);
}

#[test]
fn the_leaked_latch_age_the_docs_give_is_the_detectors() {
    let age = regex::Regex::new(r"latch[^.]*?(\d+) h\b").unwrap();
    let hours = chain::detect::LEAK_AGE.as_secs() / 3600;
    let mut found = 0;
    for path in DOCS {
        let text = doc(path).replace('\n', " ");
        for c in age.captures_iter(&text) {
            assert_eq!(c[1].parse::<u64>().unwrap(), hours, "{path}: {}", &c[0]);
            found += 1;
        }
    }
    assert!(found >= 2, "the runbook and the README both give the age");
}

#[test]
fn no_command_the_binary_has_is_called_missing() {
    let commands: Vec<String> = Cli::command().get_subcommands().map(|c| c.get_name().to_string()).collect();
    assert!(commands.iter().any(|c| c == "rehearse"), "{commands:?}");
    let missing = regex::Regex::new(r"(?i)not (?:in this build|implemented|available)( yet)?").unwrap();
    let word = |line: &str, w: &str| {
        line.to_lowercase().split(|c: char| !c.is_ascii_alphanumeric() && c != '-').any(|x| x == w)
    };
    for path in DOCS.iter().chain(["docs/configuration.md"].iter()) {
        // A claim and the line before it (a marker often ends the sentence that names the command).
        let text = doc(path);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !missing.is_match(line) {
                continue;
            }
            let context = format!("{} {line}", if i > 0 { lines[i - 1] } else { "" });
            for c in &commands {
                assert!(
                    !word(&context, c),
                    "{path}:{}: says `{c}` is missing, but the binary has it: {line}",
                    i + 1
                );
            }
        }
    }
    // The checker catches the old wording.
    let old = "4. Rehearse a whole chain against the in-process test apiserver (not in this build yet):";
    assert!(missing.is_match(old) && word(old, "rehearse"));
}

/// The comment lines above `section.key` in docs/configuration.md's reference block.
fn documented(key: &str) -> String {
    let text = doc("docs/configuration.md");
    let (section, name) = key.split_once('.').unwrap();
    let mut in_section = false;
    let mut comment = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') {
            in_section = line.trim_end() == format!("{section}:");
            comment.clear();
            continue;
        }
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            comment.push(c.trim().to_string());
        } else if in_section && t.starts_with(&format!("{name}:")) {
            return comment.join(" ");
        } else {
            comment.clear();
        }
    }
    panic!("docs/configuration.md does not document {key}");
}

/// The README bullet that says which failures uncordon a node.
fn readme_node_state() -> String {
    let text = doc("README.md").replace('\n', " ");
    let start = text.find("**Node state on failure.**").expect("the README's node-state bullet");
    let rest = &text[start..];
    rest[..rest[2..].find("- **").map_or(rest.len(), |i| i + 2)].to_string()
}

fn small(net: u8) -> Layout<'static> {
    Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.1",
        target: "1.34.2",
        net,
    }
}

/// A pod on `node` that never finishes terminating (a finalizer nobody removes): the drain
/// waits for it until its deadline or the kill switch.
fn stuck_pod(c: &Cluster, node: &str) {
    c.srv.insert(
        tf::pod("stuck-0")
            .ns("apps")
            .on(node)
            .owned_by_replicaset("web")
            .labels(&[("app", "stuck")])
            .finalizer("example.com/hold")
            .grace(1)
            .build(),
    );
}

async fn worker_job(c: &Cluster, node: &str) -> k8s_openapi::api::batch::v1::Job {
    let ctx = c.ctx();
    let snap = ctx.snapshot().await.unwrap();
    chain::spawn_step(
        &ctx,
        &snap,
        &Step::worker(node),
        "1.34.2".parse().unwrap(),
        Kind::Patch,
        OnComplete::Skip,
    )
    .await
    .unwrap();
    c.srv.get(Some(NS), &format!("k8s-upgrade-worker-1-34-2-{node}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_the_docs_say_happens_to_a_node_whose_drain_times_out_is_what_happens() {
    let c = Cluster::start(small(77)).await;
    stuck_pod(&c, "k8s-node1");
    let job = worker_job(&c, "k8s-node1").await;
    let mut settings = c.settings.clone();
    settings.drain.timeout = Duration::from_secs(3);
    let ran = c.run_job_with(&job, settings).await;
    let err = ran.result.unwrap_err();
    assert!(err.contains("drain of node k8s-node1 failed"), "{err}");
    assert_eq!(c.kubelet("k8s-node1"), "v1.34.1", "its upgrade never started");
    let cordoned = c.cordoned("k8s-node1");

    let config = documented("drain.timeout");
    let readme = readme_node_state();
    if cordoned {
        panic!("the node stayed cordoned; the docs say: {config} / {readme}");
    }
    assert!(
        config.contains("uncordoned") && !config.contains("stays cordoned"),
        "docs/configuration.md drain.timeout: {config}"
    );
    assert!(readme.contains("drain timeout") && readme.contains("uncordons"), "README: {readme}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_the_runbook_says_a_kill_switch_does_to_a_drain_is_what_happens() {
    let c = Cluster::start(small(78)).await;
    stuck_pod(&c, "k8s-node1");
    worker_job(&c, "k8s-node1").await;
    let mut settings = c.settings.clone();
    settings.drain.kill_switch_interval = Duration::from_secs(1);
    let ctx = c.ctx_with(settings);
    let input =
        StepInput { step: Step::worker("k8s-node1"), target: "1.34.2".parse().unwrap(), kind: Kind::Patch };
    // The operator creates the kill switch once the drain is under way (the node cordoned).
    let operator = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !c.cordoned("k8s-node1") {
            assert!(tokio::time::Instant::now() < deadline, "the drain never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.srv.insert(tf::configmap(NS, "k8s-upgrade-killswitch", &[("reason", "storage storm")]));
    };
    let (ended, ()) = tokio::join!(chain::run_step(&ctx, &input), operator);
    assert_eq!(ended.unwrap(), Ended::Halted("storage storm".into()), "halted mid-drain, exit 0");
    let cordoned = c.cordoned("k8s-node1");
    assert_eq!(c.kubelet("k8s-node1"), "v1.34.1");

    let runbook = doc("docs/runbook.md").replace('\n', " ");
    let stop = &runbook[runbook.find("Stop: every phase").expect("the runbook's kill switch section")..];
    let stop = &stop[..stop.find("```").unwrap()];
    assert!(stop.contains("`drain.kill_switch_interval`"), "{stop}");
    if cordoned {
        panic!("the node stayed cordoned; the runbook says: {stop}");
    }
    assert!(stop.contains("uncordons the node"), "{stop}");
    assert!(readme_node_state().contains("kill switch"), "{}", readme_node_state());
}
