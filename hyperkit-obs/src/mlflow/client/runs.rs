//! The runs area of the API: create a run, log to it in batches, end it,
//! deliver a whole run, search runs and read a metric's history, following
//! pages to the end (and stopping when a server repeats a page token).

use serde::Deserialize;
use serde_json::json;

use super::batch::{batches, checked_tags};
use super::{MlflowClient, Replay, RunsPage};
use crate::mlflow::error::MlflowError;
use crate::mlflow::types::{KeyValue, Metric, Run, RunInfo, RunRecord, RunStatus, ViewType};

impl MlflowClient {
    /// Creates a run. Not replayed after an answer that leaves its effect
    /// unknown (see [`MlflowError::Transport::maybe_sent`]): the caller
    /// decides, e.g. by searching for a tag it set.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            run: Run,
        }
        let tags = checked_tags(tags)?;
        let a: Answer = self
            .post(
                "runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": start_time,
                    "tags": tags,
                }),
                Replay::Unsafe,
            )
            .await?;
        Ok(a.run.info)
    }

    /// Logs metrics, params and tags to a run, in as few `runs/log-batch`
    /// requests as MLflow's limits allow (see [`limits`](super::limits)).
    /// Every key is checked before anything is sent; values longer than
    /// MLflow accepts are cut as its Python client cuts them, with a warning.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), MlflowError> {
        for body in batches(run_id, metrics, params, tags)? {
            let _: serde_json::Value = self.post("runs/log-batch", body, Replay::Safe).await?;
        }
        Ok(())
    }

    /// Links traces (MLflow's ids, `tr-…`) to a run, so that the run's
    /// Traces tab and `search_traces(run_id=…)` list them (MLflow 3's
    /// `traces/link-to-run`, at most 100 at once; linking again is a no-op).
    pub async fn link_traces_to_run(
        &self,
        run_id: &str,
        trace_ids: &[&str],
    ) -> Result<(), MlflowError> {
        let _: serde_json::Value = self
            .post(
                "traces/link-to-run",
                json!({ "run_id": run_id, "trace_ids": trace_ids }),
                Replay::Safe,
            )
            .await?;
        Ok(())
    }

    /// Sets a run's status and end time.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time: Option<i64>,
    ) -> Result<(), MlflowError> {
        let mut body = json!({ "run_id": run_id, "run_uuid": run_id, "status": status.as_str() });
        if let Some(end) = end_time {
            body["end_time"] = json!(end);
        }
        let _: serde_json::Value = self.post("runs/update", body, Replay::Safe).await?;
        Ok(())
    }

    /// Delivers a whole run: create (with its tags), log-batch (params,
    /// metrics), update (status, end time). Returns the run id.
    pub async fn log_run(
        &self,
        experiment_id: &str,
        run: &RunRecord,
    ) -> Result<String, MlflowError> {
        let info = self
            .create_run(experiment_id, &run.run_name, run.start_time, &run.tags)
            .await?;
        self.complete_run(&info.run_id, run).await?;
        Ok(info.run_id)
    }

    /// The steps of [`log_run`](Self::log_run) after the run exists: params
    /// and metrics, then status and end time. Safe to repeat.
    pub async fn complete_run(&self, run_id: &str, run: &RunRecord) -> Result<(), MlflowError> {
        if !run.params.is_empty() || !run.metrics.is_empty() {
            self.log_batch(run_id, &run.metrics, &run.params, &[])
                .await?;
        }
        if run.end_time.is_some() || run.status != RunStatus::Running {
            self.update_run(run_id, run.status, run.end_time).await?;
        }
        Ok(())
    }

    /// One page of `runs/search` over the active runs.
    pub async fn search_runs(
        &self,
        experiment_ids: &[&str],
        filter: &str,
        max_results: u32,
        page_token: Option<&str>,
    ) -> Result<RunsPage, MlflowError> {
        self.search_runs_in(
            ViewType::ActiveOnly,
            experiment_ids,
            filter,
            max_results,
            page_token,
        )
        .await
    }

    /// One page of `runs/search` over the runs `view` sees.
    pub(crate) async fn search_runs_in(
        &self,
        view: ViewType,
        experiment_ids: &[&str],
        filter: &str,
        max_results: u32,
        page_token: Option<&str>,
    ) -> Result<RunsPage, MlflowError> {
        let mut body = json!({
            "experiment_ids": experiment_ids,
            "filter": filter,
            "max_results": max_results,
            "run_view_type": view.as_str(),
        });
        if let Some(token) = page_token {
            body["page_token"] = json!(token);
        }
        self.post("runs/search", body, Replay::Safe).await
    }

    /// Every active run matching `filter`, following `next_page_token` to
    /// the end.
    pub async fn search_all_runs(
        &self,
        experiment_ids: &[&str],
        filter: &str,
    ) -> Result<Vec<Run>, MlflowError> {
        self.search_all_runs_in(ViewType::ActiveOnly, experiment_ids, filter)
            .await
    }

    /// Every run `view` sees matching `filter`, following `next_page_token`
    /// to the end.
    pub(crate) async fn search_all_runs_in(
        &self,
        view: ViewType,
        experiment_ids: &[&str],
        filter: &str,
    ) -> Result<Vec<Run>, MlflowError> {
        let mut runs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .search_runs_in(view, experiment_ids, filter, 1000, token.as_deref())
                .await?;
            runs.extend(page.runs);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(runs),
            }
        }
    }

    /// Every value ever logged for metric `key` of a run, following pages.
    pub async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<Metric>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            metrics: Vec<Metric>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let a: Answer = self
                .call(
                    reqwest::Method::GET,
                    "metrics/get-history",
                    &query,
                    None,
                    Replay::Safe,
                )
                .await?;
            out.extend(a.metrics);
            match a.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }
}
