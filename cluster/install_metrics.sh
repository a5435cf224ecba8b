#!/usr/bin/env bash
# Prometheus and Grafana for the dashboards, installed on the cluster's head by cluster.yaml
# (head_setup_commands): `bash ~/vidgan/cluster/install_metrics.sh ~/metrics`.
#
# Pinned releases, each checked against its pinned sha256 before it is unpacked. It fails closed:
# while a sum below is not a 64-digit hex string, or a download does not match it, nothing is
# installed and the command (so `ray up`) fails, naming the variable to set.
#
# The sums are NOT filled in: they could not be checked against the publishers' own files when this
# was written. Copy each from its publisher, for exactly these versions:
#   PROMETHEUS_SHA256: the prometheus-2.53.2.linux-amd64.tar.gz line of
#     https://github.com/prometheus/prometheus/releases/download/v2.53.2/sha256sums.txt
#   GRAFANA_SHA256: https://dl.grafana.com/oss/release/grafana-11.2.0.linux-amd64.tar.gz.sha256
#     (also on https://grafana.com/grafana/download/11.2.0?edition=oss&platform=linux)
set -euo pipefail

PROMETHEUS_VERSION=2.53.2
PROMETHEUS_SHA256=${PROMETHEUS_SHA256:-CHANGE-ME-prometheus-2.53.2-linux-amd64-sha256}
GRAFANA_VERSION=11.2.0
GRAFANA_SHA256=${GRAFANA_SHA256:-CHANGE-ME-grafana-11.2.0-linux-amd64-sha256}

dest=${1:-$HOME/metrics}
mkdir -p "$dest"
cd "$dest"

# fetch URL FILE SUM_VARIABLE: download URL to FILE and check it against the sum in SUM_VARIABLE.
fetch() {
  local url=$1 file=$2 var=$3
  local sum=${!var}
  if [[ ! $sum =~ ^[0-9a-f]{64}$ ]]; then
    echo "error: $var is not set to the published sha256 of $file: fill it in in" \
      "cluster/install_metrics.sh (nothing was downloaded or installed)" >&2
    exit 1
  fi
  rm -f "$file"
  wget -q -O "$file" "$url"
  if ! echo "$sum  $file" | sha256sum -c --quiet -; then
    rm -f "$file"
    echo "error: $file does not match $var; nothing installed" >&2
    exit 1
  fi
}

# install NAME BINARY URL FILE SUM_VARIABLE UNPACKED_DIR: fetch, check, unpack to $dest/NAME.
install() {
  local name=$1 binary=$2 url=$3 file=$4 var=$5 unpacked=$6
  if [[ -x $name/$binary ]]; then
    echo "$name: already installed"
    return
  fi
  fetch "$url" "$file" "$var"
  rm -rf "$unpacked" "$name"
  tar xzf "$file"
  mv "$unpacked" "$name"
  rm -f "$file"
  echo "$name: installed from $file (sha256 checked)"
}

prom=prometheus-$PROMETHEUS_VERSION.linux-amd64
install prometheus prometheus \
  "https://github.com/prometheus/prometheus/releases/download/v$PROMETHEUS_VERSION/$prom.tar.gz" \
  "$prom.tar.gz" PROMETHEUS_SHA256 "$prom"

graf=grafana-$GRAFANA_VERSION.linux-amd64
install grafana bin/grafana \
  "https://dl.grafana.com/oss/release/$graf.tar.gz" \
  "$graf.tar.gz" GRAFANA_SHA256 "grafana-v$GRAFANA_VERSION"
