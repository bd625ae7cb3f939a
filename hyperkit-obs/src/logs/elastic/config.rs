//! The Elasticsearch shipper's configuration: `ELASTICSEARCH_*` (Elastic's
//! own names) and `HYPERKIT_ES_*`, the index each document goes to, and the
//! index template.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{ConfigError, CredentialVars, Credentials, credentials, describe_credentials};

/// The default index pattern: one index a day.
pub const DEFAULT_INDEX: &str = "hyperkit-logs-%Y.%m.%d";
/// The default data stream when `HYPERKIT_ES_DATA_STREAM=true`.
pub const DEFAULT_DATA_STREAM: &str = "logs-hyperkit-default";
/// The name of the index template installed at start.
pub const TEMPLATE_NAME: &str = "hyperkit-logs";

const EXAMPLE_URL: &str = "https://elastic:changeme@127.0.0.1:9200";

/// Credentials for Elasticsearch: `ELASTICSEARCH_API_KEY` (`Authorization:
/// ApiKey <key>`, the base64 `encoded` value Elasticsearch returns when
/// creating a key), or `ELASTICSEARCH_USERNAME`/`ELASTICSEARCH_PASSWORD` or
/// credentials in the URL (basic).
pub type ElasticsearchAuth = Credentials;

/// The variables Elasticsearch's credentials are read from (Elastic's own
/// names).
const CREDENTIALS: CredentialVars = CredentialVars {
    token: "ELASTICSEARCH_API_KEY",
    username: "ELASTICSEARCH_USERNAME",
    password: "ELASTICSEARCH_PASSWORD",
    token_kind: Credentials::ApiKey,
    token_example: "<base64 encoded API key>",
};

/// Where and how to ship documents to Elasticsearch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElasticsearchConfig {
    /// `ELASTICSEARCH_URL`: `http(s)://host:port[/prefix]`, without
    /// credentials (those in the URL become [`ElasticsearchAuth::Basic`]).
    pub url: String,
    /// `ELASTICSEARCH_API_KEY` or `ELASTICSEARCH_USERNAME`/`PASSWORD`.
    pub auth: Option<ElasticsearchAuth>,
    /// `HYPERKIT_ES_INDEX`: the index pattern (default
    /// `hyperkit-logs-%Y.%m.%d`; `%Y`, `%m`, `%d` are the UTC date of the
    /// document's timestamp, `%%` a percent sign), or with `data_stream`
    /// the data stream's name (default `logs-hyperkit-default`).
    pub index: String,
    /// `HYPERKIT_ES_DATA_STREAM` (default `false`): write to the data
    /// stream `index` with `create` actions.
    pub data_stream: bool,
    /// `HYPERKIT_ES_BATCH_EVENTS` (default 1000): documents per request.
    pub batch_events: usize,
    /// `HYPERKIT_ES_BATCH_BYTES` (default 5 MB): uncompressed bytes of
    /// documents per request.
    pub batch_bytes: usize,
    /// `HYPERKIT_ES_FLUSH_MS` (default 1000): the longest a document waits
    /// for its batch to fill.
    pub flush_interval: Duration,
    /// `HYPERKIT_ES_QUEUE_CAPACITY` (default 10000): documents waiting or
    /// being retried; more are dropped and counted.
    pub queue_capacity: usize,
    /// `HYPERKIT_ES_TEMPLATE` (default `true`): install the index template
    /// at start.
    pub install_template: bool,
    /// `HYPERKIT_ES_TIMEOUT_MS` (default 30000): the limit of one request.
    pub timeout: Duration,
    /// `HYPERKIT_ES_RETRY_INITIAL_MS` (default 100): the first backoff; it
    /// doubles on each failure.
    pub retry_initial: Duration,
    /// `HYPERKIT_ES_RETRY_MAX_MS` (default 30000): the longest backoff.
    pub retry_max: Duration,
}

impl ElasticsearchConfig {
    /// A configuration for the server at `url` (no credentials) with the
    /// defaults.
    pub fn new(url: impl Into<String>) -> Self {
        ElasticsearchConfig {
            url: url.into().trim_end_matches('/').to_owned(),
            auth: None,
            index: DEFAULT_INDEX.to_owned(),
            data_stream: false,
            batch_events: 1000,
            batch_bytes: 5 * 1024 * 1024,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 10_000,
            install_template: true,
            timeout: Duration::from_secs(30),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        }
    }

