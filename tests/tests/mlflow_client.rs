//! `MlflowClient` and the background exporter against a local MLflow
//! PROTOCOL FIXTURE: the bad answers that servers and the proxies in front
//! of them give, which a real MLflow server cannot be made to give on
//! demand (real servers are tested in `mlflow_server.rs`).
//!
//! The fixture is not MLflow. It is a small HTTP/1.1 server on 127.0.0.1
//! that implements just enough of MLflow's REST API
//! (<https://mlflow.org/docs/latest/rest-api.html>), with its JSON shapes
//! (empty lists omitted, as MLflow's protobuf JSON omits them) and its error
//! bodies (`{"error_code": "...", "message": "..."}`), and enforces the
//! `runs/log-batch` limits MLflow's server enforces: `GET
//! experiments/get-by-name`, `POST experiments/create`, `runs/create`,
//! `runs/log-batch`, `runs/update`, `runs/search` (the `tags.`/`params.`
//! equality filters hyperkit-obs sends, paged with `next_page_token` at a
//! configurable page size) and `GET metrics/get-history`. It records every
//! request (endpoint, body, arrival time) and can be told to answer the
//! next N requests to an endpoint with a [`Fault`] instead: a status and
//! body, the action performed and then an error or a malformed 200, a hang,
//! or a dropped connection. It is written on tokio's TCP types rather than
//! axum so that it can hang, drop a connection or send a broken body at
//! exactly the point a test asks for.
//!
//! The exporter is process-wide: its tests run one at a time
//! (`exporter_lock()`) and shut their exporter down at the end.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hyperkit_obs::mlflow::{
    self, CALL_ID_TAG, ErrorCode, ExperimentTracker, KeyValue, Metric, MlflowClient, MlflowConfig,
    MlflowError,
};
use hyperkit_obs::model::{CallId, current_call_id, record_acceptance};
use hyperkit_obs::{ModelOutput, MonitoringConfig, track_model};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

// ---------------------------------------------------------------------------
// The protocol fixture.

/// How the fixture answers one request instead of normally.
#[derive(Clone, Debug)]
enum Fault {
    /// Answer this status, extra headers and body; do nothing.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Perform the request, then answer this status and body (the effect
    /// happened, the client is told it failed).
    AfterEffect { status: u16, body: String },
    /// Perform the request, then answer 200 with a body that is not JSON.
    Malformed,
    /// Answer this status with a page that echoes the request's
    /// `Authorization` header, as some gateways do.
    EchoAuthorization(u16),
    /// Never answer; the connection stays open.
    Hang,
    /// Close the connection after reading the request, without answering.
    Drop,
}

impl Fault {
    /// MLflow's error body with `status`.
    fn mlflow(status: u16, code: &str, message: &str) -> Fault {
        Fault::Answer {
            status,
            headers: Vec::new(),
            body: error_body(code, message),
        }
    }

    /// A reverse proxy's HTML error page.
    fn html(status: u16) -> Fault {
        Fault::Answer {
            status,
            headers: Vec::new(),
            body: format!(
                "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n\
                 <center><h1>{status} Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n"
            ),
        }
    }
}

fn error_body(code: &str, message: &str) -> String {
    json!({ "error_code": code, "message": message }).to_string()
}

/// One request as the fixture received it.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    /// The path after `/api/2.0/mlflow/`, e.g. `runs/log-batch`.
    endpoint: String,
    query: Vec<(String, String)>,
    body: Vec<u8>,
    authorization: Option<String>,
    /// When the whole request had arrived.
    at: Instant,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone, Debug)]
struct StoredRun {
    run_id: String,
    experiment_id: String,
    run_name: String,
    status: String,
    start_time: i64,
    end_time: Option<i64>,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    /// Every value ever logged, in order.
    metrics: Vec<Value>,
}

impl StoredRun {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn info(&self) -> Value {
        let mut info = json!({
            "run_id": self.run_id,
            "run_uuid": self.run_id,
            "experiment_id": self.experiment_id,
            "run_name": self.run_name,
            "user_id": "fixture",
            "status": self.status,
            "start_time": self.start_time,
            "artifact_uri": format!("mlflow-artifacts:/{}/{}/artifacts", self.experiment_id, self.run_id),
            "lifecycle_stage": "active",
        });
        if let Some(end) = self.end_time {
            info["end_time"] = json!(end);
        }
        info
    }

    /// MLflow's `Run`: the latest value of each metric (by step, then
    /// timestamp, then value), and no empty lists.
    fn to_json(&self) -> Value {
        let mut latest: Vec<&Value> = Vec::new();
        for m in &self.metrics {
            let order = |m: &Value| {
                (
                    m["step"].as_i64().unwrap_or(0),
                    m["timestamp"].as_i64().unwrap_or(0),
                    m["value"].as_f64().unwrap_or(f64::NAN),
                )
            };
            match latest.iter_mut().find(|l| l["key"] == m["key"]) {
                Some(l) => {
                    if order(m).partial_cmp(&order(l)) == Some(std::cmp::Ordering::Greater) {
                        *l = m;
                    }
                }
                None => latest.push(m),
            }
        }
        let pairs = |list: &[(String, String)]| -> Vec<Value> {
            list.iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect()
        };
        let mut data = serde_json::Map::new();
        if !latest.is_empty() {
            data.insert("metrics".into(), json!(latest));
        }
        if !self.params.is_empty() {
            data.insert("params".into(), json!(pairs(&self.params)));
        }
        if !self.tags.is_empty() {
            data.insert("tags".into(), json!(pairs(&self.tags)));
        }
        json!({ "info": self.info(), "data": data, "inputs": {} })
    }
}

struct State {
    requests: Vec<Request>,
    /// Faults to answer with and how many more times, by endpoint (`*`:
    /// any endpoint).
    faults: HashMap<String, VecDeque<(Fault, usize)>>,
    experiments: Vec<(String, String)>,
    runs: Vec<StoredRun>,
    page_size: usize,
    next_id: u64,
}

