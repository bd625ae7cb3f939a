#!/usr/bin/env bash
# Runs the Debian/PyPI builds of Prometheus, Alertmanager, Pushgateway and
# MLflow on 127.0.0.1 with the repository's own config files, for people
# without Docker. Stop them with stop.sh.
#
#   apt-get install -y --no-install-recommends prometheus prometheus-alertmanager prometheus-pushgateway
#   python3 -m venv ~/.cache/hyperkit-obs/mlflow-venv && ~/.cache/hyperkit-obs/mlflow-venv/bin/pip install mlflow==3.17.2
#   infrastructure/local/start.sh
#
# Ports: Prometheus 9090, Alertmanager 9093, Pushgateway 9091, MLflow 5000.
# State lives in $HYPERKIT_LOCAL_DIR (default ~/.cache/hyperkit-obs/local).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
state="${HYPERKIT_LOCAL_DIR:-$HOME/.cache/hyperkit-obs/local}"
venv="${HYPERKIT_MLFLOW_VENV:-$HOME/.cache/hyperkit-obs/mlflow-venv}"
mkdir -p "$state"/{prometheus,alertmanager,mlflow,logs,pids}

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "missing $1: apt-get install -y --no-install-recommends $2" >&2
    exit 1
  }
}
need prometheus prometheus
need prometheus-alertmanager prometheus-alertmanager
need prometheus-pushgateway prometheus-pushgateway

# Prometheus reads targets/ next to its config: link the local targets.
conf="$state/prometheus/conf"
mkdir -p "$conf"
for f in prometheus.yml thresholds.yml recording.yml alerts.yml; do
  ln -sf "$here/prometheus/$f" "$conf/$f"
done
ln -sfn "$here/prometheus/targets/local" "$conf/targets"

start() {
  local name=$1
  shift
  if [ -f "$state/pids/$name" ] && kill -0 "$(cat "$state/pids/$name")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$state/pids/$name"))"
    return
  fi
  nohup "$@" >"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/pids/$name"
  echo "$name started (pid $!, log $state/logs/$name.log)"
}

start prometheus prometheus \
  --config.file="$conf/prometheus.yml" \
  --storage.tsdb.path="$state/prometheus/data" \
  --web.listen-address=127.0.0.1:9090 \
  --web.enable-lifecycle
start alertmanager prometheus-alertmanager \
  --config.file="$here/alertmanager/alertmanager.yml" \
  --storage.path="$state/alertmanager" \
  --web.listen-address=127.0.0.1:9093 \
  --cluster.listen-address=
start pushgateway prometheus-pushgateway --web.listen-address=127.0.0.1:9091
if [ -x "$venv/bin/mlflow" ]; then
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false start mlflow "$venv/bin/mlflow" server \
    --backend-store-uri "sqlite:///$state/mlflow/mlflow.db" \
    --artifacts-destination "$state/mlflow/artifacts" \
    --host 127.0.0.1 --port 5000 --workers 1
else
  echo "MLflow not started: create $venv with mlflow==3.17.2 (see the top of this script)"
fi
echo "Prometheus http://127.0.0.1:9090  Alertmanager http://127.0.0.1:9093  Pushgateway http://127.0.0.1:9091  MLflow http://127.0.0.1:5000"
