{{- define "prapi-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "prapi-operator.serviceAccountName" -}}
{{- default (include "prapi-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "prapi-operator.selectorLabels" -}}
app.kubernetes.io/name: prapi-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "prapi-operator.labels" -}}
{{ include "prapi-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prapi
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* ClusterRole (all namespaces) or a Role in each of watchNamespaces for the MarketGroups and their children. */}}
{{- define "prapi-operator.rules" -}}
- apiGroups: [prapi.dev]
  resources: [marketgroups]
  verbs: [get, list, watch, patch, update]
- apiGroups: [prapi.dev]
  resources: [marketgroups/status]
  verbs: [get, patch, update]
- apiGroups: [prapi.dev]
  resources: [marketgroups/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [services, configmaps, serviceaccounts]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects, triggerauthentications]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [podmonitors]
  verbs: [get, list, watch, create, patch, update, delete]
# The Kafka client Secret a MarketGroup names (spec.updater.kafka.clientSecretName), read by name
# to check it and for the lag reader. get only: the operator cannot list or watch Secrets, so it
# reads no Secret whose name a MarketGroup does not give.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Batch pods read EndpointSlices through a RoleBinding to the chart's fixed ClusterRole
# prapi-endpointslice-reader. The operator creates no Roles, holds no EndpointSlice access itself,
# and may bind that one ClusterRole only (bind with resourceNames): it cannot grant anything else.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [prapi-endpointslice-reader]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if ne .Values.routing.provider "none" }}
# Routes across groups (docs/operations.md): one HTTPRoute or RouteGroup per country.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [zalando.org]
  resources: [routegroups]
  verbs: [get, list, watch, create, patch, update, delete]
# Envoy Gateway's consistent hash per HTTPRoute, where its API is served (routing.backendTrafficPolicy).
- apiGroups: [gateway.envoyproxy.io]
  resources: [backendtrafficpolicies]
  verbs: [get, list, watch, create, patch, update, delete]
{{- end }}
{{- end -}}

{{/* --data-plane-env values, one NAME=VALUE per line (PRAPI_DATA_PLANE_ENV). */}}
{{- define "prapi-operator.dataPlaneEnv" -}}
{{- range $i, $e := . }}{{ if $i }}{{ "\n" }}{{ end }}{{ $e.name }}={{ $e.value }}{{ end }}
{{- end -}}

{{/* "true" when this release registers APIService v1beta1.external.metrics.k8s.io: always, never,
or (auto) unless another provider (KEDA, prometheus-adapter, another release) already owns it. */}}
{{- define "prapi-operator.registerApiService" -}}
{{- $mode := .Values.externalMetrics.apiService -}}
{{- if eq $mode "always" -}}
true
{{- else if eq $mode "auto" -}}
{{- $existing := lookup "apiregistration.k8s.io/v1" "APIService" "" "v1beta1.external.metrics.k8s.io" -}}
{{- if not $existing -}}
true
{{- else -}}
{{- $ann := $existing.metadata.annotations | default dict -}}
{{- if and (eq (index $ann "meta.helm.sh/release-name" | default "") .Release.Name) (eq (index $ann "meta.helm.sh/release-namespace" | default "") .Release.Namespace) -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}
{{- else -}}
false
{{- end -}}
{{- end -}}

{{/* Who serves external.metrics.k8s.io when this release does not (for NOTES). */}}
{{- define "prapi-operator.apiServiceOwner" -}}
{{- $existing := lookup "apiregistration.k8s.io/v1" "APIService" "" "v1beta1.external.metrics.k8s.io" -}}
{{- if and $existing $existing.spec.service -}}
{{- printf "Service %s/%s" $existing.spec.service.namespace $existing.spec.service.name -}}
{{- else -}}
another provider
{{- end -}}
{{- end -}}
