//! What model calls cost: the price table ([`PriceTable`], read from the
//! TOML file named by `HYPERKIT_MODEL_PRICES` or the `[model_prices]` table
//! of `HYPERKIT_CONFIG` by `file`), installed by `init()`, and the price of
//! one label set, looked up once per label set and table ([`Pricing`]).
//!
//! Money is kept in whole pico-dollars (10^-12 USD): a price of `p` USD per
//! million tokens is `p × 10^6` pico-dollars per token, exact for prices
//! given to a millionth of a dollar per million tokens, so a call's cost
//! and every sum of costs are exact integers (no float drift in the
//! counter: a cent is 10^10 of them). The counter holds up to about
//! 18 million USD per label set and process.
//!
//! On a call's path, pricing is two atomic loads and a comparison, then an
//! integer multiply-add and one atomic add; the table is looked up (under a
//! lock) only the first time a label set is priced against it. It never
//! blocks, allocates (after that first time) or panics.

#[cfg(feature = "config-file")]
pub(crate) mod file;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use prometheus::IntCounter;
use prometheus::core::Metric;
use prometheus::proto;

use crate::model::Usage;

/// The variable naming the price table's file.
pub(crate) const PRICES_VAR: &str = "HYPERKIT_MODEL_PRICES";

/// Pico-dollars in a dollar.
pub(crate) const PICOS_PER_USD: u64 = 1_000_000_000_000;

/// The largest price accepted, in USD per million tokens: a dollar a token.
pub const MAX_PRICE_PER_MILLION: f64 = 1_000_000.0;

/// The price of one model, in USD per million tokens (kept in pico-dollars
/// per token).
///
/// ```
/// use hyperkit_obs::model::ModelPrice;
///
/// let price = ModelPrice::usd_per_million(2.5, 10.0)
///     .unwrap()
///     .with_cached_input(1.25)
///     .unwrap();
/// assert_eq!(price.input_per_million(), 2.5);
/// assert_eq!(price.cached_input_per_million(), Some(1.25));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    /// Pico-dollars per input token.
    input: u64,
    /// Pico-dollars per output token.
    output: u64,
    /// Pico-dollars per cached input token, when the provider bills them
    /// apart.
    cached_input: Option<u64>,
}

/// A price that cannot be used: negative, not a number, or above
/// [`MAX_PRICE_PER_MILLION`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} is not a price: a price is a number of USD per million tokens from 0 to 1000000 (for example 2.5)"
)]
pub struct BadPrice(pub String);

/// USD per million tokens → pico-dollars per token, rounded to the
/// nearest (exact for prices with at most 6 decimals).
fn picos_per_token(usd_per_million: f64) -> Result<u64, BadPrice> {
    if !(0.0..=MAX_PRICE_PER_MILLION).contains(&usd_per_million) {
        return Err(BadPrice(usd_per_million.to_string()));
    }
    // At most 10^12: exact in an f64 and in a u64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((usd_per_million * 1e6).round() as u64)
}

#[allow(clippy::cast_precision_loss)] // prices are at most 10^12 picos
fn per_million(picos: u64) -> f64 {
    picos as f64 / 1e6
}

impl ModelPrice {
    /// A price of `input` and `output` USD per million tokens (cached input
    /// tokens cost as much as the others unless
    /// [`with_cached_input`](Self::with_cached_input) says otherwise).
    pub fn usd_per_million(input: f64, output: f64) -> Result<Self, BadPrice> {
        Ok(ModelPrice {
            input: picos_per_token(input)?,
            output: picos_per_token(output)?,
            cached_input: None,
        })
    }

    /// The price of input tokens served from the provider's prompt cache,
    /// in USD per million tokens.
    pub fn with_cached_input(mut self, usd_per_million: f64) -> Result<Self, BadPrice> {
        self.cached_input = Some(picos_per_token(usd_per_million)?);
        Ok(self)
    }

    /// Every price multiplied by `rate` (USD per unit of the currency the
    /// prices were given in).
    #[cfg(feature = "config-file")]
    pub(crate) fn converted(self, rate: f64) -> Result<Self, BadPrice> {
        let convert = |picos: u64| picos_per_token(per_million(picos) * rate);
        Ok(ModelPrice {
            input: convert(self.input)?,
            output: convert(self.output)?,
            cached_input: self.cached_input.map(convert).transpose()?,
        })
    }

    /// USD per million input tokens.
    pub fn input_per_million(&self) -> f64 {
        per_million(self.input)
    }

    /// USD per million output tokens.
    pub fn output_per_million(&self) -> f64 {
        per_million(self.output)
    }

    /// USD per million cached input tokens, when priced apart.
    pub fn cached_input_per_million(&self) -> Option<f64> {
        self.cached_input.map(per_million)
    }