/// The fixture server; stops (closing every connection) when dropped.
struct Fixture {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fixture {
    fn start() -> Fixture {
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            faults: HashMap::new(),
            experiments: vec![("0".to_owned(), "Default".to_owned())],
            runs: Vec::new(),
            page_size: 1000,
            next_id: 1,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fixture");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(serve(Arc::clone(&shared), stream));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection, hung ones too.
            drop(rt);
        });
        Fixture {
            url,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the next `times` requests to `endpoint` (`*`: any) with
    /// `fault`.
    fn fail(&self, endpoint: &str, times: usize, fault: Fault) {
        self.state()
            .faults
            .entry(endpoint.to_owned())
            .or_default()
            .push_back((fault, times));
    }

    fn set_page_size(&self, n: usize) {
        self.state().page_size = n;
    }

    fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    fn requests_to(&self, endpoint: &str) -> Vec<Request> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    fn count(&self, endpoint: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// Creates an experiment directly in the store; returns its id.
    fn seed_experiment(&self, name: &str) -> String {
        create_experiment(&mut self.state(), name).expect("a new experiment name")
    }

    /// Creates a finished run directly in the store; returns its id.
    fn seed_run(
        &self,
        experiment_id: &str,
        params: &[(&str, &str)],
        metrics: &[(&str, f64)],
    ) -> String {
        let mut state = self.state();
        let run_id = new_run_id(&mut state);
        let own = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        state.runs.push(StoredRun {
            run_id: run_id.clone(),
            experiment_id: experiment_id.to_owned(),
            run_name: format!("seeded-{run_id}"),
            status: "FINISHED".to_owned(),
            start_time: 1_700_000_000_000,
            end_time: Some(1_700_000_001_000),
            params: own(params),
            tags: Vec::new(),
            metrics: metrics
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v, "timestamp": 1_700_000_001_000_i64, "step": 0}))
                .collect(),
        });
        run_id
    }

    /// The stored runs whose tag `key` is `value`.
    fn runs_tagged(&self, key: &str, value: &str) -> Vec<StoredRun> {
        self.state()
            .runs
            .iter()
            .filter(|r| r.tag(key) == Some(value))
            .cloned()
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one keep-alive connection.
async fn serve(state: Arc<Mutex<State>>, stream: tokio::net::TcpStream) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert!(
            header("transfer-encoding").is_none(),
            "the fixture reads Content-Length bodies only"
        );
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method,
            endpoint: path
                .strip_prefix("/api/2.0/mlflow/")
                .unwrap_or(path)
                .to_owned(),
            query: parse_query(query),
            body,
            authorization: header("authorization"),
            at: Instant::now(),
        };
        let answer = {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.requests.push(request.clone());
            let fault = [request.endpoint.as_str(), "*"].iter().find_map(|e| {
                let queue = state.faults.get_mut(*e)?;
                let (fault, times) = queue.front_mut()?;
                let fault = fault.clone();
                *times -= 1;
                if *times == 0 {
                    queue.pop_front();
                }
                Some(fault)
            });
            match fault {
                None => {
                    let (status, body) = handle(&mut state, &request);
                    Some((status, Vec::new(), body))
                }
                Some(Fault::Answer {
                    status,
                    headers,
                    body,
                }) => Some((status, headers, body)),
                Some(Fault::AfterEffect { status, body }) => {
                    let _ = handle(&mut state, &request);
                    Some((status, Vec::new(), body))
                }
                Some(Fault::Malformed) => {
                    let _ = handle(&mut state, &request);
                    Some((
                        200,
                        Vec::new(),
                        r#"{"run": {"info": {"run_id": "#.to_owned(),
                    ))
                }
                Some(Fault::EchoAuthorization(status)) => Some((
                    status,
                    Vec::new(),
                    format!(
                        "<html><body>Rejected Authorization: {}</body></html>",
                        request.authorization.as_deref().unwrap_or("")
                    ),
                )),
                Some(Fault::Hang) => None,
                Some(Fault::Drop) => return,
            }
        };
        let Some((status, extra, text)) = answer else {
            // Hang: hold the connection open until the fixture stops.
            std::future::pending::<()>().await;
            return;
        };
        let content_type = if text.starts_with('<') {
            "text/html"
        } else {
            "application/json"
        };
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            reason(status),
            text.len()
        );
        for (k, v) in extra {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&text);
        if writer.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "BAD REQUEST",
        401 => "UNAUTHORIZED",
        404 => "NOT FOUND",
        405 => "METHOD NOT ALLOWED",
        429 => "TOO MANY REQUESTS",
        500 => "INTERNAL SERVER ERROR",
        502 => "Bad Gateway",
        503 => "SERVICE UNAVAILABLE",
        _ => "X",
    }
}

/// `a=b&c=d%20e+f` → pairs, decoded as forms are.
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if s.get(i + 1..i + 3).is_some() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn new_run_id(state: &mut State) -> String {
    state.next_id += 1;
    format!("{:032x}", 0xf1c7_0000_0000_u64 + state.next_id)
}

fn create_experiment(state: &mut State, name: &str) -> Result<String, (u16, String)> {
    if state.experiments.iter().any(|(_, n)| n == name) {
        return Err((
            400,
            error_body(
                "RESOURCE_ALREADY_EXISTS",
                &format!("Experiment '{name}' already exists."),
            ),
        ));
    }
    state.next_id += 1;
    let id = state.next_id.to_string();
    state.experiments.push((id.clone(), name.to_owned()));
    Ok(id)
}

fn invalid(message: &str) -> (u16, String) {
    (400, error_body("INVALID_PARAMETER_VALUE", message))
}

fn missing(message: &str) -> (u16, String) {
    (404, error_body("RESOURCE_DOES_NOT_EXIST", message))
}

/// What MLflow answers to `request`, performing it on the store.
fn handle(state: &mut State, request: &Request) -> (u16, String) {
    let get = |name: &str| {
        request
            .query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let expected_method = match request.endpoint.as_str() {
        "experiments/get-by-name" | "metrics/get-history" => "GET",
        _ => "POST",
    };
    if request.method != expected_method {
        return (
            405,
            "<!doctype html>\n<title>405 Method Not Allowed</title>\n".to_owned(),
        );
    }
    let body = if expected_method == "POST" {
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(v) if v.is_object() => v,
            _ => return invalid("Malformed request body: not a JSON object"),
        }
    } else {
        Value::Null
    };
    let result = match request.endpoint.as_str() {
        "experiments/get-by-name" => {
            let name = get("experiment_name").unwrap_or_default();
            match state.experiments.iter().find(|(_, n)| *n == name) {
                Some((id, name)) => Ok(json!({ "experiment": {
                    "experiment_id": id,
                    "name": name,
                    "artifact_location": format!("mlflow-artifacts:/{id}"),
                    "lifecycle_stage": "active",
                    "last_update_time": 1_700_000_000_000_i64,
                    "creation_time": 1_700_000_000_000_i64,
                }})),
                None => Err(missing(&format!(
                    "Could not find experiment with name '{name}'"
                ))),
            }
        }
        "experiments/create" => match body["name"].as_str() {
            Some(name) if !name.is_empty() => {
                create_experiment(state, name).map(|id| json!({ "experiment_id": id }))
            }
            _ => Err(invalid("Missing value for required parameter 'name'.")),
        },
        "runs/create" => runs_create(state, &body),
        "runs/log-batch" => log_batch(state, &body, request.body.len()),
        "runs/update" => {
            let id = body["run_id"].as_str().unwrap_or_default();
            match state.runs.iter_mut().find(|r| r.run_id == id) {
                None => Err(missing(&format!("Run '{id}' not found"))),
                Some(run) => {
                    if let Some(s) = body["status"].as_str() {
                        run.status = s.to_owned();
                    }
                    if let Some(end) = body["end_time"].as_i64() {
                        run.end_time = Some(end);
                    }
                    Ok(json!({ "run_info": run.info() }))
                }
            }
        }
        "runs/search" => search(state, &body),
        "metrics/get-history" => {
            let id = get("run_id").unwrap_or_default();
            let key = get("metric_key").unwrap_or_default();
            match state.runs.iter().find(|r| r.run_id == id) {
                None => Err(missing(&format!("Run '{id}' not found"))),
                Some(run) => {
                    let all: Vec<&Value> = run
                        .metrics
                        .iter()
                        .filter(|m| m["key"] == key.as_str())
                        .collect();
                    page(&all, get("page_token").as_deref(), state.page_size)
                        .map(|(items, next)| with_token(json!({ "metrics": items }), next))
                }
            }
        }
        other => {
            return (
                404,
                format!("<!doctype html>\n<title>404 Not Found</title>\n<p>{other}</p>\n"),
            );
        }
    };
    match result {
        Ok(mut v) => {
            // MLflow's protobuf JSON leaves out empty lists.
            if let Some(map) = v.as_object_mut() {
                map.retain(|_, x| !x.as_array().is_some_and(Vec::is_empty));
            }
            (200, v.to_string())
        }
        Err(e) => e,
    }
}

