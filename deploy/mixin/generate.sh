#!/usr/bin/env bash
# Writes the files generated from the monitoring mixin (deploy/mixin):
#   deploy/prometheus/alerts.yml           the alert rules
#   deploy/kubernetes/prometheusrule.yaml  the same rules as a PrometheusRule
#   deploy/kubernetes/grafana-dashboard.yaml
#                                          deploy/grafana/bcci-gateway.json as
#                                          a ConfigMap for Grafana's sidecar
#
# Usage: deploy/mixin/generate.sh [-c CONFIG.libsonnet] [OUTDIR]
#   -c FILE  a Jsonnet object merged into config.libsonnet's _config, e.g.
#            { selector: 'job="gw", namespace="prod"',
#              runbookURLPattern: 'https://wiki.example.org/bcci#%s' }
#   OUTDIR   where to write (default: deploy/ of this repository); the
#            files go to OUTDIR/prometheus/ and OUTDIR/kubernetes/.
# Needs jsonnet (Debian: apt-get install jsonnet).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config=()
while getopts c: opt; do
  case "$opt" in
    c) config=(--tla-code-file "config=$(realpath "$OPTARG")") ;;
    *) echo "usage: $0 [-c CONFIG.libsonnet] [OUTDIR]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
out="${1:-$here/..}"
mkdir -p "$out/prometheus" "$out/kubernetes"
jsonnet -S "${config[@]}" -m "$out" "$here/build.jsonnet" >/dev/null
