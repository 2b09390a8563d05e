#!/usr/bin/env bash
# Checks the chart as users get it: `helm lint --strict` with its default values
# and with every optional feature on, and kubeconform (strict: unknown fields
# are errors) over what `helm template` renders for both and over the example
# MarketGroups in docs/examples, against the schemas of the pinned Kubernetes
# version and of the chart's own CRD (made offline by schemas.py).
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=../testenv/lib/k8s.sh
source "$TESTENV_DIR/lib/k8s.sh"
# shellcheck source=lib/tools.sh
source "$KIND_DIR/lib/tools.sh"
# shellcheck source=../testenv/lib/promtool.sh
source "$TESTENV_DIR/lib/promtool.sh"

chart="$REPO_ROOT/charts/prapi-operator"
crd="$chart/files/marketgroup.yaml"
if ! python3 -c 'import yaml' 2>/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null
fi
mkdir -p "$CACHE_DIR"
exec {install_lock}>"$CACHE_DIR/.install.lock"
flock "$install_lock"
install_k8s
install_tools kubeconform routegroup-check
install_promtool
flock -u "$install_lock"

swagger="$(cd "$TESTENV_DIR/k8s" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/api/openapi-spec/swagger.json"
[[ -f $swagger ]] || die "no swagger.json in the k8s.io/kubernetes $K8S_VERSION module"
schemas="$CACHE_DIR/kind-tools/schemas-$(inputs_hash "$swagger" "$crd" "$KIND_DIR/schemas.py")"
if [[ ! -f $schemas/.done ]]; then
    rm -rf "$schemas"
    python3 "$KIND_DIR/schemas.py" "$swagger" "$schemas" --crd "$crd" >/dev/null
    touch "$schemas/.done"
fi

# Every optional part on: what the default values leave out is checked too.
all_on=(
    --set crds.keep=false --set routing.provider=gateway-api --set routing.gateway=infra/public
    --set routing.backendTrafficPolicy=on
    --set store=aws --set 'watchNamespaces={shop,shop-staging,shop}' --set priorityClassName=system-cluster-critical
    --set 'imagePullSecrets[0].name=registry' --set podLabels.team=platform
    --set-string 'dataPlane.env[0].name=AWS_REGION,dataPlane.env[0].value=eu-central-1'
    --set-string 'dataPlane.env[1].name=AWS_ENDPOINT_URL_DYNAMODB,dataPlane.env[1].value=http://dynamodb:8000'
    --set 'awsEnv[0].name=AWS_REGION' --set 'awsEnv[0].value=eu-central-1'
    --set 'extraEnv[0].name=HTTPS_PROXY' --set 'extraEnv[0].value=http://proxy:3128'
    --set metrics.serviceMonitor.enabled=true --set serviceAccount.annotations.role=arn
    --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true
    --set externalMetrics.certificate.source=cert-manager
)
helm=("$K8S_BIN/helm")
kubeconform=("$KIND_TOOLS/bin/kubeconform" -strict -summary -output text
    -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    # The Prometheus Operator's and cert-manager's CRDs are not part of this environment.
    -skip ServiceMonitor,PrometheusRule,Certificate,Issuer)
status=0
for values in defaults all-on; do
    args=()
    [[ $values == defaults ]] || args=("${all_on[@]}")
    echo "== helm lint --strict ($values)"
    "${helm[@]}" lint --strict "$chart" "${args[@]}" || status=1
    echo "== kubeconform: helm template ($values)"
    "${helm[@]}" template prapi-operator "$chart" --namespace prapi-system "${args[@]}" |
        "${kubeconform[@]}" - || status=1
done
# The operator's RouteGroups (as rendered for the routing fixture; a render test keeps the file
# in step) pass Skipper's own RouteGroup validator, which creates every filter from Skipper's
# registry: Skipper drops a route with a filter it does not know or with wrong arguments. The
# same check must refuse a route with a bad filter.
route_groups="$REPO_ROOT/operator/tests/fixtures/routing/two-groups.routegroups.json"
echo "== routegroup-check (Skipper $SKIPPER_VERSION)"
"$KIND_TOOLS/bin/routegroup-check" <"$route_groups" || status=1
if python3 -c 'import json, sys; l = json.load(open(sys.argv[1])); l["items"][0]["spec"]["routes"][0]["filters"].append("fadeIn(\"30s\", 2.5, 1)"); json.dump(l, sys.stdout)' "$route_groups" |
    "$KIND_TOOLS/bin/routegroup-check" 2>/dev/null; then
    echo "routegroup-check accepted a fadeIn with three arguments" >&2
    status=1
fi
# The alerting rules: valid, and each alert fires on the series of its unit test and stays
# quiet on the others (e2e/testenv/promtool/rules.test.yaml).
rules="$chart/files/prometheus-rules.yaml"
echo "== promtool check rules"
"$PROMTOOL" check rules "$rules" || status=1
echo "== promtool test rules"
"$PROMTOOL" test rules "$TESTENV_DIR/promtool/rules.test.yaml" || status=1
# The chart installs exactly those rules.
"${helm[@]}" template x "$chart" --set metrics.prometheusRule.enabled=true --show-only templates/prometheusrule.yaml |
    python3 -c 'import sys, yaml; rendered = yaml.safe_load(sys.stdin)["spec"]["groups"]; file = yaml.safe_load(open(sys.argv[1]))["groups"]; sys.exit(0 if rendered == file else "the PrometheusRule differs from " + sys.argv[1])' "$rules" || status=1