fn pairs_of(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|list| {
            list.iter()
                .map(|kv| {
                    (
                        kv["key"].as_str().unwrap_or_default().to_owned(),
                        kv["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check_key(key: &str) -> Result<(), (u16, String)> {
    if key.is_empty() || key.chars().count() > 250 {
        return Err(invalid(&format!(
            "'{key}' exceeds the maximum length of 250 characters or is empty"
        )));
    }
    Ok(())
}

fn runs_create(state: &mut State, body: &Value) -> Result<Value, (u16, String)> {
    let experiment_id = body["experiment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !state.experiments.iter().any(|(id, _)| *id == experiment_id) {
        return Err(missing(&format!(
            "No Experiment with id={experiment_id} exists"
        )));
    }
    let mut tags = pairs_of(&body["tags"]);
    for (k, v) in &tags {
        check_key(k)?;
        if v.chars().count() > 8000 {
            return Err(invalid(&format!("Tag '{k}' had length > 8000")));
        }
    }
    let run_name = body["run_name"]
        .as_str()
        .unwrap_or("fixture-run")
        .to_owned();
    tags.push(("mlflow.runName".to_owned(), run_name.clone()));
    let run_id = new_run_id(state);
    let run = StoredRun {
        run_id,
        experiment_id,
        run_name,
        status: "RUNNING".to_owned(),
        start_time: body["start_time"].as_i64().unwrap_or(0),
        end_time: None,
        params: Vec::new(),
        tags,
        metrics: Vec::new(),
    };
    let answer = json!({ "run": run.to_json() });
    state.runs.push(run);
    Ok(answer)
}

/// `runs/log-batch`, refused as MLflow's server refuses it
/// (`_validate_batch_log_limits`, `_validate_batch_log_api_req`, params
/// that change value).
fn log_batch(state: &mut State, body: &Value, size: usize) -> Result<Value, (u16, String)> {
    if size > 1_000_000 {
        return Err(invalid(&format!(
            "Batched logging API requests must be at most 1000000 bytes, got a request of {size} bytes"
        )));
    }
    let count = |k: &str| body[k].as_array().map_or(0, Vec::len);
    let (metrics, params, tags) = (count("metrics"), count("params"), count("tags"));
    if metrics > 1000 || params > 100 || tags > 100 || metrics + params + tags > 1000 {
        return Err(invalid(&format!(
            "A batch logging request can contain at most 1000 metrics, 100 params, 100 tags \
             and 1000 entities; got {metrics} metrics, {params} params and {tags} tags"
        )));
    }
    let id = body["run_id"].as_str().unwrap_or_default();
    let Some(index) = state.runs.iter().position(|r| r.run_id == id) else {
        return Err(missing(&format!("Run '{id}' not found")));
    };
    let new_params = pairs_of(&body["params"]);
    let new_tags = pairs_of(&body["tags"]);
    let new_metrics = body["metrics"].as_array().cloned().unwrap_or_default();
    for (k, v) in &new_params {
        check_key(k)?;
        if v.chars().count() > 6000 {
            return Err(invalid(&format!("Param '{k}' had length > 6000")));
        }
    }
    for (k, v) in &new_tags {
        check_key(k)?;
        if v.chars().count() > 8000 {
            return Err(invalid(&format!("Tag '{k}' had length > 8000")));
        }
    }
    for m in &new_metrics {
        check_key(m["key"].as_str().unwrap_or_default())?;
        // Protobuf's JSON spells the non-finite doubles as strings.
        let special = matches!(m["value"].as_str(), Some("NaN" | "Infinity" | "-Infinity"));
        if !(m["value"].is_number() || special) || !m["timestamp"].is_i64() {
            return Err(invalid(&format!("Invalid metric {m}")));
        }
    }
    let run = &mut state.runs[index];
    for (k, v) in &new_params {
        if run.param(k).is_some_and(|old| old != v) {
            return Err(invalid(&format!(
                "Changing param values is not allowed. Param with key='{k}' was already logged"
            )));
        }
    }
    for (k, v) in new_params {
        if run.param(&k).is_none() {
            run.params.push((k, v));
        }
    }
    for (k, v) in new_tags {
        run.tags.retain(|(old, _)| *old != k);
        run.tags.push((k, v));
    }
    run.metrics.extend(new_metrics);
    Ok(json!({}))
}

/// One page of `items` from the offset `token` names.
fn page<T: Clone>(
    items: &[T],
    token: Option<&str>,
    size: usize,
) -> Result<(Vec<T>, Option<String>), (u16, String)> {
    let offset = match token {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("offset-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| invalid(&format!("Invalid page token: {t}")))?,
    };
    let end = (offset + size).min(items.len());
    let next = (end < items.len()).then(|| format!("offset-{end}"));
    Ok((items[offset..end].to_vec(), next))
}

fn with_token(mut v: Value, next: Option<String>) -> Value {
    if let Some(t) = next {
        v["next_page_token"] = json!(t);
    }
    v
}

fn search(state: &State, body: &Value) -> Result<Value, (u16, String)> {
    let max_results = body["max_results"].as_u64().unwrap_or(1000);
    if max_results == 0 || max_results > 50_000 {
        return Err(invalid(&format!(
            "Invalid value {max_results} for parameter 'max_results' supplied"
        )));
    }
    let ids: Vec<&str> = body["experiment_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let clauses = parse_filter(body["filter"].as_str().unwrap_or("")).map_err(|e| invalid(&e))?;
    let matching: Vec<&StoredRun> = state
        .runs
        .iter()
        .filter(|r| ids.contains(&r.experiment_id.as_str()))
        .filter(|r| {
            clauses
                .iter()
                .all(|(entity, key, value)| match entity.as_str() {
                    "tags" => r.tag(key) == Some(value),
                    _ => r.param(key) == Some(value),
                })
        })
        .collect();
    let size = state.page_size.min(usize::try_from(max_results).unwrap());
    let (runs, next) = page(&matching, body["page_token"].as_str(), size)?;
    let runs: Vec<Value> = runs.iter().map(|r| r.to_json()).collect();
    Ok(with_token(json!({ "runs": runs }), next))
}

/// The part of MLflow's search filter grammar hyperkit-obs uses:
/// `tags.<key> = '<value>'` and `params.<key> = '<value>'` joined by `and`,
/// keys plain or in backticks. Returns (entity, key, value) triples.
fn parse_filter(filter: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut clauses = Vec::new();
    let mut rest = filter.trim();
    while !rest.is_empty() {
        let (entity, after) = rest
            .split_once('.')
            .ok_or_else(|| format!("Invalid filter '{filter}': expected <entity>.<key>"))?;
        let entity = match entity.trim() {
            "tags" | "tag" => "tags",
            "params" | "param" => "params",
            other => return Err(format!("Invalid entity type '{other}' in '{filter}'")),
        };
        let (key, after) = match after.strip_prefix('`') {
            Some(quoted) => quoted
                .split_once('`')
                .ok_or_else(|| format!("Unterminated key in '{filter}'"))?,
            None => after.split_at(
                after
                    .find(|c: char| c.is_whitespace() || c == '=')
                    .unwrap_or(after.len()),
            ),
        };
        let after = after
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| format!("The fixture supports only '=' in '{filter}'"))?
            .trim_start()
            .strip_prefix('\'')
            .ok_or_else(|| format!("Expected a quoted value in '{filter}'"))?;
        let mut value = String::new();
        let mut end = None;
        let mut chars = after.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '\'' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("Unterminated value in '{filter}'"))?;
        clauses.push((entity.to_owned(), key.to_owned(), value));
        rest = after[end..].trim_start();
        if !rest.is_empty() {
            rest = rest
                .get(..4)
                .filter(|and| and.eq_ignore_ascii_case("and "))
                .map(|_| rest[4..].trim_start())
                .ok_or_else(|| format!("Expected 'and' in '{filter}'"))?;
        }
    }
    Ok(clauses)
}

// ---------------------------------------------------------------------------
// Helpers.

const TOKEN: &str = "mlflow-tok-8f3a2c71d9e4b605";

/// A configuration for the fixture read from MLflow's own variables, with
/// short retries; `extra` adds or overrides variables.
fn config(fixture: &Fixture, extra: &[(&str, &str)]) -> MlflowConfig {
    let mut vars: HashMap<String, String> = [
        ("MLFLOW_TRACKING_URI", fixture.url.as_str()),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.05"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.01"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "3"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    MonitoringConfig::from_lookup(|k| vars.get(k).cloned())
        .expect("a valid configuration")
        .mlflow
}

fn client(fixture: &Fixture, extra: &[(&str, &str)]) -> MlflowClient {
    MlflowClient::new(&config(fixture, extra)).unwrap()
}

/// A run to log to, created in the store directly.
fn seeded_run(fixture: &Fixture) -> String {
    let experiment = fixture.seed_experiment("logging");
    fixture.seed_run(&experiment, &[], &[])
}

// ---------------------------------------------------------------------------
// 1–3. Retries and error typing.

#[tokio::test]
async fn a_500_is_retried_until_it_succeeds_and_typed_internal_error_when_retries_run_out() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let metric = [Metric::new("loss", 0.5, 1_700_000_000_000)];
    let internal = || Fault::mlflow(500, "INTERNAL_ERROR", "database is locked");

    fixture.fail("runs/log-batch", 2, internal());
    client(&fixture, &[])
        .log_batch(&run, &metric, &[], &[])
        .await
        .expect("the third attempt succeeds");
    assert_eq!(
        fixture.count("runs/log-batch"),
        3,
        "two 500s and one success"
    );

    let before = fixture.count("runs/log-batch");
    fixture.fail("runs/log-batch", 2, internal());
    let e = client(&fixture, &[("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")])
        .log_batch(&run, &metric, &[], &[])
        .await
        .expect_err("one retry is not enough for two 500s");
    assert_eq!(
        fixture.count("runs/log-batch") - before,
        2,
        "one request and one retry"
    );
    assert!(
        matches!(
            &e,
            MlflowError::Api { code: ErrorCode::InternalError, status: 500, message, .. }
                if message == "database is locked"
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_502_proxy_page_is_an_http_error_not_an_api_error_and_is_retried() {
    let fixture = Fixture::start();
    let client = client(&fixture, &[]);

    fixture.fail("experiments/get-by-name", 1, Fault::html(502));
    fixture.seed_experiment("behind a proxy");
    let found = client
        .get_experiment_by_name("behind a proxy")
        .await
        .unwrap();
    assert_eq!(found.map(|e| e.name).as_deref(), Some("behind a proxy"));
    assert_eq!(
        fixture.count("experiments/get-by-name"),
        2,
        "the 502 was retried"
    );

    // Four 502s: the request and its three retries all fail.
    fixture.fail("experiments/get-by-name", 4, Fault::html(502));
    let e = client
        .get_experiment_by_name("behind a proxy")
        .await
        .expect_err("every attempt answered 502");
    assert_eq!(fixture.count("experiments/get-by-name"), 2 + 4);
    match &e {
        MlflowError::Http {
            status: 502, body, ..
        } => assert!(body.contains("nginx"), "{body}"),
        other => panic!("expected MlflowError::Http for a proxy page, got {other:?}"),
    }
    assert_eq!(e.code(), None);
}

#[tokio::test]
async fn create_run_is_not_replayed_after_a_500_but_is_after_a_503() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("creates");
    let client = client(&fixture, &[]);

    // A 500 may come after the run was created: sending it again could
    // create a second run.
    fixture.fail(
        "runs/create",
        1,
        Fault::AfterEffect {
            status: 500,
            body: error_body("INTERNAL_ERROR", "timeout committing"),
        },
    );
    let e = client
        .create_run(&experiment, "r", 1, &[])
        .await
        .expect_err("not replayed");
    assert_eq!(e.code(), Some(&ErrorCode::InternalError));
    assert_eq!(fixture.count("runs/create"), 1);

    // A 503 is a refusal before acting: safe to send again.
    fixture.fail(
        "runs/create",
        1,
        Fault::mlflow(503, "TEMPORARILY_UNAVAILABLE", "try later"),
    );
    client.create_run(&experiment, "r", 1, &[]).await.unwrap();
    assert_eq!(fixture.count("runs/create"), 3);
}

#[tokio::test]
async fn retry_after_on_a_429_is_waited_for_before_the_retry() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    fixture.fail(
        "runs/log-batch",
        1,
        Fault::Answer {
            status: 429,
            headers: vec![("Retry-After", "1".to_owned())],
            body: error_body("REQUEST_LIMIT_EXCEEDED", "slow down"),
        },
    );
    client(&fixture, &[])
        .log_batch(&run, &[Metric::new("loss", 1.0, 1)], &[], &[])
        .await
        .unwrap();
    let requests = fixture.requests_to("runs/log-batch");
    assert_eq!(
        requests.len(),
        2,
        "the 429 and one retry, nothing in between"
    );
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before Retry-After: 1"
    );
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
}

#[tokio::test]
async fn a_400_mlflow_error_is_sent_once_and_typed_with_its_code() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    fixture.fail(
        "runs/log-batch",
        1,
        Fault::mlflow(400, "INVALID_PARAMETER_VALUE", "Invalid value NaN for step"),
    );
    let e = client(&fixture, &[])
        .log_batch(&run, &[Metric::new("loss", 1.0, 1)], &[], &[])
        .await
        .unwrap_err();
    assert_eq!(fixture.count("runs/log-batch"), 1, "a 400 is not retried");
    assert!(
        matches!(
            &e,
            MlflowError::Api {
                status: 400,
                code: ErrorCode::InvalidParameterValue,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn a_404_without_an_mlflow_body_is_an_http_error_not_a_missing_experiment() {
    let fixture = Fixture::start();
    // A proxy in front of MLflow that does not know the route: its 404 must
    // not read as "no such experiment", or the client would create one.
    fixture.fail(
        "experiments/get-by-name",
        1,
        Fault::Answer {
            status: 404,
            headers: Vec::new(),
            body: r#"{"detail": "Not Found"}"#.to_owned(),
        },
    );
    let e = client(&fixture, &[])
        .get_or_create_experiment("routed")
        .await
        .expect_err("a proxy's 404 is an error");
    assert!(matches!(&e, MlflowError::Http { status: 404, .. }), "{e:?}");
    assert_eq!(
        fixture.count("experiments/get-by-name"),
        1,
        "a 404 is not retried"
    );
    assert_eq!(fixture.count("experiments/create"), 0);
}

// ---------------------------------------------------------------------------
// 4. The experiment race.

#[tokio::test]
async fn get_or_create_experiment_returns_the_winners_id_when_create_loses_the_race() {
    let fixture = Fixture::start();
    // Another process creates the experiment between our lookup and our
    // create: the lookup saw nothing, the create is refused.
    let winner = fixture.seed_experiment("contested");
    fixture.fail(
        "experiments/get-by-name",
        1,
        Fault::mlflow(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            "Could not find experiment with name 'contested'",
        ),
    );
    let id = client(&fixture, &[])
        .get_or_create_experiment("contested")
        .await
        .expect("the loser reads the winner's experiment");
    assert_eq!(id, winner);
    let endpoints: Vec<String> = fixture.requests().into_iter().map(|r| r.endpoint).collect();
    assert_eq!(
        endpoints,
        [
            "experiments/get-by-name",
            "experiments/create",
            "experiments/get-by-name"
        ]
    );
    let state = fixture.state();
    assert_eq!(
        state
            .experiments
            .iter()
            .filter(|(_, n)| n == "contested")
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------
// 5. log-batch limits.

/// Checks every log-batch request against MLflow's limits.
fn assert_within_limits(requests: &[Request]) {
    for (i, r) in requests.iter().enumerate() {
        let body = r.json();
        let n = |k: &str| body[k].as_array().map_or(0, Vec::len);
        let (m, p, t) = (n("metrics"), n("params"), n("tags"));
        assert!(
            m <= 1000 && p <= 100 && t <= 100,
            "request {i}: {m} metrics {p} params {t} tags"
        );
        assert!(m + p + t <= 1000, "request {i}: {} entities", m + p + t);
        assert!(
            r.body.len() <= 1_000_000,
            "request {i}: {} bytes",
            r.body.len()
        );
        assert!(m + p + t > 0, "request {i} is empty");
    }
}

#[tokio::test]
async fn log_batch_splits_by_count_limits_and_sends_everything_exactly_once() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let metrics: Vec<Metric> = (0..2_500)
        .map(|i| Metric {
            key: format!("metric_{}", i % 40),
            value: f64::from(i) * 0.5,
            timestamp: 1_700_000_000_000 + i64::from(i),
            step: i64::from(i / 40),
        })
        .collect();
    let params: Vec<KeyValue> = (0..250)
        .map(|i| KeyValue::new(format!("param_{i}"), format!("value {i}")))
        .collect();
    let tags: Vec<KeyValue> = (0..150)
        .map(|i| KeyValue::new(format!("tag.{i}"), format!("t{i}")))
        .collect();
    client(&fixture, &[])
        .log_batch(&run, &metrics, &params, &tags)
        .await
        .expect("every part accepted");

    let requests = fixture.requests_to("runs/log-batch");
    assert!(requests.len() >= 3, "{} requests", requests.len());
    assert_within_limits(&requests);
    let mut sent_metrics = Vec::new();
    let mut sent_params = Vec::new();
    let mut sent_tags = Vec::new();
    for r in &requests {
        let body = r.json();
        assert_eq!(body["run_id"], run.as_str());
        for m in body["metrics"].as_array().into_iter().flatten() {
            sent_metrics.push(serde_json::from_value::<Metric>(m.clone()).unwrap());
        }
        for p in body["params"].as_array().into_iter().flatten() {
            sent_params.push(serde_json::from_value::<KeyValue>(p.clone()).unwrap());
        }
        for t in body["tags"].as_array().into_iter().flatten() {
            sent_tags.push(serde_json::from_value::<KeyValue>(t.clone()).unwrap());
        }
    }
    // Everything, each once: same length and same set (the inputs are
    // distinct, so equal sets of equal size mean no duplicate).
    let key = |m: &Metric| (m.key.clone(), m.step, m.timestamp, m.value.to_bits());
    assert_eq!(sent_metrics.len(), 2_500);
    assert_eq!(
        sent_metrics.iter().map(key).collect::<HashSet<_>>(),
        metrics.iter().map(key).collect::<HashSet<_>>()
    );
    assert_eq!(sent_params.len(), 250);
    assert_eq!(
        sent_params.into_iter().collect::<HashSet<_>>(),
        params.into_iter().collect::<HashSet<_>>()
    );
    assert_eq!(sent_tags.len(), 150);
    assert_eq!(
        sent_tags.into_iter().collect::<HashSet<_>>(),
        tags.into_iter().collect::<HashSet<_>>()
    );
    // And the fixture's store agrees.
    let state = fixture.state();
    let stored = state.runs.iter().find(|r| r.run_id == run).unwrap();
    assert_eq!(
        (stored.metrics.len(), stored.params.len(), stored.tags.len()),
        (2_500, 250, 150)
    );
}

#[tokio::test]
async fn log_batch_splits_by_body_size_and_cuts_long_values_as_python_does() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[]);

    // 40 params of 30 KB: MLflow keeps 6,000 characters of a param value,
    // and its Python client cuts longer ones to 5,997 and `...`.
    let long: Vec<KeyValue> = (0..40)
        .map(|i| KeyValue::new(format!("long_{i}"), format!("{i:02}").repeat(15_000)))
        .collect();
    client.log_batch(&run, &[], &long, &[]).await.unwrap();
    let requests = fixture.requests_to("runs/log-batch");
    assert_within_limits(&requests);
    let sent: Vec<KeyValue> = requests
        .iter()
        .flat_map(|r| serde_json::from_value::<Vec<KeyValue>>(r.json()["params"].clone()).unwrap())
        .collect();
    assert_eq!(sent.len(), 40);
    for (kv, original) in sent.iter().zip(&long) {
        assert_eq!(kv.key, original.key);
        assert_eq!(kv.value.chars().count(), 6_000);
        assert_eq!(kv.value, format!("{}...", &original.value[..5_997]));
    }

    // 40 params and 40 tags at their longest, in 4-byte UTF-8: 24 KB and
    // 32 KB each, 2.24 MB in all; far under the count limits, so only the
    // size limit can split them.
    let params: Vec<KeyValue> = (0..40)
        .map(|i| KeyValue::new(format!("wide_{i}"), "🦀".repeat(6_000)))
        .collect();
    let tags: Vec<KeyValue> = (0..40)
        .map(|i| KeyValue::new(format!("wide_tag_{i}"), "🦀".repeat(8_000)))
        .collect();
    let before = fixture.count("runs/log-batch");
    client.log_batch(&run, &[], &params, &tags).await.unwrap();
    let requests = fixture.requests_to("runs/log-batch")[before..].to_vec();
    assert_within_limits(&requests);
    assert!(
        requests.len() >= 3,
        "2.24 MB in {} requests",
        requests.len()
    );
    let total: usize = requests.iter().map(|r| r.body.len()).sum();
    assert!(total > 2_000_000, "{total} bytes sent");
    let count = |k: &str| -> usize {
        requests
            .iter()
            .map(|r| r.json()[k].as_array().map_or(0, Vec::len))
            .sum()
    };
    assert_eq!((count("params"), count("tags")), (40, 40), "each sent once");
}

#[tokio::test]
async fn an_invalid_key_fails_before_any_request_is_sent() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[]);
    let long_key = "k".repeat(251);
    // Enough valid entities for several requests, the bad key last.
    let mut metrics: Vec<Metric> = (0..2_000)
        .map(|i| Metric::new(format!("m{i}"), 1.0, 1))
        .collect();
    metrics.push(Metric::new(long_key.clone(), 1.0, 1));
    let e = client
        .log_batch(&run, &metrics, &[], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MlflowError::InvalidKey { key, .. } if *key == long_key),
        "{e:?}"
    );

    let params = [
        KeyValue::new("ok", "1"),
        KeyValue::new(long_key.clone(), "v"),
    ];
    let e = client.log_batch(&run, &[], &params, &[]).await.unwrap_err();
    assert!(matches!(e, MlflowError::InvalidKey { .. }), "{e:?}");
    let tags = [KeyValue::new(long_key.clone(), "v")];
    let e = client.log_batch(&run, &[], &[], &tags).await.unwrap_err();
    assert!(matches!(e, MlflowError::InvalidKey { .. }), "{e:?}");
    let e = client.create_run("0", "r", 1, &tags).await.unwrap_err();
    assert!(matches!(e, MlflowError::InvalidKey { .. }), "{e:?}");

    assert_eq!(fixture.requests().len(), 0, "nothing was sent");
    // 250 characters is MLflow's limit, and accepted.
    let ok = [Metric::new("k".repeat(250), 1.0, 1)];
    client.log_batch(&run, &ok, &[], &[]).await.unwrap();
    assert_eq!(fixture.requests().len(), 1);
}

// ---------------------------------------------------------------------------
// 6. Pagination.

#[tokio::test]
async fn search_all_runs_follows_next_page_token_to_the_last_page() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("many runs");
    let seeded: HashSet<String> = (0..2_345)
        .map(|_| fixture.seed_run(&experiment, &[], &[]))
        .collect();
    fixture.set_page_size(1_000);
    let runs = client(&fixture, &[])
        .search_all_runs(&[&experiment], "")
        .await
        .unwrap();
    assert_eq!(runs.len(), 2_345);
    let ids: HashSet<String> = runs.into_iter().map(|r| r.info.run_id).collect();
    assert_eq!(ids, seeded, "every run, none twice");
    let pages = fixture.requests_to("runs/search");
    assert_eq!(pages.len(), 3);
    assert!(pages[0].json().get("page_token").is_none());
    assert_eq!(pages[1].json()["page_token"], "offset-1000");
    assert_eq!(pages[2].json()["page_token"], "offset-2000");
}

#[tokio::test]
async fn acceptance_rate_counts_runs_on_every_page() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("acceptance");
    // 2,345 runs of model-x: i % 3 == 0 accepted, 1 rejected, 2 undecided;
    // and runs of another model, which must not count.
    for i in 0..2_345 {
        let metrics: &[(&str, f64)] = match i % 3 {
            0 => &[("accepted", 1.0)],
            1 => &[("accepted", 0.0)],
            _ => &[],
        };
        fixture.seed_run(&experiment, &[("model", "model-x"), ("task", "t")], metrics);
        if i % 5 == 0 {
            fixture.seed_run(&experiment, &[("model", "model-y")], &[("accepted", 1.0)]);
        }
    }
    // The server pages at 400 even though the client asks for 1,000.
    fixture.set_page_size(400);
    let tracker = ExperimentTracker::with_config("acceptance", &config(&fixture, &[]))
        .await
        .unwrap();
    assert_eq!(tracker.experiment_id(), experiment);
    let rate = tracker.acceptance_rate("model-x").await.unwrap();
    assert_eq!(
        (rate.accepted, rate.rejected, rate.undecided),
        (782, 782, 781)
    );
    assert_eq!(rate.rate(), Some(0.5));
    let pages = fixture.requests_to("runs/search");
    assert_eq!(pages.len(), 6, "2,345 runs at 400 a page");
    assert!(
        pages
            .iter()
            .all(|p| p.json()["filter"] == "params.model = 'model-x'")
    );
}

#[tokio::test]
async fn metric_history_follows_next_page_token() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[]);
    let metrics: Vec<Metric> = (0..2_500)
        .map(|i| Metric {
            key: "loss".to_owned(),
            value: f64::from(i) / 8.0,
            timestamp: 1_700_000_000_000 + i64::from(i),
            step: i64::from(i),
        })
        .collect();
    client.log_batch(&run, &metrics, &[], &[]).await.unwrap();
    fixture.set_page_size(1_000);
    let history = client.metric_history(&run, "loss").await.unwrap();
    assert_eq!(history, metrics);
    assert_eq!(fixture.count("metrics/get-history"), 3);
    assert!(
        client
            .metric_history(&run, "other")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn non_finite_metric_values_travel_as_mlflow_spells_them() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("diverging");
    let run = fixture.seed_run(&experiment, &[], &[]);
    let client = client(&fixture, &[]);
    let metrics = [
        Metric::new("loss", f64::NAN, 1),
        Metric::new("grad", f64::INFINITY, 1),
        Metric::new("lr", f64::NEG_INFINITY, 1),
        Metric::new("ok", 0.25, 1),
    ];
    client.log_batch(&run, &metrics, &[], &[]).await.unwrap();
    // MLflow's REST API is protobuf JSON: a double that is not finite is
    // the string "NaN", "Infinity" or "-Infinity" (not null).
    let sent = fixture.requests_to("runs/log-batch")[0].json();
    let values: Vec<Value> = sent["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    assert_eq!(
        values,
        [
            json!("NaN"),
            json!("Infinity"),
            json!("-Infinity"),
            json!(0.25)
        ]
    );

    // And a server's answers holding them are read, not refused.
    let history = client.metric_history(&run, "loss").await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].value.is_nan());
    let runs = client.search_all_runs(&[&experiment], "").await.unwrap();
    let data = &runs[0].data;
    assert!(data.metric("loss").unwrap().is_nan());
    assert_eq!(data.metric("grad"), Some(f64::INFINITY));
    assert_eq!(data.metric("lr"), Some(f64::NEG_INFINITY));
    assert_eq!(data.metric("ok"), Some(0.25));
}

