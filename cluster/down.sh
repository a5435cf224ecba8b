#!/usr/bin/env bash
# Tear the cluster down without losing the MLflow run history:
#
#     cluster/down.sh [cluster.yaml]
#
# `ray down` deletes the head's disk, where MLflow keeps its SQLite databases, and Ray has no hook
# that runs before it. So this backs them up to S3 first (cluster/mlflow_db.py backup, to
# $VIDGAN_MLFLOW_BACKUP set by cluster.yaml) and runs `ray down` only when that succeeded; the next
# head restores them at start. Nothing is torn down when the backup fails: fix it, or run
# `ray down` yourself if you mean to lose the history since the last periodic backup (15 min).
set -euo pipefail
config=${1:-cluster.yaml}
ray exec "$config" 'python ~/vidgan/cluster/mlflow_db.py backup'
ray down -y "$config"