    /// The cost of a call with this usage, in pico-dollars (saturating).
    /// Cached input tokens are the part of the input tokens the provider
    /// served from its cache ([`ModelOutput::cached_input_tokens`](crate::ModelOutput::cached_input_tokens)).
    #[inline]
    pub(crate) fn cost_picos(&self, usage: &Usage) -> u64 {
        let input = usage.input_tokens.unwrap_or(0);
        let cached = usage.cached_input_tokens.unwrap_or(0).min(input);
        let cached_price = self.cached_input.unwrap_or(self.input);
        (input - cached)
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(cached_price))
            .saturating_add(usage.output_tokens.unwrap_or(0).saturating_mul(self.output))
    }

    /// The cost of a call with this usage, in USD.
    ///
    /// ```
    /// use hyperkit_obs::model::{ModelPrice, Usage};
    ///
    /// let price = ModelPrice::usd_per_million(2.5, 10.0).unwrap();
    /// let usage = Usage { input_tokens: Some(1_000), output_tokens: Some(500), ..Usage::default() };
    /// assert_eq!(price.cost_usd(&usage), 0.0075);
    /// ```
    pub fn cost_usd(&self, usage: &Usage) -> f64 {
        usd(self.cost_picos(usage))
    }
}

/// Pico-dollars as USD: the nearest `f64` to the exact decimal (what
/// parsing the exposition's text gives) below 2^53 pico-dollars (about
/// 9,000 USD), and within an ulp above.
#[allow(clippy::cast_precision_loss)] // exact to the cent far past any bill
pub(crate) fn usd(picos: u64) -> f64 {
    const EXACT: u64 = 1 << f64::MANTISSA_DIGITS;
    if picos < EXACT {
        // One rounding: the integer converts exactly, 10^12 is exact.
        picos as f64 / PICOS_PER_USD as f64
    } else {
        (picos / PICOS_PER_USD) as f64 + (picos % PICOS_PER_USD) as f64 / PICOS_PER_USD as f64
    }
}

/// The prices of the models a program calls, by the `model` label's value
/// (sanitised, as the metrics carry it). Models not in it are counted in
/// `hyperkit_model_unpriced_calls_total{model}`.
///
/// ```
/// use hyperkit_obs::model::{ModelPrice, PriceTable};
///
/// let table = PriceTable::new()
///     .with("small-1", ModelPrice::usd_per_million(0.15, 0.6).unwrap())
///     .with("large-2", ModelPrice::usd_per_million(2.5, 10.0).unwrap());
/// assert_eq!(table.get("large-2").unwrap().output_per_million(), 10.0);
/// assert!(table.get("other").is_none());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// An empty table.
    pub fn new() -> Self {
        PriceTable::default()
    }

    /// The table with `model` priced at `price` (replacing a price it had).
    #[must_use]
    pub fn with(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.insert(model, price);
        self
    }

    /// Prices `model` at `price`, replacing a price it had.
    pub fn insert(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.models.insert(model.into(), price);
    }

    /// The price of `model`.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// How many models are priced.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether no model is priced.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The models and their prices, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        let mut all: Vec<_> = self.models.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.sort_by_key(|(k, _)| *k);
        all.into_iter()
    }

    /// Reads a table from TOML text (see the crate's README for the shape):
    ///
    /// ```
    /// use hyperkit_obs::model::PriceTable;
    ///
    /// let table = PriceTable::from_toml(r#"
    ///     [model_prices."gpt-4o"]
    ///     input = 2.5
    ///     output = 10.0
    ///     cached_input = 1.25
    /// "#).unwrap();
    /// assert_eq!(table.get("gpt-4o").unwrap().cached_input_per_million(), Some(1.25));
    ///
    /// let err = PriceTable::from_toml("[model_prices.small-1]\ninput = 1\noutput = -2\n").unwrap_err();
    /// assert_eq!((err.line, err.model.as_deref()), (3, Some("small-1")));
    /// ```
    #[cfg(feature = "config-file")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config-file")))]
    pub fn from_toml(text: &str) -> Result<Self, PriceTableError> {
        file::parse(text, true).map(Option::unwrap_or_default)
    }
}

impl fmt::Debug for PriceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Why a price table's TOML text was refused: the line, the model (when
/// the fault is in one model's prices) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {message}", .model.as_ref().map(|m| format!(", model {m:?}")).unwrap_or_default())]
pub struct PriceTableError {
    /// The line (from 1) of the fault.
    pub line: usize,
    /// The model whose prices are at fault, if any.
    pub model: Option<String>,
    /// What is wrong, and what to write instead.
    pub message: String,
}

// ---------------------------------------------------------------------------
// The installed table
// ---------------------------------------------------------------------------

/// One model's price (or no price) in one installed table: what a label
/// set remembers.
struct Priced {
    /// The table's generation.
    generation: u64,
    price: Option<ModelPrice>,
}