// ---------------------------------------------------------------------------
// 7. Secrets.

#[tokio::test]
async fn the_tracking_token_is_sent_as_bearer_and_never_shown() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[("MLFLOW_TRACKING_TOKEN", TOKEN)]);
    let shown = format!("{client:?}");
    assert!(!shown.contains(TOKEN), "{shown}");

    let metric = [Metric::new("loss", 1.0, 1)];
    client.log_batch(&run, &metric, &[], &[]).await.unwrap();
    client.get_experiment_by_name("logging").await.unwrap();
    let requests = fixture.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.endpoint
        );
    }

    // Every kind of error the server can cause.
    let no_retry = MlflowClient::new(&config(
        &fixture,
        &[
            ("MLFLOW_TRACKING_TOKEN", TOKEN),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
        ],
    ))
    .unwrap();
    let mut errors = Vec::new();
    for fault in [
        Fault::mlflow(401, "UNAUTHENTICATED", "Invalid credentials"),
        Fault::mlflow(403, "PERMISSION_DENIED", "Permission denied"),
        Fault::html(502),
        Fault::Malformed,
        Fault::Drop,
        // Gateways that echo the request's credentials in their error.
        Fault::mlflow(
            401,
            "UNAUTHENTICATED",
            &format!("Token {TOKEN} is expired (Authorization: Bearer {TOKEN})"),
        ),
        Fault::EchoAuthorization(403),
    ] {
        fixture.fail("runs/log-batch", 1, fault);
        errors.push(
            no_retry
                .log_batch(&run, &metric, &[], &[])
                .await
                .unwrap_err(),
        );
    }
    errors.push(
        no_retry
            .log_batch(&run, &[Metric::new("bad key!", 1.0, 1)], &[], &[])
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(errors[3], MlflowError::Decode { .. }),
        "{:?}",
        errors[3]
    );
    assert!(
        matches!(errors[4], MlflowError::Transport { .. }),
        "{:?}",
        errors[4]
    );
    for e in &errors {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }
    assert!(
        errors[6].to_string().contains("Bearer ***"),
        "{}",
        errors[6]
    );

    // Basic auth: neither the password nor the encoded header shows.
    let password = "pw-0c4e77ab19";
    let basic = MlflowClient::new(&config(
        &fixture,
        &[
            ("MLFLOW_TRACKING_USERNAME", "ann"),
            ("MLFLOW_TRACKING_PASSWORD", password),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
        ],
    ))
    .unwrap();
    fixture.fail("runs/log-batch", 1, Fault::EchoAuthorization(401));
    let e = basic.log_batch(&run, &metric, &[], &[]).await.unwrap_err();
    let header = fixture
        .requests()
        .last()
        .unwrap()
        .authorization
        .clone()
        .unwrap();
    let encoded = header.strip_prefix("Basic ").expect("basic auth");
    let shown = format!("{e} {e:?} {basic:?}");
    assert!(
        !shown.contains(password) && !shown.contains(encoded),
        "{shown}"
    );
}

