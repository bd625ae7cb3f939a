//! The configuration helpers every part of the crate parses with: the
//! error type, [`Secret`], [`Credentials`] (one parser for the
//! token-or-user-and-password triple every server asks for), numbers,
//! booleans, durations, addresses, filters and server URLs. This module
//! imports no sink: sinks import it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable (or file key) holds a value that cannot be used.
    #[error("{variable}={value:?} is invalid: {problem}; for example {variable}={example}")]
    Invalid {
        /// The variable or file key.
        variable: &'static str,
        /// The value as given (a secret's value is never kept here).
        value: String,
        /// What is wrong with it.
        problem: String,
        /// A value that would be accepted.
        example: &'static str,
    },
    /// The configuration file could not be read.
    #[error("HYPERKIT_CONFIG={path:?} cannot be read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A variable configures a sink this build of hyperkit-obs does not
    /// have.
    #[error(
        "{variable} is set but hyperkit-obs was built without the \"{feature}\" feature: \
         add it to the dependency's features in Cargo.toml (features = [\"{feature}\"]), or unset {variable}"
    )]
    FeatureDisabled {
        /// The variable.
        variable: &'static str,
        /// The cargo feature that would use it.
        feature: &'static str,
    },
    /// The price table of model calls (the file named by
    /// `HYPERKIT_MODEL_PRICES`, or `[model_prices]` in `HYPERKIT_CONFIG`)
    /// cannot be used.
    #[error(
        "{variable}={path:?} is invalid at line {line}{}: {message}",
        .model.as_ref().map(|m| format!(", model {m:?}")).unwrap_or_default()
    )]
    Prices {
        /// `HYPERKIT_MODEL_PRICES` or `HYPERKIT_CONFIG`.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// The line (from 1) of the fault.
        line: usize,
        /// The model whose prices are at fault, if any.
        model: Option<String>,
        /// What is wrong, and what to write instead.
        message: String,
    },
    /// The configuration file is not valid TOML for this configuration.
    #[error("HYPERKIT_CONFIG={path:?} is invalid: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, naming the key.
        message: String,
    },
}

/// A secret value: shown as `***` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Credentials presented to a server, or required of a scraper: a token, or
/// a user name and password. One type for every sink, so that one parser
/// ([`credentials`]) reads them and one place shows them redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>` (`HYPERKIT_METRICS_TOKEN`,
    /// `MLFLOW_TRACKING_TOKEN`).
    Bearer(Secret),
    /// `Authorization: ApiKey <key>` (`ELASTICSEARCH_API_KEY`, the base64
    /// `encoded` value Elasticsearch returns when creating a key).
    ApiKey(Secret),
    /// HTTP basic auth.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
}

impl Credentials {
    /// The secret part, for scrubbing it from text that leaves the process.
    pub fn secret(&self) -> &str {
        match self {
            Credentials::Bearer(s) | Credentials::ApiKey(s) => s.expose(),
            Credentials::Basic { password, .. } => password.expose(),
        }
    }
}

/// The credentials a scraper must present to read `/metrics`
/// (`HYPERKIT_METRICS_TOKEN`, or `HYPERKIT_METRICS_USERNAME` and
/// `HYPERKIT_METRICS_PASSWORD`).
pub type MetricsAuth = Credentials;

/// The names of the three variables one server's credentials are read
/// from: a token (or API key), or a user name and a password.
#[derive(Clone, Copy)]
pub(crate) struct CredentialVars {
    pub(crate) token: &'static str,
    pub(crate) username: &'static str,
    pub(crate) password: &'static str,
    /// What the token is sent as.
    pub(crate) token_kind: fn(Secret) -> Credentials,
    /// An example token, for the error message.
    pub(crate) token_example: &'static str,
}

/// Reads one server's credentials through `var`: the token alone, or the
/// user name with the password, or neither (then `fallback`, e.g. the
/// credentials found in the server's URL). Any other combination is an
/// error that names the variable at fault. No error shows a secret.
pub(crate) fn credentials(
    var: impl Fn(&str) -> Option<String>,
    names: CredentialVars,
    fallback: Option<Credentials>,
) -> Result<Option<Credentials>, ConfigError> {
    let token = var(names.token);
    let user = var(names.username);
    let password = var(names.password);
    match (token, user, password) {
        (None, None, None) => Ok(fallback),
        (Some(t), None, None) => Ok(Some((names.token_kind)(Secret::new(t.trim())))),
        (None, Some(username), Some(password)) => Ok(Some(Credentials::Basic {
            username,
            password: Secret::new(password),
        })),
        (Some(_), _, _) => Err(ConfigError::Invalid {
            variable: names.token,
            value: "***".to_owned(),
            problem: format!(
                "cannot be combined with {}/{}; choose one",
                names.username, names.password
            ),
            example: names.token_example,
        }),
        (None, Some(_), None) => Err(invalid(
            names.password,
            "",
            format!("is required when {} is set", names.username),
            "<password>",
        )),
        (None, None, Some(_)) => Err(invalid(
            names.username,
            "",
            format!("is required when {} is set", names.password),
            "<user name>",
        )),
    }
}