/// A table as installed: never freed (a label set may hold a pointer into
/// it), so installing is for start-up, not for every request.
struct Installed {
    models: HashMap<String, Priced>,
    unpriced: Priced,
}

/// The installed table's generation; 0 when none is installed.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALLED: RwLock<Option<&'static Installed>> = RwLock::new(None);
/// The models warned about as unpriced.
static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Makes `table` the prices of model calls from now on (`None`: no
/// pricing, no cost and no unpriced counts). [`init()`](crate::init)
/// installs the configured table, when one is configured; call this only
/// to set or change it without `init()` (a test, an embedder). Each call
/// keeps a little memory for the rest of the process.
pub fn install_prices(table: Option<&PriceTable>) {
    let mut installed = INSTALLED.write().unwrap_or_else(PoisonError::into_inner);
    let Some(table) = table else {
        *installed = None;
        GENERATION.store(0, Ordering::Release);
        return;
    };
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let generation = NEXT.fetch_add(1, Ordering::Relaxed);
    let leaked: &'static Installed = Box::leak(Box::new(Installed {
        models: table
            .models
            .iter()
            .map(|(model, price)| {
                (
                    model.clone(),
                    Priced {
                        generation,
                        price: Some(*price),
                    },
                )
            })
            .collect(),
        unpriced: Priced {
            generation,
            price: None,
        },
    }));
    *installed = Some(leaked);
    GENERATION.store(generation, Ordering::Release);
}

/// The pricing of one `(model, task)` label set.
pub(crate) struct Pricing {
    model: Box<str>,
    task: Box<str>,
    /// The label set's entry in the installed table (null at first). Only
    /// ever holds pointers into an `Installed`, which is never freed.
    priced: AtomicPtr<Priced>,
    cost: OnceLock<UsdCounter>,
    unpriced: OnceLock<IntCounter>,
}

impl Pricing {
    pub(crate) fn new(model: &str, task: &str) -> Self {
        Pricing {
            model: model.into(),
            task: task.into(),
            priced: AtomicPtr::new(std::ptr::null_mut()),
            cost: OnceLock::new(),
            unpriced: OnceLock::new(),
        }
    }

    /// Counts the cost of a call with this usage (or the call as unpriced)
    /// and returns the cost in pico-dollars; `None` when no table is
    /// installed, the usage has no token counts, or the model has no price.
    #[inline]
    pub(crate) fn record(&self, usage: &Usage) -> Option<u64> {
        let generation = GENERATION.load(Ordering::Acquire);
        if generation == 0 || (usage.input_tokens.is_none() && usage.output_tokens.is_none()) {
            return None;
        }
        let priced = match self.cached() {
            Some(p) if p.generation == generation => p,
            _ => self.resolve()?,
        };
        match &priced.price {
            Some(price) => {
                let picos = price.cost_picos(usage);
                if let Some(counter) = self.cost.get() {
                    counter.add(picos);
                }
                Some(picos)
            }
            None => {
                if let Some(counter) = self.unpriced.get() {
                    counter.inc();
                }
                None
            }
        }
    }

    #[inline]
    fn cached(&self) -> Option<&'static Priced> {
        let ptr = self.priced.load(Ordering::Acquire);
        // SAFETY: `priced` is null or was stored from a `&'static Priced`
        // inside a leaked `Installed` (never freed), so the pointer is
        // valid, aligned and immutable for the rest of the program.
        #[allow(unsafe_code)]
        unsafe {
            ptr.as_ref()
        }
    }

    /// Looks the model up in the installed table, once per table; makes
    /// the counter the answer needs and warns (once per model) about a
    /// model without a price.
    #[cold]
    #[inline(never)]
    fn resolve(&self) -> Option<&'static Priced> {
        let installed = (*INSTALLED.read().unwrap_or_else(PoisonError::into_inner))?;
        let priced = installed
            .models
            .get(&*self.model)
            .unwrap_or(&installed.unpriced);
        if priced.price.is_some() {
            self.cost.get_or_init(|| {
                crate::metrics::FAMILIES
                    .model_cost_usd_total
                    .child(&[&self.model, &self.task])
            });
        } else {
            self.unpriced.get_or_init(|| {
                crate::metrics::FAMILIES
                    .model_unpriced_calls_total
                    .child(&[&self.model])
            });
            let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
            if warned
                .get_or_insert_default()
                .insert(self.model.to_string())
            {
                tracing::warn!(
                    model = &*self.model,
                    "model {:?} has no price in the price table: its calls are counted in hyperkit_model_unpriced_calls_total, not in hyperkit_model_cost_usd_total; add [model_prices.{:?}] to the table",
                    self.model,
                    self.model,
                );
            }
        }
        self.priced
            .store(std::ptr::from_ref(priced).cast_mut(), Ordering::Release);
        Some(priced)
    }
}

