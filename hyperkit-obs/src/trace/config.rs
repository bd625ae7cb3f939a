//! [`TraceConfig`]: what the standard OpenTelemetry variables say about
//! traces, read and validated before anything starts: the sampler
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), the resource
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) and
//! `OTEL_SDK_DISABLED`. The OTLP exporter's own variables are read by its
//! module. A bad value is an error naming the variable, never a silent
//! default; nothing here prints a header value.

use crate::config::{ConfigError, invalid, parse_bool, parse_service_name, percent_decode};

use super::sampler::Sampler;

/// The trace configuration.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct TraceConfig {
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`. Default
    /// `parentbased_always_on`.
    pub sampler: Sampler,
    /// `OTEL_SERVICE_NAME`, which wins over `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES` and over `HYPERKIT_SERVICE_NAME`.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs (values
    /// percent-decoded) describing this process on every exported span.
    pub resource: Vec<(String, String)>,
    /// `OTEL_SDK_DISABLED=true`: no span is exported (ids are still made,
    /// logged and propagated).
    pub disabled: bool,
    /// The OTLP exporter (`OTEL_EXPORTER_OTLP_*`): `None` unless an
    /// endpoint is set.
    #[cfg(feature = "otlp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
    pub otlp: Option<super::OtlpConfig>,
}

impl TraceConfig {
    /// Reads the variables through `var` (which returns a non-empty value
    /// or `None`).
    ///
    /// ```
    /// use hyperkit_obs::trace::{Sampler, TraceConfig};
    /// let env = |name: &str| match name {
    ///     "OTEL_TRACES_SAMPLER" => Some("parentbased_traceidratio".to_owned()),
    ///     "OTEL_TRACES_SAMPLER_ARG" => Some("0.25".to_owned()),
    ///     "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment=prod,team=a%20b".to_owned()),
    ///     _ => None,
    /// };
    /// let config = TraceConfig::from_lookup(env).unwrap();
    /// assert_eq!(config.sampler, Sampler::ParentBasedTraceIdRatio(0.25));
    /// assert_eq!(config.resource[1], ("team".to_owned(), "a b".to_owned()));
    /// ```
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = TraceConfig::default();
        let arg = var("OTEL_TRACES_SAMPLER_ARG");
        if let Some(name) = var("OTEL_TRACES_SAMPLER") {
            config.sampler = Sampler::from_name(&name, arg.as_deref()).map_err(|problem| {
                let variable = if problem.starts_with("OTEL_TRACES_SAMPLER_ARG") {
                    "OTEL_TRACES_SAMPLER_ARG"
                } else {
                    "OTEL_TRACES_SAMPLER"
                };
                let value = if variable == "OTEL_TRACES_SAMPLER" {
                    name.clone()
                } else {
                    arg.clone().unwrap_or_default()
                };
                invalid(variable, &value, problem, "parentbased_traceidratio")
            })?;
        }
        if let Some(v) = var("OTEL_RESOURCE_ATTRIBUTES") {
            config.resource = parse_resource(&v)?;
        }
        if let Some(v) = var("OTEL_SERVICE_NAME") {
            config.service_name = Some(parse_service_name("OTEL_SERVICE_NAME", &v)?);
        }
        if let Some(v) = var("OTEL_SDK_DISABLED") {
            config.disabled = parse_bool("OTEL_SDK_DISABLED", &v)?;
        }
        #[cfg(feature = "otlp")]
        {
            config.otlp = super::OtlpConfig::from_lookup(&var)?;
        }
        #[cfg(not(feature = "otlp"))]
        for variable in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            if var(variable).is_some() {
                return Err(ConfigError::FeatureDisabled {
                    variable,
                    feature: "otlp",
                });
            }
        }
        Ok(config)
    }

    /// The service name the resource carries: `OTEL_SERVICE_NAME`, else
    /// `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, else `fallback`.
    pub fn service_name_or<'a>(&'a self, fallback: &'a str) -> &'a str {
        self.service_name
            .as_deref()
            .or_else(|| {
                self.resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.as_str())
            })
            .unwrap_or(fallback)
    }

    /// The configuration as `(variable, value)` pairs, for `hyperkit-obs
    /// check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let sampler = match self.sampler {
            Sampler::TraceIdRatio(r) | Sampler::ParentBasedTraceIdRatio(r) => {
                format!("{} ({r})", self.sampler.name())
            }
            other => other.name().to_owned(),
        };
        let resource: Vec<String> = self
            .resource
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        #[allow(unused_mut)]
        let mut described = vec![
            ("OTEL_TRACES_SAMPLER", sampler),
            (
                "OTEL_SERVICE_NAME",
                self.service_name
                    .clone()
                    .unwrap_or_else(|| "(unset)".to_owned()),
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                if resource.is_empty() {
                    "(unset)".to_owned()
                } else {
                    resource.join(",")
                },
            ),
            ("OTEL_SDK_DISABLED", self.disabled.to_string()),
        ];
        #[cfg(feature = "otlp")]
        match &self.otlp {
            Some(otlp) => described.extend(otlp.describe()),
            None => described.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "(unset)".to_owned())),
        }
        described
    }
}

/// `key1=value1,key2=value2` (W3C Baggage's format without properties),
/// values percent-decoded.
fn parse_resource(v: &str) -> Result<Vec<(String, String)>, ConfigError> {
    const EXAMPLE: &str = "deployment.environment=production,service.version=1.2.0";
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in v.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(invalid(
                "OTEL_RESOURCE_ATTRIBUTES",
                v,
                format!("{item:?} is not key=value"),
                EXAMPLE,
            ));
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(
                "OTEL_RESOURCE_ATTRIBUTES",
                v,
                format!("{key:?} is not an attribute name"),
                EXAMPLE,
            ));
        }
        let Some(value) = percent_decode(value.trim()) else {
            return Err(invalid(
                "OTEL_RESOURCE_ATTRIBUTES",
                v,
                format!("the value of {key:?} is badly percent-encoded"),
                EXAMPLE,
            ));
        };
        // The last of a key twice wins, as the SDKs do.
        pairs.retain(|(k, _)| k != key);
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lookup;

    #[test]
    fn the_defaults_are_the_specifications() {
        let c = TraceConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c.sampler, Sampler::ParentBasedAlwaysOn);
        assert!(c.resource.is_empty() && !c.disabled);
        assert_eq!(c.service_name_or("exe"), "exe");
    }

    #[test]
    fn the_service_name_variable_wins_over_the_resource_attribute() {
        let env = [
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ("OTEL_SERVICE_NAME", "from-var"),
        ];
        let c = TraceConfig::from_lookup(lookup(&env)).unwrap();
        assert_eq!(c.service_name_or("exe"), "from-var");
        let c = TraceConfig::from_lookup(lookup(&env[..1])).unwrap();
        assert_eq!(c.service_name_or("exe"), "from-attrs");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (env, variable) in [
            (("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER"),
            (
                ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (
                ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz"),
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (("OTEL_SDK_DISABLED", "perhaps"), "OTEL_SDK_DISABLED"),
            (("OTEL_SERVICE_NAME", "a\u{1}b"), "OTEL_SERVICE_NAME"),
        ] {
            let err = TraceConfig::from_lookup(lookup(&[env])).unwrap_err();
            assert!(err.to_string().starts_with(variable), "{err}");
        }
        let env = [
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ];
        let err = TraceConfig::from_lookup(lookup(&env)).unwrap_err();
        assert!(
            err.to_string().starts_with("OTEL_TRACES_SAMPLER_ARG=\"2\""),
            "{err}"
        );
    }
}
