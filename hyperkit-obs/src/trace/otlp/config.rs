//! [`OtlpConfig`]: where and how spans are exported, from the standard
//! OpenTelemetry variables: `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`,
//! `_HEADERS`, `_PROTOCOL`, `_COMPRESSION`, `_TIMEOUT`, `OTEL_TRACES_EXPORTER`
//! and the batch span processor's `OTEL_BSP_*`. Every bad value is an error
//! naming its variable; header values are secrets (API keys travel there)
//! and are never shown.

use std::time::Duration;

use crate::config::{ConfigError, Secret, invalid, percent_decode};

/// How spans are encoded on the wire (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// `http/protobuf` (the default).
    #[default]
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

impl Protocol {
    /// The variable's value for it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
}

/// Where and how the OTLP exporter sends spans.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct OtlpConfig {
    /// The traces endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given,
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
    /// (which wins for a header both name), values percent-decoded.
    pub headers: Vec<(String, Secret)>,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`.
    pub protocol: Protocol,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION=gzip` (default none, as the
    /// specification says).
    pub gzip: bool,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`: one request's time limit
    /// (default 10 s).
    pub timeout: Duration,
    /// `OTEL_BSP_SCHEDULE_DELAY`: how long a span waits for a batch to
    /// fill (default 5 s).
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans queued at most (default 2048); more
    /// are dropped and counted.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per request at most
    /// (default 512).
    pub max_batch: usize,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("protocol", &self.protocol)
            .field("gzip", &self.gzip)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OtlpConfig {
    /// A configuration sending to `endpoint` (the full traces URL) with the
    /// specification's defaults.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            headers: Vec::new(),
            protocol: Protocol::HttpProtobuf,
            gzip: false,
            timeout: Duration::from_secs(10),
            schedule_delay: Duration::from_secs(5),
            max_queue: 2048,
            max_batch: 512,
        }
    }

    /// Reads the variables through `var`; `None` when no endpoint is set
    /// (or `OTEL_TRACES_EXPORTER=none`).
    ///
    /// ```
    /// use hyperkit_obs::trace::OtlpConfig;
    /// let env = |name: &str| match name {
    ///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/".to_owned()),
    ///     "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-api-key=abc%3D".to_owned()),
    ///     _ => None,
    /// };
    /// let config = OtlpConfig::from_lookup(env).unwrap().unwrap();
    /// assert_eq!(config.endpoint, "http://collector:4318/v1/traces");
    /// assert_eq!(config.headers[0].1.expose(), "abc=");
    /// ```
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        if let Some(v) = var("OTEL_TRACES_EXPORTER") {
            match v.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                _ => {
                    return Err(invalid(
                        "OTEL_TRACES_EXPORTER",
                        &v,
                        "only otlp and none are supported",
                        "otlp",
                    ));
                }
            }
        }
        let endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(v), _) => check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &v)?,
            (None, Some(v)) => {
                let base = check_url("OTEL_EXPORTER_OTLP_ENDPOINT", &v)?;
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            (None, None) => return Ok(None),
        };
        let mut config = OtlpConfig::new(endpoint);
        for variable in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(v) = var(variable) {
                for (k, value) in parse_headers(variable, &v)? {
                    config.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(&k));
                    config.headers.push((k, value));
                }
            }
        }
        let pick = |general: &'static str, traces: &'static str| match var(traces) {
            Some(v) => Some((traces, v)),
            None => var(general).map(|v| (general, v)),
        };
        if let Some((variable, v)) = pick(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ) {
            config.protocol = match v.trim() {
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => Protocol::HttpJson,
                "grpc" => {
                    return Err(invalid(
                        variable,
                        &v,
                        "grpc is not supported (no gRPC stack is built in): use http/protobuf \
                         and the collector's HTTP port (4318)",
                        "http/protobuf",
                    ));
                }
                _ => {
                    return Err(invalid(
                        variable,
                        &v,
                        "must be http/protobuf or http/json",
                        "http/protobuf",
                    ));
                }
            };
        }
        if let Some((variable, v)) = pick(
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        ) {
            config.gzip = match v.trim() {
                "gzip" => true,
                "none" => false,
                _ => return Err(invalid(variable, &v, "must be gzip or none", "gzip")),
            };
        }
        if let Some((variable, v)) = pick(
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ) {
            config.timeout = crate::config::parse_millis_in(variable, &v, 1, 600_000, "10000")?;
        }
        if let Some(v) = var("OTEL_BSP_SCHEDULE_DELAY") {
            config.schedule_delay =
                crate::config::parse_millis_in("OTEL_BSP_SCHEDULE_DELAY", &v, 0, 600_000, "5000")?;
        }
        if let Some(v) = var("OTEL_BSP_MAX_QUEUE_SIZE") {
            config.max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", &v, "2048")?;
        }
        if let Some(v) = var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            config.max_batch = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &v, "512")?;
        }
        if let Some(v) = var("OTEL_BSP_EXPORT_TIMEOUT") {
            let limit =
                crate::config::parse_millis_in("OTEL_BSP_EXPORT_TIMEOUT", &v, 1, 600_000, "30000")?;
            config.timeout = config.timeout.min(limit);
        }
        Ok(Some(config))
    }

    /// The configuration as `(variable, value)` pairs, header values
    /// hidden.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}=***"))
            .collect();
        vec![
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", self.endpoint.clone()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                if headers.is_empty() {
                    "(unset)".to_owned()
                } else {
                    headers.join(",")
                },
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                self.protocol.name().to_owned(),
            ),
            (
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                if self.gzip { "gzip" } else { "none" }.to_owned(),
            ),
            (
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                self.timeout.as_millis().to_string(),
            ),
        ]
    }
}

