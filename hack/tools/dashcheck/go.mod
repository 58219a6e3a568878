// Checks the Grafana dashboards in dashboards/ against Grafana's dashboard model
// (Grafana Foundation SDK, Apache-2.0) and the rules the Verbund dashboards follow.
module verbund.saarland.de/hack/tools/dashcheck

go 1.26.0

require github.com/grafana/grafana-foundation-sdk/go v0.0.22
