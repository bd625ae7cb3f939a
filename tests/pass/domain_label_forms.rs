//! Every way to give a domain's label a value, and every field type: `String`
//! fields take `&str`, `String`, `Cow<str>`, a literal or an expression;
//! integer and `bool` fields a value of their type; an enum field the enum.
//! A domain without fields, and the `level` option.

use std::borrow::Cow;

use hyperkit_obs::{Domain, LabelValue, track};

#[derive(Clone, Copy, LabelValue)]
enum Tier {
    Free,
    Paid,
}

/// Jobs of a queue.
#[derive(Domain)]
#[domain(prefix = "forms_job", buckets = [0.5, 5.0])]
struct Job {
    queue: String,
    attempt: u8,
    urgent: bool,
    tier: Tier,
}

/// Ticks of a clock: no labels at all.
#[derive(Domain)]
struct Tick {}

#[track(Job, queue, attempt, urgent, tier)]
fn from_parameters(queue: &str, attempt: u8, urgent: bool, tier: Tier) {}

#[track(Job, queue, attempt = 2, urgent = false, tier = Tier::Paid)]
fn owned_string(queue: String) {}

#[track(Job, queue, attempt = n + 1, urgent = n > 5, tier = Tier::Free)]
fn cow(queue: Cow<'static, str>, n: u8) {}

#[track(Job, queue = "literal", attempt = 0, urgent = true, tier = Tier::Free, level = "debug")]
fn literal() {}

#[track(Job, queue = names[1].as_str(), attempt = names.len() as u8, urgent = false, tier)]
fn expression(names: &[String], tier: Tier) {}

#[track(Tick)]
fn tick() {}

#[track(Tick, level = "trace")]
async fn tick_async() {}

use test_support::metrics::counter_total as counter;

fn main() {
    from_parameters("params", 1, true, Tier::Paid);
    owned_string("owned".to_owned());
    cow(Cow::Borrowed("cow"), 9);
    literal();
    expression(&["a".to_owned(), "expr".to_owned()], Tier::Free);
    tick();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(tick_async());

    let job = |labels: &[(&str, &str)]| counter("forms_job_calls_total", labels);
    assert_eq!(
        job(&[("queue", "params"), ("attempt", "1"), ("urgent", "true"), ("tier", "paid")]),
        1
    );
    assert_eq!(job(&[("queue", "owned"), ("attempt", "2"), ("tier", "paid")]), 1);
    assert_eq!(job(&[("queue", "cow"), ("attempt", "10"), ("urgent", "true")]), 1);
    assert_eq!(job(&[("queue", "literal"), ("attempt", "0"), ("status", "success")]), 1);
    assert_eq!(job(&[("queue", "expr"), ("attempt", "2"), ("tier", "free")]), 1);
    assert_eq!(counter("tick_calls_total", &[("status", "success")]), 2);
    assert_eq!(Tick::spec().labels().len(), 0);
}