    /// Reads `ELASTICSEARCH_*` and `HYPERKIT_ES_*` through `var` (which
    /// returns a set, non-blank variable); `None` when `ELASTICSEARCH_URL`
    /// is not set.
    ///
    /// ```
    /// use hyperkit_obs::logs::elastic::{ElasticsearchAuth, ElasticsearchConfig};
    ///
    /// let c = ElasticsearchConfig::from_lookup(|k| match k {
    ///     "ELASTICSEARCH_URL" => Some("https://elastic:s3cret@es.internal:9200".to_owned()),
    ///     _ => None,
    /// })
    /// .unwrap()
    /// .unwrap();
    /// assert_eq!(c.url, "https://es.internal:9200");
    /// assert!(matches!(c.auth, Some(ElasticsearchAuth::Basic { .. })));
    /// assert!(!format!("{c:?}").contains("s3cret"));
    /// ```
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let Some(url) = var("ELASTICSEARCH_URL") else {
            return Ok(None);
        };
        let (url, url_auth) = parse_url(&url)?;
        let mut c = ElasticsearchConfig::new(url);
        c.auth = credentials(&var, CREDENTIALS, url_auth)?;
        if let Some(v) = var("HYPERKIT_ES_DATA_STREAM") {
            c.data_stream = crate::config::parse_bool("HYPERKIT_ES_DATA_STREAM", &v)?;
        }
        match var("HYPERKIT_ES_INDEX") {
            Some(v) => c.index = v.trim().to_owned(),
            None if c.data_stream => c.index = DEFAULT_DATA_STREAM.to_owned(),
            None => {}
        }
        check_index(&c.index, c.data_stream).map_err(|problem| {
            crate::config::invalid("HYPERKIT_ES_INDEX", &c.index, problem, DEFAULT_INDEX)
        })?;
        let number = |name: &'static str, min: u64, max: u64, example: &'static str| {
            var(name)
                .map(|v| crate::config::parse_number(name, &v, min, max, example))
                .transpose()
        };
        if let Some(n) = number("HYPERKIT_ES_BATCH_EVENTS", 1, 100_000, "1000")? {
            c.batch_events = n as usize;
        }
        if let Some(n) = number(
            "HYPERKIT_ES_BATCH_BYTES",
            1024,
            100 * 1024 * 1024,
            "5242880",
        )? {
            c.batch_bytes = n as usize;
        }
        if let Some(n) = number("HYPERKIT_ES_FLUSH_MS", 1, 3_600_000, "1000")? {
            c.flush_interval = Duration::from_millis(n);
        }
        if let Some(n) = number("HYPERKIT_ES_QUEUE_CAPACITY", 1, 10_000_000, "10000")? {
            c.queue_capacity = n as usize;
        }
        if let Some(v) = var("HYPERKIT_ES_TEMPLATE") {
            c.install_template = crate::config::parse_bool("HYPERKIT_ES_TEMPLATE", &v)?;
        }
        if let Some(n) = number("HYPERKIT_ES_TIMEOUT_MS", 1, 600_000, "30000")? {
            c.timeout = Duration::from_millis(n);
        }
        if let Some(n) = number("HYPERKIT_ES_RETRY_INITIAL_MS", 1, 600_000, "100")? {
            c.retry_initial = Duration::from_millis(n);
        }
        if let Some(n) = number("HYPERKIT_ES_RETRY_MAX_MS", 1, 3_600_000, "30000")? {
            c.retry_max = Duration::from_millis(n);
        }
        Ok(Some(c))
    }

    /// The index (or data stream) a document with this timestamp goes to.
    ///
    /// ```
    /// let c = hyperkit_obs::logs::elastic::ElasticsearchConfig::new("http://127.0.0.1:9200");
    /// // 2026-11-27T23:59:59.999Z
    /// assert_eq!(c.index_for(1_795_823_999_999), "hyperkit-logs-2026.11.27");
    /// ```
    pub fn index_for(&self, timestamp_ms: i64) -> String {
        if self.data_stream {
            return self.index.clone();
        }
        let (y, m, d) = crate::util::civil_from_days(timestamp_ms.div_euclid(86_400_000));
        let mut out = String::with_capacity(self.index.len() + 4);
        let mut chars = self.index.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('Y') => out.push_str(&format!("{y:04}")),
                Some('m') => out.push_str(&format!("{m:02}")),
                Some('d') => out.push_str(&format!("{d:02}")),
                Some(other) => out.push(other),
                None => {}
            }
        }
        out
    }

    /// The index pattern that covers every index this configuration writes
    /// (`hyperkit-logs-*`), for the template and for searches.
    pub fn index_wildcard(&self) -> String {
        if self.data_stream {
            return self.index.clone();
        }
        match self.index.find('%') {
            Some(i) => format!("{}*", &self.index[..i]),
            None => self.index.clone(),
        }
    }

    /// The index template installed at start: ECS mappings for the fields
    /// the log layer writes, other strings as `keyword`.
    pub fn template(&self) -> Value {
        let keyword = || json!({"type": "keyword", "ignore_above": 1024});
        let mut template = json!({
            "index_patterns": [self.index_wildcard()],
            // Above the built-in `logs-*-*` template (100).
            "priority": 200,
            "template": {
                "mappings": {
                    "dynamic_templates": [{
                        "strings_as_keyword": {
                            "match_mapping_type": "string",
                            "mapping": keyword(),
                        }
                    }],
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "message": {"type": "match_only_text"},
                        "ecs": {"properties": {"version": keyword()}},
                        "log": {"properties": {"level": keyword()}},
                        "service": {"properties": {"name": keyword()}},
                        "event": {"properties": {"duration": {"type": "long"}}},
                        "error": {"properties": {
                            "message": {"type": "text"},
                            "type": keyword(),
                        }},
                        "trace": {"properties": {"id": keyword()}},
                        "span": {"properties": {"id": keyword()}},
                        "chain": keyword(),
                        "model": keyword(),
                        "task": keyword(),
                        "operation": keyword(),
                        "status": keyword(),
                    }
                }
            },
            "_meta": {"description": "ECS log documents written by hyperkit-obs"}
        });
        if self.data_stream {
            template["data_stream"] = json!({});
        }
        template
    }
}