// ---------------------------------------------------------------------------
// 8. The exporter.

struct Answer {
    accepted: Option<bool>,
    call: CallId,
}

impl ModelOutput for Answer {
    fn input_tokens(&self) -> Option<u64> {
        Some(12)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(34)
    }
    fn accepted(&self) -> Option<bool> {
        self.accepted
    }
}

#[track_model(model, task = "fixture")]
fn ask(model: &str, accepted: Option<bool>) -> Answer {
    Answer {
        accepted,
        call: current_call_id().expect("a tracked call has an id"),
    }
}

/// One exporter per process: the exporter tests run one at a time.
fn exporter_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn exporter_config(fixture: &Fixture, experiment: &str) -> MlflowConfig {
    let mut c = config(fixture, &[("MLFLOW_EXPERIMENT_NAME", experiment)]);
    c.retry.max_retries = 1;
    c.retry.timeout = Duration::from_secs(2);
    c
}

fn dropped() -> u64 {
    common::counter("hyperkit_obs_dropped_total", &[("sink", "mlflow")])
}

#[test]
fn exporter_finds_an_ambiguously_created_run_by_its_call_id_instead_of_duplicating_it() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "ambiguous")).unwrap();
    // The first create happens and answers a malformed body; the second
    // happens and answers 500.
    fixture.fail("runs/create", 1, Fault::Malformed);
    fixture.fail(
        "runs/create",
        1,
        Fault::AfterEffect {
            status: 500,
            body: error_body("INTERNAL_ERROR", "lost the answer"),
        },
    );
    let calls = [ask("model-a", Some(true)).call, ask("model-b", None).call];
    assert!(
        mlflow::flush(Duration::from_secs(20)),
        "{:?}",
        mlflow::status()
    );
    let status = mlflow::status().unwrap();
    guard.shutdown(Duration::from_secs(5));

    assert_eq!(status.delivered, 2, "{status:?}");
    assert_eq!(fixture.count("runs/create"), 2, "no create was repeated");
    let searches = fixture.requests_to("runs/search");
    for call in &calls {
        let filter = format!("tags.`{CALL_ID_TAG}` = '{call}'");
        assert!(
            searches
                .iter()
                .any(|s| s.json()["filter"] == filter.as_str()),
            "no search for {call}: {searches:?}"
        );
        let runs = fixture.runs_tagged(CALL_ID_TAG, &call.to_string());
        assert_eq!(runs.len(), 1, "call {call}: exactly one run");
        let run = &runs[0];
        assert_eq!(run.status, "FINISHED", "the found run was completed");
        assert_eq!(run.param("task"), Some("fixture"));
        assert!(run.end_time.is_some());
    }
}