# The dashboard ConfigMap holds the dashboard of docs/ as it is.
"${helm[@]}" template x "$chart" --set metrics.grafanaDashboard.enabled=true --show-only templates/grafana-dashboard.yaml |
    python3 -c 'import json, sys, yaml; cm = json.loads(yaml.safe_load(sys.stdin)["data"]["prapi.json"]); sys.exit(0 if cm == json.load(open(sys.argv[1])) else "the dashboard ConfigMap differs from " + sys.argv[1])' "$REPO_ROOT/docs/grafana-dashboard.json" || status=1
# The operator's ServiceMonitor scrapes its metrics Service: the selector matches the Service's
# labels, the endpoint names a port of the Service, and that port reaches the container's port.
echo "== ServiceMonitor of the operator"
"${helm[@]}" template x "$chart" --namespace prapi-system --set metrics.serviceMonitor.enabled=true --set metrics.serviceMonitor.interval=15s |
    python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
sm = [d for d in docs if d["kind"] == "ServiceMonitor"]
svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "x-prapi-operator-metrics"]
dep = [d for d in docs if d["kind"] == "Deployment"]
if len(sm) != 1 or len(svc) != 1 or len(dep) != 1:
    sys.exit(f"want one ServiceMonitor, metrics Service and Deployment, got {len(sm)}, {len(svc)}, {len(dep)}")
sm, svc, dep = sm[0], svc[0], dep[0]
labels = svc["metadata"]["labels"]
if any(labels.get(k) != v for k, v in sm["spec"]["selector"]["matchLabels"].items()):
    sys.exit("the ServiceMonitor selects no metrics Service")
if sm["metadata"]["namespace"] != svc["metadata"]["namespace"]:
    sys.exit("the ServiceMonitor is not in the namespace of the metrics Service")
(ep,) = sm["spec"]["endpoints"]
ports = {p["name"]: p for p in svc["spec"]["ports"]}
if ep["port"] not in ports or ep["path"] != "/metrics" or ep["interval"] != "15s" or ep.get("honorLabels") is not True:
    sys.exit(f"unexpected endpoint {ep}")
container_ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
if ports[ep["port"]]["targetPort"] not in container_ports:
    sys.exit("the metrics Service port reaches no container port")
' || status=1
# Off by default, and never without the Service it scrapes.
for sets in "" "--set metrics.serviceMonitor.enabled=true --set metrics.service.enabled=false"; do
    # shellcheck disable=SC2086
    if "${helm[@]}" template x "$chart" $sets | grep '^kind: ServiceMonitor' >/dev/null; then
        echo "a ServiceMonitor rendered with: ${sets:-the defaults}" >&2
        status=1
    fi
done
# The PodMonitor switch reaches the operator.
"${helm[@]}" template x "$chart" --set metrics.podMonitor=off |
    grep 'name: PRAPI_POD_MONITOR, value: "off"' >/dev/null || { echo "metrics.podMonitor=off not passed to the operator" >&2; status=1; }
if "${helm[@]}" template x "$chart" --set metrics.podMonitor=maybe >/dev/null 2>&1; then
    echo "values.schema.json accepted metrics.podMonitor=maybe" >&2
    status=1
fi
echo "== kubeconform: docs/examples"
"${kubeconform[@]}" "$REPO_ROOT"/docs/examples/*.yaml || status=1
# The checks can fail: an unknown field in a Deployment and in a MarketGroup, and a
# MarketGroup breaking its CRD's schema, are each refused.
for bad in \
    'apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec: {replicass: 1, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}}' \
    'apiVersion: prapi.dev/v1alpha1
kind: MarketGroup
metadata: {name: x}
spec: {countries: [de], bogus: 1}' \
    'apiVersion: prapi.dev/v1alpha1
kind: MarketGroup
metadata: {name: x}
spec: {countries: [de], traffic: {weight: "ninety"}}'; do
    if "${kubeconform[@]}" - <<<"$bad" >/dev/null 2>&1; then
        echo "kubeconform accepted an invalid manifest:" >&2
        echo "$bad" >&2
        status=1
    fi
done
# A value the schema refuses must fail the install, with the schema's message.
if "${helm[@]}" template x "$chart" --set routing.provider=istio >/dev/null 2>&1; then
    echo "values.schema.json accepted routing.provider=istio" >&2
    status=1
fi
if "${helm[@]}" template x "$chart" --set-string 'dataPlane.env[0].name=PRAPI_LISTEN,dataPlane.env[0].value=x' >/dev/null 2>&1; then
    echo "values.schema.json accepted a PRAPI_ name in dataPlane.env" >&2
    status=1
fi
exit "$status"
