//! Every `k8s-upgrade-chain ...` command line in docs/runbook.md parses with the real CLI.

use clap::Parser as _;
use k8s_upgrade_chain::cli::Cli;

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
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbook.md")).unwrap();
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
