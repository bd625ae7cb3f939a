//! The worker loop of a sink: takes what callers queued, forms batches,
//! calls the exporter, retries with backoff, answers flushes and stops at
//! its deadline. It never panics: a panicking exporter loses one batch,
//! counted.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use super::handle::{Control, Core};
use super::{Exporter, LOG_TARGET, Options, TICK};
use crate::util::{LogLimiter, next_backoff};

/// What a sink's exporter may report besides its batches: a failure, a
/// standing problem, a log line. [`Exporter::tick`] receives one.
pub struct Housekeeping<'a> {
    core: &'a Core,
    log: &'a mut LogLimiter,
    error: Option<String>,
}

impl Housekeeping<'_> {
    /// Reports a failure: the sink shows as failing with this message,
    /// which is logged (at most one line every ten seconds).
    pub fn fail(&mut self, message: impl Into<String>) {
        self.error = Some(message.into());
    }

    /// When the sink must stop, if it is stopping: finish (or give up) by
    /// then. It can appear while an export is under way (the guard was
    /// dropped meanwhile): a long wait should look again now and then.
    pub fn deadline(&self) -> Option<Instant> {
        self.core.stop_deadline()
    }

    /// Sets or clears a standing problem shown in the sink's status (and
    /// making its readiness check fail), such as a template that could
    /// not be installed.
    pub fn warning(&mut self, warning: Option<String>) {
        self.core.set_warning(warning);
    }

    /// Logs `message` as a warning of this sink's, under the same limit as
    /// failures, without marking the sink as failing.
    pub fn log(&mut self, message: &str) {
        log(self.core, self.log, message, false);
    }
}

/// What the exporter says about the batch it was given: which items to
/// try again, how many were refused for good, and why an attempt failed.
pub struct Delivery<'a, T> {
    house: Housekeeping<'a>,
    retry: Vec<T>,
    rejected: u64,
    given_up: u64,
    retry_after: Option<Duration>,
}

impl<'a, T> Delivery<'a, T> {
    /// Keeps `item` to try again after a backoff, before newer items, in
    /// the order of the calls.
    pub fn retry(&mut self, item: T) {
        self.retry.push(item);
    }

    /// [`retry`](Self::retry) for each item, in order.
    pub fn retry_all(&mut self, items: impl IntoIterator<Item = T>) {
        self.retry.extend(items);
    }

    /// Counts `n` items of the batch as refused for good: they are not
    /// retried, and count in `hyperkit_obs_dropped_total`.
    pub fn reject(&mut self, n: usize) {
        self.rejected += n as u64;
    }

    /// Counts `n` items of the batch as lost without an answer (abandoned at
    /// the stop deadline): counted as dropped, not retried.
    pub fn give_up(&mut self, n: usize) {
        self.given_up += n as u64;
    }

    /// How long the backend asked to wait before the next attempt
    /// (`Retry-After`), replacing the backoff for the items retried.
    pub fn retry_after(&mut self, wait: Duration) {
        self.retry_after = Some(wait);
    }

    /// Reports this attempt's failure (see [`Housekeeping::fail`]).
    pub fn fail(&mut self, message: impl Into<String>) {
        self.house.fail(message);
    }

    /// See [`Housekeeping::deadline`].
    pub fn deadline(&self) -> Option<Instant> {
        self.house.deadline()
    }

    /// See [`Housekeeping::warning`].
    pub fn warning(&mut self, warning: Option<String>) {
        self.house.warning(warning);
    }

    /// See [`Housekeeping::log`].
    pub fn log(&mut self, message: &str) {
        self.house.log(message);
    }

    /// The [`Housekeeping`] side of this delivery, for code shared with
    /// [`Exporter::tick`].
    pub fn housekeeping(&mut self) -> &mut Housekeeping<'a> {
        &mut self.house
    }
}

fn log(core: &Core, limiter: &mut LogLimiter, message: &str, error: bool) {
    if let Some(suppressed) = limiter.admit() {
        if error {
            tracing::error!(target: LOG_TARGET, sink = core.sink, suppressed, "{message}");
        } else {
            tracing::warn!(target: LOG_TARGET, sink = core.sink, suppressed, "{message}");
        }
    }
}

