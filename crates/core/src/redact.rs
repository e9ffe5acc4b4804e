//! Keeping secrets out of messages: the SSH key and the Slack webhook URL are never printed or
//! logged, even when an operator points an input (`--config`, `--nodes-file`, `job.template`)
//! at one of their files by mistake (QA A5).
//!
//! Two layers: parser messages are cut where they are made ([`parser_message`]: quoted values
//! shortened to a prefix, PEM private keys masked, YAML parsed without source snippets
//! ([`yaml_options`])), and the shell masks PEM blocks and the values of the configured secret
//! files once more where errors and logs leave the process ([`mask`]).

use std::{borrow::Cow, sync::LazyLock};

use regex::Regex;

/// What stands in for a PEM private key.
pub const PEM_MASK: &str = "<private key redacted>";

/// What stands in for a known secret value (the webhook URL).
pub const SECRET_MASK: &str = "<secret redacted>";

/// How many characters of a quoted value a parser message keeps.
pub const QUOTED_PREFIX: usize = 16;

/// A PEM private-key block (any key type: `RSA`, `EC`, `OPENSSH`, `ENCRYPTED`...): from its
/// BEGIN line to its END line, or, when the END line is missing (a value cut short, or the
/// lines folded into one by YAML), to the end of the quoted value or of the text. Base64
/// never holds a `"`.
static PEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----(?:[^"]*?-----END[ A-Z0-9]*PRIVATE KEY-----|[^"]*)"#)
        .expect("a valid pattern")
});

/// A double-quoted value in a serde or YAML message (`invalid type: string "..."`), with
/// escaped quotes inside.
static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*""#).expect("a valid pattern"));

/// The lines of a rustc-like source snippet that YAML parsers (serde-saphyr, through kube's
/// kubeconfig reader too) append to an error: ` --> <input>:2:11`, `  |`, `2 | clusters: ...`.
static SNIPPET_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)\n[ \t]*(?:-->[^\n]*|[0-9]*[ \t]*\|[^\n]*)$").expect("a valid pattern")
});

/// Removes source snippets ([`SNIPPET_LINE`]) from `text`: they quote the file's lines, and a
/// kubeconfig holds tokens and keys (its parse error reaches us from kube with a snippet).
pub fn strip_snippets(text: &str) -> Cow<'_, str> {
    SNIPPET_LINE.replace_all(text, "")
}

/// Masks every PEM private-key block of `text` with [`PEM_MASK`].
pub fn mask_pem(text: &str) -> Cow<'_, str> {
    PEM.replace_all(text, PEM_MASK)
}

/// Removes source snippets, masks PEM private keys and every occurrence of the `secrets` (values of at least 8
/// characters; shorter ones would mask ordinary words) with [`SECRET_MASK`].
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = mask_pem(&strip_snippets(text)).into_owned();
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), SECRET_MASK);
        }
    }
    out
}

/// A parser's message made fit to print: PEM keys masked, each quoted value longer than
/// [`QUOTED_PREFIX`] characters cut to that prefix (`"https://hooks.sl…"`), then the whole
/// cut after [`crate::names::MESSAGE_MAX`] characters. serde quotes the value it refused, and
/// a config or node file that is really a secret file would otherwise be echoed whole.
pub fn parser_message(message: &str) -> String {
    let masked = mask_pem(message);
    let cut = QUOTED.replace_all(&masked, |c: &regex::Captures<'_>| {
        let q = &c[0];
        let inner = &q[1..q.len() - 1];
        if inner.starts_with(PEM_MASK) {
            return format!("\"{PEM_MASK}\"");
        }
        match inner.char_indices().nth(QUOTED_PREFIX) {
            None => q.to_string(),
            Some((i, _)) => format!("\"{}…\"", &inner[..i]),
        }
    });
    crate::names::shorten_message(&cut)
}

/// serde-saphyr's options for input files: no source snippet in errors (the snippet quotes the
/// file's lines, and the file may be a secret given by mistake); the location stays.
pub fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDdclruiDjG3hXkRmPEPXlkZtyRbhHtshRQqUksaZjHdgAAAIiVC0dklQtH\n-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn pem_blocks_are_masked_whole_folded_or_cut_short() {
        let text = format!("before {KEY}after");
        assert_eq!(mask_pem(&text), format!("before {PEM_MASK}\nafter"));
        // YAML folds a plain multi-line scalar into one line; serde quotes it, maybe cut.
        let folded = KEY.replace('\n', " ");
        let msg = format!("invalid type: string {:?}, expected struct Settings", &folded[..90]);
        let m = mask_pem(&msg);
        assert!(
            !m.contains("b3Blbn") && m.contains(PEM_MASK) && m.ends_with("\", expected struct Settings"),
            "{m}"
        );
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        assert_eq!(mask_pem(rsa), PEM_MASK);
        // Public keys and certificates are not secrets.
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(mask_pem(cert), cert);
    }

    #[test]
    fn source_snippets_are_removed() {
        let kube = "failed to parse kubeconfig YAML: error: line 2 column 11: expected sequence start\n \
                    --> <input>:2:11\n  |\n1 | apiVersion: v1\n2 | users: [{token: abc123secret\n  |           \
                    ^ expected sequence start)";
        assert_eq!(
            mask(kube, &[]),
            "failed to parse kubeconfig YAML: error: line 2 column 11: expected sequence start"
        );
        let plain = "first line\nsecond line: a | b";
        assert_eq!(mask(plain, &[]), plain);
    }

    #[test]
    fn known_secrets_are_masked() {
        let url = "https://hooks.slack.com/services/T0/B0/SECRETXYZ".to_string();
        let m = mask(&format!("failed: {url} and again {url}"), std::slice::from_ref(&url));
        assert_eq!(m, format!("failed: {SECRET_MASK} and again {SECRET_MASK}"));
        assert_eq!(mask("a short one", &["short".into()]), "a short one");
    }

    #[test]
    fn parser_messages_quote_only_a_prefix() {
        let m = parser_message(
            r#"invalid type: string "http://127.0.0.1:18099/services/T000/B000/SECRETTOKEN123", expected struct Doc"#,
        );
        assert_eq!(m, r#"invalid type: string "http://127.0.0.1…", expected struct Doc"#);
        assert!(!m.contains("SECRET"));
        let short = r#"invalid value: string "v1", expected batch/v1"#;
        assert_eq!(parser_message(short), short);
        let escaped = r#"unknown field "a\"bcdefghijklmnopqrstuvwxyz", expected one of "x""#;
        assert_eq!(parser_message(escaped), r#"unknown field "a\"bcdefghijklmn…", expected one of "x""#);
        let key = format!("invalid type: string {:?}", KEY.replace('\n', " "));
        assert_eq!(parser_message(&key), format!("invalid type: string \"{PEM_MASK}\""));
    }
}