#[test]
fn exporter_never_blocks_callers_when_the_server_hangs() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "hanging")).unwrap();
    // Delivered normally first, so the experiment is known.
    let _ = ask("model-a", None);
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );

    fixture.fail("*", usize::MAX / 2, Fault::Hang);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let started = Instant::now();
        let _ = ask(if i % 2 == 0 { "model-a" } else { "model-b" }, Some(true));
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(10),
        "the slowest call took {slowest:?}"
    );
    assert!(
        common::wait_until(Duration::from_secs(5), || fixture.count("runs/create") > 1),
        "the exporter tried to deliver"
    );
    let started = Instant::now();
    assert!(
        !mlflow::flush(Duration::from_millis(500)),
        "nothing can be delivered"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(900),
        "flush(500 ms) returned after {waited:?}"
    );
    assert_eq!(mlflow::status().unwrap().queued, 200);
    let before = dropped();
    let started = Instant::now();
    guard.shutdown(Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(dropped() - before, 200, "the undelivered runs are counted");
}

#[test]
fn runs_in_flight_that_fail_together_back_off_once_not_once_each() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let config = exporter_config(&fixture, "burst");
    let in_flight = config.concurrency;
    assert!(in_flight >= 4, "the default keeps several runs in flight");
    let guard = mlflow::start(&config).unwrap();
    let _ = ask("model-a", None);
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );

    // Every run in flight is refused for now, on both of its attempts.
    fixture.fail(
        "runs/create",
        2 * in_flight,
        Fault::mlflow(503, "TEMPORARILY_UNAVAILABLE", "overloaded"),
    );
    for _ in 0..in_flight {
        let _ = ask("model-a", Some(true));
    }
    // One failure's backoff (250 ms), not one doubling per run in flight
    // (which reaches the 30 s cap at 8).
    let started = Instant::now();
    assert!(
        mlflow::flush(Duration::from_secs(5)),
        "{:?}",
        mlflow::status()
    );
    let took = started.elapsed();
    let status = mlflow::status().unwrap();
    guard.shutdown(Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "delivered after {took:?}");
    assert_eq!(
        (status.delivered, status.rejected),
        (1 + in_flight as u64, 0),
        "{status:?}"
    );
    assert_eq!(
        fixture.count("runs/create"),
        1 + 3 * in_flight,
        "two refused attempts and one accepted per run"
    );
}

