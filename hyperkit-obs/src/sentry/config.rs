//! [`SentryConfig`]: `SENTRY_*` (Sentry's own names) and
//! `HYPERKIT_SENTRY_*`, read from the environment only (a DSN does not
//! belong in a file).

use crate::config::{ConfigError, Secret, invalid, parse_bool, parse_rate, parse_service_name};

/// Where and what hyperkit-obs reports to Sentry. Read from the environment
/// only: a DSN does not belong in a file.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SentryConfig {
    /// `SENTRY_DSN`: the project's DSN. Unset (the default) means nothing is
    /// sent and nothing is installed.
    pub dsn: Option<Secret>,
    /// `SENTRY_ENVIRONMENT`: the event's environment. Default:
    /// `HYPERKIT_ENVIRONMENT` when set, else Sentry's default (`production`
    /// or `development`).
    pub environment: Option<String>,
    /// `SENTRY_RELEASE`: the event's release. Default: what
    /// [`Builder::release`](crate::Builder::release) gave, else unset.
    pub release: Option<String>,
    /// `HYPERKIT_SENTRY_SAMPLE_RATE`: the share of error events sent, from
    /// 0.0 to 1.0. Default 1.0.
    pub sample_rate: f32,
    /// `HYPERKIT_SENTRY_SEND_PROMPTS`: attach model prompts and outputs
    /// (fields named `prompt`, `completion`, `input`, `output`, `response`,
    /// `messages`, …) to events and breadcrumbs. Default `false`: they are
    /// removed.
    pub send_prompts: bool,
}

impl Default for SentryConfig {
    fn default() -> Self {
        SentryConfig {
            dsn: None,
            environment: None,
            release: None,
            sample_rate: 1.0,
            send_prompts: false,
        }
    }
}

impl SentryConfig {
    /// The DSN with its keys replaced by `***`, or `(unset)`.
    ///
    /// ```
    /// use hyperkit_obs::{config::Secret, sentry::SentryConfig};
    ///
    /// let mut sentry = SentryConfig::default();
    /// assert_eq!(sentry.redacted_dsn(), "(unset)");
    /// sentry.dsn = Some(Secret::new("https://abc123@o1.ingest.sentry.io/42"));
    /// assert_eq!(sentry.redacted_dsn(), "https://***@o1.ingest.sentry.io/42");
    /// ```
    pub fn redacted_dsn(&self) -> String {
        let Some(dsn) = &self.dsn else {
            return "(unset)".to_owned();
        };
        match dsn.expose().parse::<::sentry::types::Dsn>() {
            Ok(d) => {
                let port = if d.port() == d.scheme().default_port() {
                    String::new()
                } else {
                    format!(":{}", d.port())
                };
                format!(
                    "{}://***@{}{port}{}{}",
                    d.scheme(),
                    d.host(),
                    d.path(),
                    d.project_id()
                )
            }
            Err(_) => "***".to_owned(),
        }
    }
}

impl SentryConfig {
    /// Reads `SENTRY_*` and `HYPERKIT_SENTRY_*` through `var` (which
    /// returns a set, non-blank variable).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = SentryConfig::default();
        if let Some(v) = var("SENTRY_DSN") {
            c.dsn = Some(parse_dsn("SENTRY_DSN", v)?);
        }
        if let Some(v) = var("SENTRY_ENVIRONMENT") {
            c.environment = Some(parse_service_name("SENTRY_ENVIRONMENT", &v)?);
        }
        if let Some(v) = var("SENTRY_RELEASE") {
            c.release = Some(parse_service_name("SENTRY_RELEASE", &v)?);
        }
        if let Some(v) = var("HYPERKIT_SENTRY_SAMPLE_RATE") {
            c.sample_rate = parse_rate("HYPERKIT_SENTRY_SAMPLE_RATE", &v)?;
        }
        if let Some(v) = var("HYPERKIT_SENTRY_SEND_PROMPTS") {
            c.send_prompts = parse_bool("HYPERKIT_SENTRY_SEND_PROMPTS", &v)?;
        }
        Ok(c)
    }

    /// The values as `(variable, value)` pairs, the DSN's key hidden, for
    /// `hyperkit-obs check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".to_owned());
        vec![
            ("SENTRY_DSN", self.redacted_dsn()),
            ("SENTRY_ENVIRONMENT", opt(&self.environment)),
            ("SENTRY_RELEASE", opt(&self.release)),
            ("HYPERKIT_SENTRY_SAMPLE_RATE", self.sample_rate.to_string()),
            (
                "HYPERKIT_SENTRY_SEND_PROMPTS",
                self.send_prompts.to_string(),
            ),
        ]
    }
}

