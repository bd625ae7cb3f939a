//! The MLflow test harness (`test_support::mlflow`) does what other tests rely on:
//! a SQLite-backed `mlflow server` is ready when `start` returns, keeps its
//! port and database across `restart`, and `stop` leaves no process of its
//! group behind and the port closed.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use test_support::mlflow::{Backend, MlflowServer, Version, python, read_runs, serial};

const WRITE_RUN_PY: &str = r#"
import json, os
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=os.environ["TRACKING_URI"])
experiment = client.get_experiment_by_name("harness")
experiment_id = experiment.experiment_id if experiment else client.create_experiment("harness")
run = client.create_run(experiment_id, run_name="before restart")
client.log_metric(run.info.run_id, "m", 1.5)
client.set_terminated(run.info.run_id)
print(json.dumps({"run_id": run.info.run_id}))
"#;

/// Whether anything in process group `group` is still alive.
fn group_alive(group: u32) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // Fields after the command: state, ppid, pgrp.
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.get(2) == Some(&group.to_string().as_str()) && fields[0] != "Z"
            })
        })
}

#[test]
fn a_sqlite_server_restarts_on_its_port_with_its_data_and_stops_entirely() {
    let _turn = serial();
    let mut server = MlflowServer::start(Version::V3, Backend::Sqlite);
    let url = server.url();
    let wrote = python(Version::V3, WRITE_RUN_PY, &[("TRACKING_URI", &url)]);
    let run_id = wrote["run_id"].as_str().unwrap().to_owned();

    let first_group = server.pid().unwrap();
    server.restart();
    assert_eq!(server.url(), url, "restart keeps the port");
    assert!(
        !group_alive(first_group),
        "the first server's group is gone"
    );
    let runs = read_runs(Version::V3, &url, "harness");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["run_name"], "before restart");
    assert_eq!(runs[0]["metrics"]["m"], 1.5);
    assert_eq!(runs[0]["status"], "FINISHED");

    let group = server.pid().unwrap();
    assert!(group_alive(group));
    server.stop();
    assert!(!server.is_running());
    assert!(
        !group_alive(group),
        "no process of the server's group is left"
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "nothing listens on {addr} any more"
    );
}