#[test]
fn exporter_drops_a_refused_run_once_without_retrying_and_marks_it_failed() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "refused")).unwrap();
    let before = dropped();
    fixture.fail(
        "runs/log-batch",
        1,
        Fault::mlflow(
            400,
            "INVALID_PARAMETER_VALUE",
            "Changing param values is not allowed",
        ),
    );
    let call = ask("model-a", Some(false)).call;
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    let status = mlflow::status().unwrap();
    assert_eq!(
        (status.rejected, status.delivered, status.queued),
        (1, 0, 0),
        "{status:?}"
    );
    assert_eq!(dropped() - before, 1, "counted once");
    assert_eq!(fixture.count("runs/create"), 1);
    assert_eq!(fixture.count("runs/log-batch"), 1, "not retried");
    let updates = fixture.requests_to("runs/update");
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(
        updates[0].json()["status"],
        "FAILED",
        "ended FAILED, as Python ends a run whose logging raised"
    );

    // A later call is delivered as usual, and the refused one is still not
    // retried.
    let _ = ask("model-a", Some(true));
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(5));
    assert_eq!(fixture.count("runs/create"), 2);
    assert_eq!(fixture.count("runs/log-batch"), 2);
    assert_eq!(dropped() - before, 1);
    let refused = fixture.runs_tagged(CALL_ID_TAG, &call.to_string());
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].status, "FAILED", "MLflow refused its metrics");
    assert!(refused[0].end_time.is_some(), "and it has ended");
}