fn check_url(variable: &'static str, v: &str) -> Result<String, ConfigError> {
    const EXAMPLE: &str = "http://127.0.0.1:4318";
    let url = url::Url::parse(v.trim())
        .map_err(|e| invalid(variable, v, format!("is not a URL ({e})"), EXAMPLE))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            variable,
            v,
            "must be an http:// or https:// URL with a host",
            EXAMPLE,
        ));
    }
    if !url.username().is_empty() {
        return Err(invalid(
            variable,
            "(hidden: it holds credentials)",
            "must not hold credentials: put them in OTEL_EXPORTER_OTLP_HEADERS",
            EXAMPLE,
        ));
    }
    Ok(v.trim().to_owned())
}

/// `k1=v1,k2=v2`, values percent-decoded (W3C Baggage without properties).
fn parse_headers(variable: &'static str, v: &str) -> Result<Vec<(String, Secret)>, ConfigError> {
    const EXAMPLE: &str = "x-api-key=abc123";
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            // The value may be a secret: never echo it.
            return Err(invalid(
                variable,
                "(hidden)",
                "an entry is not key=value",
                EXAMPLE,
            ));
        };
        let key = key.trim();
        let valid_name = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let value = percent_decode(value.trim())
            .filter(|v| v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
        match (valid_name, value) {
            (true, Some(value)) => out.push((key.to_ascii_lowercase(), Secret::new(value))),
            _ => {
                return Err(invalid(
                    variable,
                    "(hidden)",
                    format!("the header {key:?} is not a valid header name and value"),
                    EXAMPLE,
                ));
            }
        }
    }
    Ok(out)
}

/// A queue or batch size: a whole number from 1 to 1,000,000.
fn count(variable: &'static str, v: &str, example: &'static str) -> Result<usize, ConfigError> {
    crate::config::parse_number(variable, v, 1, 1_000_000, example).map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lookup;

    #[test]
    fn no_endpoint_means_no_exporter() {
        assert!(OtlpConfig::from_lookup(|_| None).unwrap().is_none());
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ];
        assert!(OtlpConfig::from_lookup(lookup(&env)).unwrap().is_none());
    }

    #[test]
    fn the_traces_variables_win_over_the_general_ones() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318/base"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,B=2"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=3"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ];
        let c = OtlpConfig::from_lookup(lookup(&env)).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://traces:4318/custom", "used as given");
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("a", "1"), ("b", "3")]);
        assert_eq!(c.protocol, Protocol::HttpJson);
        assert!(c.gzip);
        assert_eq!(c.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn bad_values_name_their_variable_and_never_show_a_header_value() {
        for (env, variable) in [
            (
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
            (
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (("OTEL_BSP_MAX_QUEUE_SIZE", "0"), "OTEL_BSP_MAX_QUEUE_SIZE"),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
        ] {
            // The case's own value first: the lookup takes the first match.
            let vars = [env, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
            let err = OtlpConfig::from_lookup(lookup(&vars))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(variable), "{err}");
        }
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer s3cr3t\u{1}x",
            ),
        ];
        let err = OtlpConfig::from_lookup(lookup(&vars))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        let ok = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cr3t",
            ),
        ];
        let c = OtlpConfig::from_lookup(lookup(&ok)).unwrap().unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", c.describe()).contains("s3cr3t"));
    }
}
