//! The scrubber: what never leaves the process in a Sentry event or
//! breadcrumb (secrets, credentials, and unless allowed, model prompts and
//! outputs).

use std::borrow::Cow;
use std::sync::LazyLock;

use ::sentry::protocol::{Breadcrumb, Event};
use regex::{Captures, Regex};
use serde_json::Value;

/// What a scrubbed value is replaced with (Sentry's own marker).
pub(super) const FILTERED: &str = "[Filtered]";

/// Names of fields that hold model prompts and outputs (the last segment of
/// a dotted name is compared, so `gen_ai.prompt` is one too).
const PROMPT_FIELDS: &[&str] = &[
    "prompt",
    "prompts",
    "completion",
    "completions",
    "input",
    "inputs",
    "output",
    "outputs",
    "response",
    "responses",
    "messages",
];

/// Does a field, header or variable name say its value is a secret?
pub(super) fn is_secret_name(name: &str) -> bool {
    const CONTAINED: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "credential",
        "authorization",
        "cookie",
    ];
    const WHOLE: &[&str] = &["pwd", "auth", "dsn", "bearer", "session"];
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words
        .iter()
        .any(|w| CONTAINED.iter().any(|c| w.contains(c)) || WHOLE.contains(w))
        || words.windows(2).any(|p| {
            p[1] == "key" && matches!(p[0], "api" | "access" | "private" | "secret" | "signing")
        })
}

/// Is this field a model prompt or output?
fn is_prompt_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let last = lower.rsplit(['.', ':']).next().unwrap_or(&lower);
    PROMPT_FIELDS.contains(&last) || last.contains("prompt") || last.contains("completion")
}

/// Keys under which text is code locations, not messages: only the literal
/// secrets are replaced there, so stack traces stay readable.
fn is_code_location(key: &str) -> bool {
    matches!(key, "frames" | "debug_meta" | "sdk" | "modules")
}

struct Patterns {
    url_userinfo: Regex,
    authorization: Regex,
    scheme_token: Regex,
    key_value: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(p).unwrap_or_else(|e| unreachable!("constant pattern: {e}"));
    Patterns {
        // scheme://user:password@host — DSNs and database URLs.
        url_userinfo: re(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@]+@"),
        // The whole value of an Authorization header, whatever its scheme.
        authorization: re(
            r#"(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:\[Filtered\]|[^"'\r\n,;}\]]+)"#,
        ),
        scheme_token: re(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*"),
        // key=value, key: value, "key":"value" for secret-looking keys.
        key_value: re(
            r#"(?i)([a-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|credentials?|cookie|dsn|session[_\-]?id)[a-z0-9_.\-]*)(["']?\s*[:=]\s*["']?)(\[Filtered\]|[^\s"',;&}\])\[]+)"#,
        ),
    }
});

/// Removes secrets, and unless allowed prompts, from what is sent to
/// Sentry.
pub(crate) struct Scrubber {
    /// Literal values to replace, longest first.
    secrets: Vec<String>,
    send_prompts: bool,
}

impl Scrubber {
    pub(crate) fn new(mut secrets: Vec<String>, send_prompts: bool) -> Self {
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber {
            secrets,
            send_prompts,
        }
    }

    /// The event with every string scrubbed; `None` if it cannot be read
    /// back, since an unscrubbed event must not be sent.
    pub(crate) fn scrub_event(&self, event: Event<'static>) -> Option<Event<'static>> {
        let mut value = serde_json::to_value(&event).ok()?;
        if let Value::Object(map) = &mut value {
            // The event's own keys (`message`, `exception`, …) are protocol,
            // not user fields: only their contents are looked at.
            for (key, v) in map.iter_mut() {
                self.scrub_value(v, !is_code_location(key));
            }
        }
        serde_json::from_value(value).ok()
    }

    pub(crate) fn scrub_breadcrumb(&self, mut crumb: Breadcrumb) -> Breadcrumb {
        if let Some(message) = &mut crumb.message
            && let Cow::Owned(scrubbed) = self.scrub_str(message, true)
        {
            *message = scrubbed;
        }
        if !self.send_prompts {
            crumb.data.retain(|k, v| !(is_prompt_name(k) && is_text(v)));
        }
        for (k, v) in crumb.data.iter_mut() {
            self.scrub_entry(k, v, true);
        }
        crumb
    }

    fn scrub_entry(&self, key: &str, value: &mut Value, patterns: bool) {
        if is_secret_name(key) && is_text(value) {
            *value = Value::String(FILTERED.to_owned());
        } else {
            self.scrub_value(value, patterns && !is_code_location(key));
        }
    }

    fn scrub_value(&self, value: &mut Value, patterns: bool) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(scrubbed) = self.scrub_str(s, patterns) {
                    *s = scrubbed;
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.scrub_value(item, patterns);
                }
            }
            Value::Object(map) => {
                if !self.send_prompts {
                    map.retain(|k, v| !(is_prompt_name(k) && is_text(v)));
                }
                for (k, v) in map.iter_mut() {
                    self.scrub_entry(k, v, patterns);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn scrub_str<'a>(&self, text: &'a str, patterns: bool) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), FILTERED));
            }
        }
        if !patterns {
            return text;
        }
        let p = &*PATTERNS;
        let replaced = |t: Cow<'a, str>, re: &Regex, with: &dyn Fn(&Captures<'_>) -> String| {
            let changed = match re.replace_all(&t, |c: &Captures<'_>| with(c)) {
                Cow::Borrowed(_) => None,
                Cow::Owned(s) => Some(s),
            };
            changed.map_or(t, Cow::Owned)
        };
        text = replaced(text, &p.url_userinfo, &|c| format!("{}{FILTERED}@", &c[1]));
        text = replaced(text, &p.authorization, &|c| format!("{}{FILTERED}", &c[1]));
        text = replaced(text, &p.scheme_token, &|c| format!("{} {FILTERED}", &c[1]));
        replaced(text, &p.key_value, &|c| {
            let (sep, value) = (&c[2], &c[3]);
            let rust_path = sep.trim() == ":" && (value.starts_with(':') || c[0].contains("::"));
            if rust_path || value.bytes().all(|b| b.is_ascii_digit()) || value == FILTERED {
                c[0].to_owned()
            } else {
                format!("{}{sep}{FILTERED}", &c[1])
            }
        })
    }
}

