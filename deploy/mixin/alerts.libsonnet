// The alert rules of bcci-gateway. Every query takes its selector from
// config.libsonnet (%(selector)s); mixin.libsonnet adds each alert's
// runbook_url. generate.sh writes them to deploy/prometheus/alerts.yml and
// deploy/kubernetes/prometheusrule.yaml.
//
// Every gauge that describes the whole store (bcci_queue_*, bcci_dead_letters,
// bcci_handoffs, bcci_cod_unsettled) is exported by every gateway process, so
// the rules aggregate with max(), never sum(). Process-local gauges (circuit
// breaker, last carrier event, office hours, calendar) are aggregated with
// max() as well.
//
// severity: critical = act now (page); warning = act within working hours.
{
  prometheusAlerts+:: {
    local c = $._config,
    groups+: [
      {
        name: 'bcci-gateway',
        rules: [
          {
            alert: 'BcciGatewayDown',
            expr: 'up{%(selector)s} == 0' % c,
            'for': '2m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'bcci-gateway {{ $labels.instance }} is down',
              description: 'Prometheus could not scrape {{ $labels.instance }} for 2 minutes: no intake, no webhooks, no dispatch to Vietnam Post on that process.',
            },
          },
          {
            alert: 'BcciGatewayAbsent',
            expr: 'absent(up{%(selector)s})' % c,
            'for': '10m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'No bcci-gateway target is scraped',
              description: 'Prometheus has had no target with %(selector)s for 10 minutes: the gateway is not deployed, or service discovery lost it.' % c,
            },
          },
          {
            alert: 'BcciIntakeErrors',
            // 5xx are the gateway's own failures (503 while the store is
            // down or the process drains, 500 on a panic); 4xx are the
            // callers' and are not counted. No traffic gives no ratio (NaN),
            // which never fires.
            expr: |||
              (
                sum(rate(bcci_http_requests_total{%(selector)s, %(intakeSelector)s, status=~"5.."}[5m]))
                /
                sum(rate(bcci_http_requests_total{%(selector)s, %(intakeSelector)s}[5m]))
              ) > %(intakeErrorRatio)g
            ||| % c,
            'for': '10m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Intake requests fail with 5xx',
              description: '{{ $value | humanizePercentage }} of the intake API answers were 5xx over 5 minutes, for 10 minutes: intake systems cannot hand dossiers over (they retry).',
            },
          },
          {
            alert: 'BcciIntakeSlow',
            expr: |||
              histogram_quantile(0.99,
                sum by (le, route) (rate(bcci_http_request_duration_seconds_bucket{%(selector)s, %(intakeSelector)s}[5m]))
              ) > %(intakeP99Seconds)g
            ||| % c,
            'for': '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Intake route {{ $labels.route }} answers slowly',
              description: 'The 99th percentile of {{ $labels.route }} answers took {{ $value | humanizeDuration }} over 5 minutes, for 15 minutes (threshold %(intakeP99Seconds)g s): the store is slow or the process is overloaded.' % c,
            },
          },
          {
            alert: 'BcciPostalQueueStalled',
            expr: 'max(bcci_queue_oldest_age_seconds{%(selector)s, queue="postal"}) > 900' % c,
            'for': '10m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Postal jobs have waited more than 15 minutes',
              description: 'The oldest pending postal job is {{ $value | humanizeDuration }} old: orders (pickups, returns) or cancels are not reaching Vietnam Post.',
            },
          },
          {
            alert: 'BcciPostalCircuitOpen',
            // The breaker closes again only on the next answered call: with
            // no postal work pending it may read 1 after Vietnam Post
            // recovered, so the rule also asks for pending postal jobs.
            expr: 'max(bcci_circuit_open{%(selector)s, upstream="postal"}) == 1 and on () max(bcci_queue_depth{%(selector)s, queue="postal"}) > 0' % c,
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Circuit breaker to Vietnam Post open for 5 minutes',
              description: 'Calls to Vietnam Post keep failing (timeouts, connection errors, 5xx); the gateway is probing every 30 s and will resume by itself.',
            },
          },
          {
            alert: 'BcciPostalDeadLetters',
            expr: 'max(bcci_dead_letters{%(selector)s, queue="postal"}) > 0' % c,
            'for': '1m',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $value }} postal job(s) ran out of retries',
              description: 'Postal jobs are dead (retry deadline passed): their handoffs are failed, or a cancel was not done. An operator must act.',
            },
          },
          {
            alert: 'BcciDuplicateOrder',
            expr: 'sum(increase(bcci_duplicate_orders_total{%(selector)s}[1h])) > 0' % c,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'A second Vietnam Post order was found for a handoff',
              description: "The gateway found more than one Vietnam Post order for one handoff and is cancelling the extra one(s). A postal worker may knock on a citizen's door twice: check that the cancel went through.",
            },
          },
          {
            alert: 'BcciCodUnsettled',
            expr: 'max(bcci_cod_unsettled{%(selector)s}) > 0' % c,
            'for': '1h',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $value }} delivered COD return(s) not reported paid by Vietnam Post',
              description: 'Vietnam Post delivered these returns more than postal.cod_settle_days ago and has not reported the COD paid (code 21): the fees collected from citizens may not have reached the agency.',
            },
          },
          {
            alert: 'BcciCallbackDeadLetters',
            expr: 'max(bcci_dead_letters{%(selector)s, queue="callback"}) > 0' % c,
            'for': '1m',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $value }} callback(s) to intake systems are dead',
              description: 'Callbacks passed their retry deadline; the later callbacks of the same handoffs are held behind them until an operator replays them.',
            },
          },
          {
            alert: 'BcciCallbacksFailing',
            // Every attempt counts once: delivered, or failed as retry,
            // rejected_4xx (a 4xx answer, retried too) or dead (the last).
            expr: |||
              (
                sum by (client) (rate(bcci_callbacks_total{%(selector)s, outcome=~"retry|rejected_4xx|dead"}[15m]))
                /
                sum by (client) (rate(bcci_callbacks_total{%(selector)s, outcome=~"delivered|retry|rejected_4xx|dead"}[15m]))
              ) > 0.5
            ||| % c,
            'for': '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Most callback attempts to {{ $labels.client }} fail',
              description: '{{ $value | humanizePercentage }} of callback attempts to {{ $labels.client }} failed over 15 minutes: the intake system is down, slow or unreachable.',
            },
          },
          {
            alert: 'BcciCallbacksStalled',
            // Attempts at one client, none delivered. The window is longer
            // than retry.max_ms (1 h), so a pending callback is attempted at
            // least once in it. A client whose delivered series is missing
            // counts as delivering nothing.
            expr: |||
              (sum by (client) (increase(bcci_callbacks_total{%(selector)s, outcome=~"retry|rejected_4xx|dead"}[%(callbackStallWindow)s])) > 0)
              unless on (client)
              (sum by (client) (increase(bcci_callbacks_total{%(selector)s, outcome="delivered"}[%(callbackStallWindow)s])) > 0)
            ||| % c,
            'for': '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Callbacks to {{ $labels.client }} are stalled',
              description: 'Callbacks to {{ $labels.client }} were attempted and none was delivered for %(callbackStallWindow)s: the intake system hears of no status change; its callbacks wait and will die at retry.deadline_s.' % c,
            },
          },
          {
            alert: 'BcciCallbacksRejected',
            expr: 'sum by (client) (rate(bcci_callbacks_total{%(selector)s, outcome="rejected_4xx"}[15m])) > 0' % c,
            'for': '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.client }} answers callbacks with 4xx',
              description: 'Callbacks to {{ $labels.client }} are refused with 400-499 (not 408/429) for 15 minutes: usually a signature the intake system does not accept (callback secret rotation) or a changed callback URL.',
            },
          },
          {
            alert: 'BcciSlaBreached',
            // increase() cannot see a counter's first increment when the
            // series is born with it; the second arm catches series that did
            // not exist an hour ago.
            expr: |||
              (sum by (kind) (increase(bcci_sla_breaches_total{%(selector)s}[1h])) > 0)
              or
              (sum by (kind) (bcci_sla_breaches_total{%(selector)s} unless bcci_sla_breaches_total{%(selector)s} offset 1h) > 0)
            ||| % c,
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.kind }} handoffs missed their legal delivery time',
              description: 'About {{ $value | printf "%.0f" }} {{ $labels.kind }} handoff(s) passed sla_due_at (J+n working days, Thông tư 17/2017/TT-BTTTT) without being delivered in the last hour.',
            },
          },
          {
            alert: 'BcciNoCarrierEvents',
            // Three whole office hours (min over 3 h of bcci_office_open)
            // without any status report from Vietnam Post while orders are
            // open. max_over_time keeps the last event time across a restart.
            expr: |||
              (time() - max(max_over_time(bcci_last_carrier_event_timestamp_seconds{%(selector)s}[1d]))) > 3 * 3600
              and on () max(min_over_time(bcci_office_open{%(selector)s}[3h])) == 1
              and on () max(sum by (instance) (bcci_handoffs{%(selector)s, status=~"order_created|picking_up|pickup_attempt_failed|picked_up|in_transit|out_for_delivery|delivery_attempt_failed|returning"})) > 0
            ||| % c,
            'for': '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'No status report from Vietnam Post for over 3 working hours',
              description: 'The last webhook or poll result from Vietnam Post was {{ $value | humanizeDuration }} ago, during working hours, with orders open: webhooks may be failing.',
            },
          },
          {
            alert: 'BcciCalendarEnding',
            expr: 'max(bcci_calendar_last_day_timestamp_seconds{%(selector)s}) - time() < 60 * 86400' % c,
            'for': '1h',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The decreed holiday swaps end within 60 days',
              description: '[calendar] names decreed days for {{ $value | humanizeDuration }} more: add next year\'s decreed days off and make-up working days, if any, or SLA due dates will follow the statute alone.',
            },
          },
        ],
      },
    ],
  },
}