#[test]
fn exporter_logs_a_late_acceptance_to_the_delivered_run() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "late")).unwrap();
    let call = ask("model-a", None).call;
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    let runs = fixture.runs_tagged(CALL_ID_TAG, &call.to_string());
    assert_eq!(runs.len(), 1);
    let run_id = runs[0].run_id.clone();
    assert!(
        runs[0].metrics.iter().all(|m| m["key"] != "accepted"),
        "undecided at return"
    );
    let before = fixture.count("runs/log-batch");

    record_acceptance(call, true);
    assert!(
        common::wait_until(Duration::from_secs(10), || fixture.count("runs/log-batch")
            > before),
        "the acceptance was sent"
    );
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(5));

    let sent = fixture.requests_to("runs/log-batch")[before..].to_vec();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let body = sent[0].json();
    assert_eq!(body["run_id"], run_id.as_str());
    let metrics = body["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["key"], "accepted");
    assert_eq!(metrics[0]["value"], 1.0);
    let history = fixture.runs_tagged(CALL_ID_TAG, &call.to_string())[0]
        .metrics
        .iter()
        .filter(|m| m["key"] == "accepted")
        .count();
    assert_eq!(history, 1);
    assert_eq!(fixture.runs_tagged(CALL_ID_TAG, &call.to_string()).len(), 1);
}

#[test]
fn exporter_shutdown_keeps_its_deadline_while_the_experiment_lookup_hangs() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    fixture.fail("*", usize::MAX / 2, Fault::Hang);
    let mut config = exporter_config(&fixture, "unreachable");
    config.retry.timeout = Duration::from_secs(10);
    let guard = mlflow::start(&config).unwrap();
    let before = dropped();
    for _ in 0..5 {
        let _ = ask("model-a", None);
    }
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            fixture.count("experiments/get-by-name") > 0
        }),
        "the exporter looked the experiment up"
    );
    assert!(!mlflow::flush(Duration::from_millis(200)));
    let started = Instant::now();
    guard.shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "shutdown(300 ms) took {took:?}"
    );
    assert_eq!(
        dropped() - before,
        5,
        "the undelivered runs are counted at shutdown"
    );

    // The exporter really stopped: a new one can start at once.
    let other = Fixture::start();
    let guard = mlflow::start(&exporter_config(&other, "after")).expect("a new exporter starts");
    let _ = ask("model-a", None);
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(5));
    assert_eq!(other.count("runs/create"), 1);
}

#[test]
fn the_exporter_guard_can_be_kept_in_a_static() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<mlflow::MlflowGuard>();
    send_and_sync::<hyperkit_obs::ObsGuard>();
}