fn parse_dsn(variable: &'static str, v: String) -> Result<Secret, ConfigError> {
    let v = v.trim();
    // The parser's messages never quote the input, so the key stays out of
    // the error.
    match v.parse::<::sentry::types::Dsn>() {
        Ok(_) => Ok(Secret::new(v)),
        Err(e) => Err(invalid(
            variable,
            "***",
            format!("is not a Sentry DSN ({e})"),
            "https://<public key>@o0.ingest.sentry.io/<project id>",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MonitoringConfig;

    fn from(vars: &[(&str, &str)]) -> Result<MonitoringConfig, ConfigError> {
        MonitoringConfig::from_lookup(crate::config::lookup(vars))
    }

    #[test]
    fn sentry_is_off_by_default_and_read_from_its_variables() {
        let c = from(&[]).unwrap();
        assert_eq!(c.sentry, SentryConfig::default());
        assert_eq!(c.sentry.sample_rate, 1.0);
        assert!(!c.sentry.send_prompts);

        let c = from(&[
            ("SENTRY_DSN", "https://k3y@o1.ingest.sentry.io/42"),
            ("SENTRY_ENVIRONMENT", "staging"),
            ("SENTRY_RELEASE", "build-agent@1.2.3"),
            ("HYPERKIT_SENTRY_SAMPLE_RATE", "0.5"),
            ("HYPERKIT_SENTRY_SEND_PROMPTS", "true"),
        ])
        .unwrap();
        assert_eq!(c.sentry.environment.as_deref(), Some("staging"));
        assert_eq!(c.sentry.release.as_deref(), Some("build-agent@1.2.3"));
        assert_eq!(c.sentry.sample_rate, 0.5);
        assert!(c.sentry.send_prompts);
        assert_eq!(
            c.sentry.dsn.as_ref().map(Secret::expose),
            Some("https://k3y@o1.ingest.sentry.io/42")
        );
    }

    #[test]
    fn a_bad_sentry_value_names_the_variable_and_never_echoes_the_dsn() {
        let e = from(&[("SENTRY_DSN", "https://k3y-s3cret@o1.ingest.sentry.io/")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SENTRY_DSN=\"***\" is invalid"), "{e}");
        assert!(!e.contains("k3y-s3cret"), "{e}");
        let e = from(&[("SENTRY_DSN", "k3y-s3cret")])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("k3y-s3cret"), "{e}");
        let e = from(&[("HYPERKIT_SENTRY_SAMPLE_RATE", "1.5")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 0.0 to 1.0"), "{e}");
        let e = from(&[("HYPERKIT_SENTRY_SEND_PROMPTS", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn describe_shows_the_sentry_host_but_not_its_key() {
        let c = from(&[("SENTRY_DSN", "http://k3y-s3cret@127.0.0.1:9000/42")]).unwrap();
        let described = format!("{:?}", c.describe());
        assert!(!described.contains("k3y-s3cret"), "{described}");
        assert!(!format!("{c:?}").contains("k3y-s3cret"));
        let dsn = c.describe().into_iter().find(|(k, _)| *k == "SENTRY_DSN");
        assert_eq!(
            dsn.map(|(_, v)| v).as_deref(),
            Some("http://***@127.0.0.1:9000/42")
        );
    }
}