/// How many of `items` are in each lane (counted, other).
fn lanes<E: Exporter>(items: &[E::Item]) -> [u64; 2] {
    let counted = items.iter().filter(|i| E::counted(i)).count() as u64;
    [counted, items.len() as u64 - counted]
}

struct Worker<'a, E: Exporter> {
    exporter: E,
    core: &'a Core,
    options: &'a Options,
    pending: VecDeque<E::Item>,
    pending_weight: usize,
    /// When the oldest item now pending arrived.
    oldest: Option<Instant>,
    backoff: Duration,
    retry_at: Option<Instant>,
    waiters: Vec<(u64, Sender<()>)>,
    stop_at: Option<Instant>,
    log: LogLimiter,
}

pub(super) fn run<E: Exporter>(
    exporter: E,
    rx: Receiver<E::Item>,
    control: Receiver<Control>,
    core: &Core,
    options: &Options,
) {
    let mut w = Worker {
        exporter,
        core,
        options,
        pending: VecDeque::new(),
        pending_weight: 0,
        oldest: None,
        backoff: Duration::ZERO,
        retry_at: None,
        waiters: Vec::new(),
        stop_at: None,
        log: LogLimiter::default(),
    };
    let mut closed = false;
    loop {
        let now = Instant::now();
        let mut wake = now + TICK;
        if let Some(due) = w.batch_due_at() {
            wake = wake.min(due);
        }
        if let Some(stop) = w.stop_at {
            wake = wake.min(stop);
        }
        if !closed {
            match control.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(msg) => w.control(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
            while let Ok(msg) = control.try_recv() {
                w.control(msg);
            }
        } else {
            std::thread::sleep(wake.saturating_duration_since(now));
        }
        if closed {
            w.stop_at.get_or_insert_with(Instant::now);
        }
        w.take(&rx);
        let now = Instant::now();
        if w.stop_at.is_some_and(|t| now >= t) {
            w.give_up(&rx);
            break;
        }
        if w.ready(now) {
            w.export_batch(now);
        } else {
            w.tick();
        }
        w.answer();
        if w.stop_at.is_some() && w.pending.is_empty() && core.queued() == 0 {
            break;
        }
    }
    w.answer();
    let _ = catch_unwind(AssertUnwindSafe(|| w.exporter.close()));
}

impl<E: Exporter> Worker<'_, E> {
    fn control(&mut self, msg: Control) {
        match msg {
            Control::Flush { target, reply } => self.waiters.push((target, reply)),
            Control::Stop(deadline) => {
                let at = Instant::now() + deadline;
                self.stop_at = Some(self.stop_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    fn push(&mut self, item: E::Item, now: Instant) {
        self.pending_weight += self.exporter.weight(&item);
        self.pending.push_back(item);
        self.oldest.get_or_insert(now);
    }

    /// Moves what callers queued into `pending`.
    fn take(&mut self, rx: &Receiver<E::Item>) {
        let now = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(item) => self.push(item, now),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// When the pending items form a batch that should go, ignoring
    /// backoff.
    fn batch_due_at(&self) -> Option<Instant> {
        let oldest = self.oldest?;
        let due = oldest + self.options.linger;
        Some(match self.retry_at {
            Some(r) => r.max(due),
            None => due,
        })
    }

    fn ready(&self, now: Instant) -> bool {
        if self.pending.is_empty() || self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        let o = self.options;
        !self.waiters.is_empty()
            || self.stop_at.is_some()
            || self.pending.len() >= o.max_batch
            || (o.max_batch_bytes > 0 && self.pending_weight >= o.max_batch_bytes)
            || self.oldest.is_some_and(|t| now >= t + o.linger)
    }

    fn export_batch(&mut self, now: Instant) {
        self.retry_at = None;
        let o = self.options;
        let mut batch = Vec::with_capacity(self.pending.len().min(o.max_batch));
        let mut weight = 0;
        while let Some(item) = self.pending.front() {
            let w = self.exporter.weight(item);
            if !batch.is_empty()
                && (batch.len() >= o.max_batch
                    || (o.max_batch_bytes > 0 && weight + w > o.max_batch_bytes))
            {
                break;
            }
            weight += w;
            if let Some(item) = self.pending.pop_front() {
                batch.push(item);
            }
        }
        self.pending_weight -= weight;
        if self.pending.is_empty() {
            self.oldest = None;
        }
        let n = batch.len() as u64;
        let lanes_in = lanes::<E>(&batch);
        let (core, options) = (self.core, self.options);
        let mut delivery = Delivery {
            house: Housekeeping {
                core,
                log: &mut self.log,
                error: None,
            },
            retry: Vec::new(),
            rejected: 0,
            given_up: 0,
            retry_after: None,
        };
        let exporter = &mut self.exporter;
        let panicked =
            catch_unwind(AssertUnwindSafe(|| exporter.export(batch, &mut delivery))).is_err();
        let Delivery {
            house: Housekeeping { error, .. },
            mut retry,
            rejected,
            given_up,
            retry_after,
        } = delivery;
        let retried = retry.len() as u64;
        let rejected = rejected.min(n.saturating_sub(retried));
        let given_up = given_up.min(n - retried - rejected);
        let rest = n - retried - rejected - given_up;
        let lanes_back = lanes::<E>(&retry);
        core.finish([lanes_in[0] - lanes_back[0], lanes_in[1] - lanes_back[1]]);
        core.count_rejected(rejected);
        core.count_dropped(given_up);
        if panicked {
            core.count_dropped(rest);
        } else {
            core.count_delivered(rest);
        }
        for item in &retry {
            self.pending_weight += self.exporter.weight(item);
        }
        for item in retry.drain(..).rev() {
            self.pending.push_front(item);
        }
        if !self.pending.is_empty() {
            self.oldest.get_or_insert(now);
        }
        let error = match (panicked, error) {
            (true, _) => Some(format!(
                "the {} exporter panicked; {rest} items of its batch are lost",
                core.sink
            )),
            (false, e) => e,
        };
        match &error {
            Some(message) => {
                core.set_error(message.clone());
                log(core, &mut self.log, message, true);
            }
            None if retried == 0 => {
                self.backoff = Duration::ZERO;
                core.set_success();
            }
            None => {}
        }
        if retried > 0 {
            self.backoff = next_backoff(self.backoff, options.retry_initial, options.retry_max);
            let wait = retry_after.map_or(self.backoff, |r| r.min(options.retry_max));
            self.retry_at = Some(Instant::now() + wait);
        }
    }

    fn tick(&mut self) {
        let mut house = Housekeeping {
            core: self.core,
            log: &mut self.log,
            error: None,
        };
        let exporter = &mut self.exporter;
        let ok = catch_unwind(AssertUnwindSafe(|| exporter.tick(&mut house))).is_ok();
        let error = if ok {
            house.error
        } else {
            Some(format!(
                "the {} exporter panicked in its housekeeping",
                self.core.sink
            ))
        };
        if let Some(message) = error {
            self.core.set_error(message.clone());
            log(self.core, &mut self.log, &message, true);
        }
    }

    /// Answers the flushes whose items are all finished.
    fn answer(&mut self) {
        let finished = self.core.finished();
        self.waiters.retain(|(target, reply)| {
            if finished >= *target {
                let _ = reply.send(());
                false
            } else {
                true
            }
        });
    }

    /// At the stop deadline: what is still queued is dropped and counted.
    fn give_up(&mut self, rx: &Receiver<E::Item>) {
        self.take(rx);
        let left = self.pending.len() as u64;
        let pending: Vec<E::Item> = self.pending.drain(..).collect();
        self.core.finish(lanes::<E>(&pending));
        if left > 0 {
            self.core.count_dropped(left);
            let message = format!(
                "{left} items could not be delivered to {} before the shutdown deadline and \
                 are dropped (counted in hyperkit_obs_dropped_total{{sink=\"{}\"}})",
                self.core.target, self.core.sink
            );
            self.core.set_error(message.clone());
            tracing::error!(target: LOG_TARGET, sink = self.core.sink, "{message}");
        }
    }
}