impl ElasticsearchConfig {
    /// The values as `(variable, value)` pairs, secrets shown as `***`, for
    /// `hyperkit-obs check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut described = vec![("ELASTICSEARCH_URL", self.url.clone())];
        described.extend(describe_credentials(CREDENTIALS, self.auth.as_ref()));
        described.extend([
            ("HYPERKIT_ES_INDEX", self.index.clone()),
            ("HYPERKIT_ES_DATA_STREAM", self.data_stream.to_string()),
            ("HYPERKIT_ES_BATCH_EVENTS", self.batch_events.to_string()),
            ("HYPERKIT_ES_BATCH_BYTES", self.batch_bytes.to_string()),
            (
                "HYPERKIT_ES_FLUSH_MS",
                self.flush_interval.as_millis().to_string(),
            ),
            (
                "HYPERKIT_ES_QUEUE_CAPACITY",
                self.queue_capacity.to_string(),
            ),
            ("HYPERKIT_ES_TEMPLATE", self.install_template.to_string()),
            (
                "HYPERKIT_ES_TIMEOUT_MS",
                self.timeout.as_millis().to_string(),
            ),
            (
                "HYPERKIT_ES_RETRY_INITIAL_MS",
                self.retry_initial.as_millis().to_string(),
            ),
            (
                "HYPERKIT_ES_RETRY_MAX_MS",
                self.retry_max.as_millis().to_string(),
            ),
        ]);
        described
    }

    /// The secret values, for scrubbing them from text that leaves the
    /// process.
    pub fn secrets(&self) -> Vec<&str> {
        self.auth.iter().map(Credentials::secret).collect()
    }
}

/// Why an index pattern (or data stream name) is unusable, if it is.
pub(super) fn check_index(index: &str, data_stream: bool) -> Result<(), String> {
    if index.is_empty() || index.len() > 200 {
        return Err("must be 1 to 200 characters".to_owned());
    }
    if index.starts_with(['-', '_', '+', '.']) {
        return Err("must not start with -, _, + or .".to_owned());
    }
    let literal = index
        .replace("%%", "")
        .replace("%Y", "")
        .replace("%m", "")
        .replace("%d", "");
    if let Some(c) = literal
        .chars()
        .find(|c| c.is_ascii_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(*c))
    {
        return Err(format!(
            "holds {c:?}: Elasticsearch index names are lowercase, without spaces or \\ / * ? \" < > | , # :"
        ));
    }
    let mut chars = index.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'm' | 'd') if data_stream => {
                    return Err(
                        "names a data stream (HYPERKIT_ES_DATA_STREAM=true): no date placeholders"
                            .to_owned(),
                    );
                }
                Some('Y' | 'm' | 'd' | '%') => {}
                _ => return Err("may only use the placeholders %Y, %m, %d and %%".to_owned()),
            }
        }
    }
    Ok(())
}