// ---------------------------------------------------------------------------
// The counter
// ---------------------------------------------------------------------------

/// A counter of USD kept in whole pico-dollars, so that sums are exact;
/// written as a decimal number of dollars.
#[derive(Clone, Default)]
pub(crate) struct UsdCounter(Arc<AtomicU64>);

impl UsdCounter {
    #[inline]
    pub(crate) fn add(&self, picos: u64) {
        self.0.fetch_add(picos, Ordering::Relaxed);
    }

    /// The total, in pico-dollars.
    pub(crate) fn picos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metric for UsdCounter {
    fn metric(&self) -> proto::Metric {
        let mut c = proto::Counter::default();
        c.set_value(usd(self.picos()));
        let mut m = proto::Metric::default();
        m.set_counter(c);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, cached: u64, output: u64) -> Usage {
        Usage {
            input_tokens: Some(input),
            cached_input_tokens: Some(cached),
            output_tokens: Some(output),
            accepted: None,
        }
    }

    #[test]
    fn a_price_per_million_is_kept_exactly_in_picos_per_token() {
        let p = ModelPrice::usd_per_million(0.15, 0.6)
            .unwrap()
            .with_cached_input(0.075)
            .unwrap();
        assert_eq!(
            (p.input, p.output, p.cached_input),
            (150_000, 600_000, Some(75_000))
        );
        assert_eq!(p.input_per_million(), 0.15);
        // 1,000 input tokens of which 400 cached, 300 output:
        // 600 × 0.15 + 400 × 0.075 + 300 × 0.6 = 90 + 30 + 180 µ$ = 300 µ$.
        assert_eq!(p.cost_picos(&usage(1_000, 400, 300)), 300_000_000);
    }

    #[test]
    fn cached_tokens_cost_the_input_price_unless_priced_apart_and_never_exceed_the_input() {
        let p = ModelPrice::usd_per_million(2.0, 8.0).unwrap();
        assert_eq!(p.cost_picos(&usage(100, 40, 0)), 200_000_000);
        let p = p.with_cached_input(0.5).unwrap();
        assert_eq!(p.cost_picos(&usage(100, 400, 0)), 50_000_000);
    }

    #[test]
    fn prices_outside_zero_to_a_dollar_a_token_are_refused() {
        for bad in [-0.01, f64::NAN, f64::INFINITY, 1_000_000.5] {
            assert!(ModelPrice::usd_per_million(bad, 1.0).is_err(), "{bad}");
        }
        assert!(ModelPrice::usd_per_million(0.0, 1_000_000.0).is_ok());
    }

    #[test]
    fn a_huge_usage_saturates_instead_of_wrapping() {
        let p = ModelPrice::usd_per_million(1_000_000.0, 1_000_000.0).unwrap();
        assert_eq!(p.cost_picos(&usage(u64::MAX, 0, u64::MAX)), u64::MAX);
    }

    #[test]
    fn a_label_set_follows_each_installed_table_and_counts_only_with_one() {
        let pricing = Pricing::new("pricing-test-model", "t");
        let u = usage(1_000, 0, 100);
        let priced = PriceTable::new().with(
            "pricing-test-model",
            ModelPrice::usd_per_million(1.0, 2.0).unwrap(),
        );
        install_prices(Some(&priced));
        assert_eq!(pricing.record(&u), Some(1_200_000_000));
        assert_eq!(pricing.record(&u), Some(1_200_000_000), "from the cache");
        assert_eq!(pricing.cost.get().unwrap().picos(), 2_400_000_000);
        // A new table without the model: unpriced from the next call on.
        install_prices(Some(&PriceTable::new()));
        assert_eq!(pricing.record(&u), None);
        assert_eq!(pricing.unpriced.get().unwrap().get(), 1);
        // No table: neither counted.
        install_prices(None);
        assert_eq!(pricing.record(&u), None);
        assert_eq!(pricing.unpriced.get().unwrap().get(), 1);
        assert_eq!(pricing.cost.get().unwrap().picos(), 2_400_000_000);
        // A call without token counts is not priced.
        install_prices(Some(&priced));
        assert_eq!(pricing.record(&Usage::default()), None);
        install_prices(None);
    }

    #[test]
    fn picos_are_read_as_dollars_exactly_to_the_cent() {
        assert_eq!(usd(1_234_560_000_000_000), 1234.56);
        assert_eq!(usd(10_000_000_000), 0.01);
        for picos in [1, 7_500_000_000, 463_738_750_000, (1 << 53) - 1] {
            let text = format!("{}.{:012}", picos / PICOS_PER_USD, picos % PICOS_PER_USD);
            assert_eq!(usd(picos), text.parse::<f64>().unwrap(), "{text}");
        }
    }
}
