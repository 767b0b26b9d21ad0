// bcci-gateway's monitoring mixin: the configuration, the alerts, and each
// alert's runbook_url (config.libsonnet's runbookURLPattern, filled with the
// alert's name in lower case, as kubernetes-mixin's add-runbook-links does).
local withRunbooks = {
  prometheusAlerts+:: {
    groups: [
      group {
        rules: [
          rule + (
            if std.objectHas(rule, 'alert') then
              { annotations+: { runbook_url: $._config.runbookURLPattern % std.asciiLower(rule.alert) } }
            else {}
          )
          for rule in group.rules
        ],
      }
      for group in super.groups
    ],
  },
};

(import 'config.libsonnet') + (import 'alerts.libsonnet') + withRunbooks + {
  assert std.length($._config.selector) > 0 : 'config: selector must not be empty (it goes between {} of every query)',
  assert std.startsWith($._config.runbookURLPattern, 'https://') || std.startsWith($._config.runbookURLPattern, 'http://')
         : 'config: runbookURLPattern must be an absolute http(s) URL',
  assert std.length(std.findSubstr('%s', $._config.runbookURLPattern)) == 1
         : 'config: runbookURLPattern must hold one %s (the anchor)',
}