/// The three variables of `names` as `check` shows them, the secret ones
/// redacted.
pub(crate) fn describe_credentials(
    names: CredentialVars,
    credentials: Option<&Credentials>,
) -> [(&'static str, String); 3] {
    let unset = || "(unset)".to_owned();
    let (token, user, password) = match credentials {
        Some(Credentials::Bearer(t) | Credentials::ApiKey(t)) => (t.to_string(), unset(), unset()),
        Some(Credentials::Basic { username, password }) => {
            (unset(), username.clone(), password.to_string())
        }
        None => (unset(), unset(), unset()),
    };
    [
        (names.token, token),
        (names.username, user),
        (names.password, password),
    ]
}

/// The error for `variable` holding `value`: what is wrong and a value that
/// would do. Every configuration parser of the crate builds its errors here.
pub(crate) fn invalid(
    variable: &'static str,
    value: &str,
    problem: impl Into<String>,
    example: &'static str,
) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_owned(),
        problem: problem.into(),
        example,
    }
}

pub(crate) fn parse_service_name(variable: &'static str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    if v.len() > 128 || v.chars().any(char::is_control) {
        return Err(invalid(
            variable,
            v,
            "must be at most 128 characters with no control characters",
            "build-agent",
        ));
    }
    Ok(v.to_owned())
}

pub(crate) fn parse_limit(variable: &'static str, v: &str) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Ok(_) => Err(invalid(
            variable,
            v,
            "must be between 1 and 1000000",
            "1000",
        )),
        Err(_) => Err(invalid(variable, v, "must be a whole number", "1000")),
    }
}

pub(crate) fn parse_millis(
    variable: &'static str,
    v: &str,
    example: &'static str,
) -> Result<Duration, ConfigError> {
    parse_millis_in(variable, v, 1, 600_000, example)
}

/// A whole number of milliseconds from `min` to `max`.
pub(crate) fn parse_millis_in(
    variable: &'static str,
    v: &str,
    min: u64,
    max: u64,
    example: &'static str,
) -> Result<Duration, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(ms) if (min..=max).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(
            variable,
            v,
            format!("must be a number of milliseconds from {min} to {max}"),
            example,
        )),
    }
}

#[cfg(feature = "sentry")]
pub(crate) fn parse_rate(variable: &'static str, v: &str) -> Result<f32, ConfigError> {
    match v.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(invalid(
            variable,
            v,
            "must be a number from 0.0 to 1.0",
            "0.25",
        )),
    }
}

/// A whole number from `min` to `max`.
#[cfg(any(
    feature = "logstash",
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "otlp"
))]
pub(crate) fn parse_number(
    variable: &'static str,
    v: &str,
    min: u64,
    max: u64,
    example: &'static str,
) -> Result<u64, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            variable,
            v,
            format!("must be a whole number from {min} to {max}"),
            example,
        )),
    }
}

/// `true`/`false` as people write them (`1`, `yes`, `on`, …).
pub(crate) fn parse_bool(variable: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(variable, v, "must be true or false", "true")),
    }
}

pub(crate) fn parse_addr(variable: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            variable,
            v,
            "must be an IP address and port (host names are not resolved)",
            "127.0.0.1:9464",
        )
    })
}

pub(crate) fn parse_filter(variable: &'static str, v: &str) -> Result<String, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(v)
        .map(|_| v.trim().to_owned())
        .map_err(|e| {
            invalid(
                variable,
                v,
                format!("is not a log filter ({e})"),
                "info,my_crate=debug",
            )
        })
}

#[cfg(any(feature = "elasticsearch", feature = "mlflow"))]
/// A server's URL read from a variable: the base (no credentials, no
/// trailing slash) and the credentials it held, for basic auth.
pub(crate) struct ServerUrl {
    /// `http(s)://host[:port][/prefix]`.
    pub(crate) base: String,
    /// The user name and password that were in the URL.
    pub(crate) credentials: Option<(String, Secret)>,
}

#[cfg(any(feature = "elasticsearch", feature = "mlflow"))]
/// Reads `http(s)://[user:pass@]host[:port][/prefix]`. Credentials leave the
/// URL (so it can be shown) and are percent-decoded; no error shows them.
pub(crate) fn parse_server_url(
    variable: &'static str,
    v: &str,
    example: &'static str,
) -> Result<ServerUrl, ConfigError> {
    let v = v.trim();
    let shown = redact_userinfo(v);
    let mut url = url::Url::parse(v)
        .map_err(|e| invalid(variable, &shown, format!("is not a URL ({e})"), example))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            variable,
            &shown,
            "must start with http:// or https://",
            example,
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(variable, &shown, "has no host", example));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            variable,
            &shown,
            "must not have a query or fragment",
            example,
        ));
    }
    let credentials = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| invalid(variable, &shown, "has badly escaped credentials", example))
        };
        let username = decode(url.username())?;
        let password = decode(url.password().unwrap_or(""))?;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some((username, Secret::new(password)))
    };
    Ok(ServerUrl {
        base: url.as_str().trim_end_matches('/').to_owned(),
        credentials,
    })
}

/// `scheme://user:pass@host` → `scheme://***@host`, for error messages.
#[cfg(any(feature = "mlflow", feature = "elasticsearch"))]
pub(crate) fn redact_userinfo(v: &str) -> String {
    match (v.find("://"), v.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &v[..s + 3], &v[at..]),
        _ => v.to_owned(),
    }
}

/// Decodes `%XX` escapes; `None` when one is malformed or the result is not
/// UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A lookup over `pairs`, as the configuration readers' `from_lookup` take
/// it: each test states its environment as a list.
#[cfg(test)]
pub(crate) fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    }
}