/// Values that can carry text (numbers and booleans are kept: a token
/// count is not a token).
fn is_text(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Array(_) | Value::Object(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber(prompts: bool) -> Scrubber {
        Scrubber::new(vec!["hunter2-pass".to_owned()], prompts)
    }

    #[test]
    fn credentials_in_text_are_replaced() {
        let s = scrubber(false);
        let cases = [
            (
                "GET with Authorization: Bearer abc.def-ghi",
                "GET with Authorization: [Filtered]",
            ),
            ("sent bearer abc123xyz", "sent bearer [Filtered]"),
            ("header Basic dXNlcjpwYXNz==", "header Basic [Filtered]"),
            (
                "connect postgres://app:pa55@db:5432/x failed",
                "connect postgres://[Filtered]@db:5432/x failed",
            ),
            (
                "dsn https://k3y@o1.ingest.sentry.io/42",
                "dsn https://[Filtered]@o1.ingest.sentry.io/42",
            ),
            (
                "password=opensesame user=bob",
                "password=[Filtered] user=bob",
            ),
            (r#"{"api_key":"sk-123abc"}"#, r#"{"api_key":"[Filtered]"}"#),
            ("login with hunter2-pass", "login with [Filtered]"),
            ("tokens: 512", "tokens: 512"),
            ("in my_crate::token::refresh", "in my_crate::token::refresh"),
            ("out of gas on ethereum", "out of gas on ethereum"),
        ];
        for (input, want) in cases {
            let once = s.scrub_str(input, true);
            assert_eq!(once, want, "{input}");
            assert_eq!(
                s.scrub_str(&once, true),
                want,
                "scrubbing twice changes nothing"
            );
        }
    }

    #[test]
    fn secret_and_prompt_fields_are_filtered_in_breadcrumbs() {
        let mut crumb = Breadcrumb {
            message: Some("calling the model".to_owned()),
            ..Default::default()
        };
        crumb.data.insert("prompt".into(), "write a poem".into());
        crumb
            .data
            .insert("gen_ai.completion".into(), "roses".into());
        crumb.data.insert("authorization".into(), "Bearer x".into());
        crumb.data.insert("tokens.input".into(), 12.into());
        crumb.data.insert("chain".into(), "ethereum".into());
        let scrubbed = scrubber(false).scrub_breadcrumb(crumb.clone());
        assert!(!scrubbed.data.contains_key("prompt"));
        assert!(!scrubbed.data.contains_key("gen_ai.completion"));
        assert_eq!(scrubbed.data["authorization"], FILTERED);
        assert_eq!(scrubbed.data["tokens.input"], 12);
        assert_eq!(scrubbed.data["chain"], "ethereum");

        let kept = scrubber(true).scrub_breadcrumb(crumb);
        assert_eq!(kept.data["prompt"], "write a poem");
    }

    #[test]
    fn an_event_is_scrubbed_everywhere_and_keeps_its_stack_trace() {
        let mut event = Event {
            message: Some("failed: password=opensesame".to_owned()),
            ..Default::default()
        };
        event
            .tags
            .insert("note".into(), "Bearer abcdefgh".to_owned());
        event
            .extra
            .insert("output".into(), "the model's answer".into());
        event.extra.insert("db_password".into(), "x".into());
        event.fingerprint = Cow::Owned(vec![Cow::Owned("hunter2-pass".to_owned())]);
        let scrubbed = scrubber(false).scrub_event(event).unwrap();
        let text = serde_json::to_string(&scrubbed).unwrap();
        for secret in ["opensesame", "abcdefgh", "model's answer", "hunter2-pass"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(scrubbed.extra["db_password"], FILTERED);
    }

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "password",
            "DB_PASSWORD",
            "x-api-key",
            "MLFLOW_TRACKING_TOKEN",
            "Authorization",
            "SENTRY_DSN",
            "client_secret",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["chain", "model", "status", "event.duration", "monkey"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