/// Reads `ELASTICSEARCH_URL`; credentials in it become basic auth and leave
/// the URL, so the URL can be shown.
fn parse_url(v: &str) -> Result<(String, Option<ElasticsearchAuth>), ConfigError> {
    let url = crate::config::parse_server_url("ELASTICSEARCH_URL", v, EXAMPLE_URL)?;
    let auth = url
        .credentials
        .map(|(username, password)| Credentials::Basic { username, password });
    Ok((url.base, auth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn from(vars: &[(&str, &str)]) -> Result<Option<ElasticsearchConfig>, ConfigError> {
        ElasticsearchConfig::from_lookup(crate::config::lookup(vars))
    }

    #[test]
    fn shipping_es_is_off_without_its_url() {
        assert_eq!(from(&[]).unwrap(), None);
    }

    #[test]
    fn shipping_es_url_credentials_become_basic_auth_and_leave_the_url() {
        let c = from(&[("ELASTICSEARCH_URL", "https://elastic:p%40ss@es:9200/")])
            .unwrap()
            .unwrap();
        assert_eq!(c.url, "https://es:9200");
        assert_eq!(
            c.auth,
            Some(ElasticsearchAuth::Basic {
                username: "elastic".to_owned(),
                password: Secret::new("p@ss"),
            })
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn shipping_es_reads_api_key_and_limits() {
        let c = from(&[
            ("ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
            ("ELASTICSEARCH_API_KEY", "a2V5OnNlY3JldA=="),
            ("HYPERKIT_ES_BATCH_EVENTS", "10"),
            ("HYPERKIT_ES_FLUSH_MS", "5"),
            ("HYPERKIT_ES_TEMPLATE", "false"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.auth,
            Some(ElasticsearchAuth::ApiKey(Secret::new("a2V5OnNlY3JldA==")))
        );
        assert!(!format!("{c:?}").contains("a2V5"));
        assert!(!format!("{:?}", c.describe()).contains("a2V5"));
        assert_eq!(c.secrets(), ["a2V5OnNlY3JldA=="]);
        assert_eq!(c.batch_events, 10);
        assert_eq!(c.flush_interval, Duration::from_millis(5));
        assert!(!c.install_template);
    }

    #[test]
    fn shipping_es_errors_name_the_variable_and_show_an_example() {
        let cases: &[&[(&str, &str)]] = &[
            &[("ELASTICSEARCH_URL", "es:9200")],
            &[("ELASTICSEARCH_URL", "ftp://es:9200")],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("HYPERKIT_ES_INDEX", "Logs-%Y"),
            ],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("HYPERKIT_ES_DATA_STREAM", "true"),
                ("HYPERKIT_ES_INDEX", "logs-%Y"),
            ],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("HYPERKIT_ES_BATCH_EVENTS", "0"),
            ],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("ELASTICSEARCH_USERNAME", "elastic"),
            ],
        ];
        for vars in cases {
            let e = from(vars).unwrap_err().to_string();
            assert!(e.contains("is invalid") && e.contains("for example"), "{e}");
        }
        let e = from(&[("ELASTICSEARCH_URL", "nope://user:topsecret@es")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ELASTICSEARCH_URL="), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn shipping_es_daily_index_uses_the_utc_date_of_the_document() {
        let c = ElasticsearchConfig::new("http://es:9200");
        assert_eq!(c.index_for(0), "hyperkit-logs-1970.01.01");
        assert_eq!(c.index_for(-1), "hyperkit-logs-1969.12.31");
        // 2024-02-29T12:00:00Z
        assert_eq!(c.index_for(1_709_208_000_000), "hyperkit-logs-2024.02.29");
        // 2000-03-01T00:00:00Z
        assert_eq!(c.index_for(951_868_800_000), "hyperkit-logs-2000.03.01");
        assert_eq!(c.index_wildcard(), "hyperkit-logs-*");
    }

    #[test]
    fn shipping_es_data_stream_uses_its_name_and_create() {
        let c = from(&[
            ("ELASTICSEARCH_URL", "http://es:9200"),
            ("HYPERKIT_ES_DATA_STREAM", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.index_for(0), DEFAULT_DATA_STREAM);
        assert_eq!(c.template()["data_stream"], json!({}));
        assert_eq!(c.template()["index_patterns"], json!([DEFAULT_DATA_STREAM]));
    }
}
