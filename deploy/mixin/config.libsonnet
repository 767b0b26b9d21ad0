// The one place the alert rules take their selectors and settings from
// (the kubernetes-mixin style). Override any of these in your own file and
// pass it to generate.sh -c (docs/operations.md, "Deploy kit").
{
  _config+:: {
    // Inserted between {} in every query of the rules: which series are the
    // gateway's. The ServiceMonitor and scrape.yml give job="bcci-gateway".
    selector: 'job="bcci-gateway"',

    // Where an alert's runbook lives: %s is the alert's name in lower case,
    // the anchor of its heading in docs/operations.md. Must be absolute.
    runbookURLPattern: 'https://github.com/bcci-gateway/bcci-gateway/blob/main/docs/operations.md#%s',

    // The intake API: the main listener's /v1/handoffs routes (route
    // templates, as bcci_http_requests_total labels them).
    intakeSelector: 'listener="main", route=~"/v1/handoffs.*"',
    // BcciIntakeErrors: share of intake answers that are 5xx.
    intakeErrorRatio: 0.05,
    // BcciIntakeSlow: the p99 of an intake route, in seconds (a bucket
    // boundary of bcci_http_request_duration_seconds keeps it exact).
    intakeP99Seconds: 1,
    // BcciCallbacksStalled: how long a client may see failed attempts and no
    // delivery at all.
    callbackStallWindow: '1h',

    // The Kubernetes objects generated beside the plain files.
    kubernetes: {
      labels: {
        'app.kubernetes.io/name': 'bcci-gateway',
        'app.kubernetes.io/instance': 'bcci-gateway',
      },
      // Labels the Prometheus Operator's ruleSelector looks for, if any
      // (kube-prometheus-stack: release: <its release name>).
      prometheusRuleLabels: {},
      prometheusRuleName: 'bcci-gateway',
      dashboardConfigMapName: 'bcci-gateway-dashboard',
      // The Grafana sidecar (kube-prometheus-stack, grafana chart) loads
      // every ConfigMap carrying this label.
      dashboardLabels: { grafana_dashboard: '1' },
    },
  },
}
