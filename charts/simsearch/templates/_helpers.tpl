{{/*
Chart name, truncated to 63 characters (the DNS label limit of Kubernetes names).
*/}}
{{- define "simsearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: release + chart unless the release name already holds it.
Truncated to 63 characters; every object name below is built from it.
*/}}
{{- define "simsearch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of one component's objects: fullname-component, kept within 63 characters.
Usage: include "simsearch.component.fullname" (list . "router")
*/}}
{{- define "simsearch.component.fullname" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- printf "%s-%s" (include "simsearch.fullname" $root | trunc (int (sub 62 (len $component)))) $component | trimSuffix "-" }}
{{- end }}

{{/*
chart label: name-version.
*/}}
{{- define "simsearch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: name + instance + component only. Never a version: a StatefulSet's
selector can never change, so a version in it would break every `helm upgrade`.
Usage: include "simsearch.selectorLabels" (list . "shard")
*/}}
{{- define "simsearch.selectorLabels" -}}
{{- $root := index . 0 }}
app.kubernetes.io/name: {{ include "simsearch.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
All labels of a component's objects: the selector labels plus chart, version, manager.
Usage: include "simsearch.labels" (list . "shard")
*/}}
{{- define "simsearch.labels" -}}
{{- $root := index . 0 }}
helm.sh/chart: {{ include "simsearch.chart" $root }}
{{ include "simsearch.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: simsearch
{{- end }}

{{/*
The image of a role: repository:tag from values, tag defaulting to the chart's appVersion.
Usage: include "simsearch.image" (list . .Values.router.image)
*/}}
{{- define "simsearch.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- printf "%s:%s" $image.repository (toString (default $root.Chart.AppVersion $image.tag)) }}
{{- end }}

{{/*
Name of the Secret holding the S3 credentials (chart-made or existing).
*/}}
{{- define "simsearch.s3SecretName" -}}
{{- if .Values.s3.existingSecret }}
{{- .Values.s3.existingSecret }}
{{- else }}
{{- include "simsearch.component.fullname" (list . "s3") }}
{{- end }}
{{- end }}

{{/*
Whether S3 credentials come from a Secret at all (none: the pod's identity, e.g. IRSA).
*/}}
{{- define "simsearch.s3HasSecret" -}}
{{- if or .Values.s3.existingSecret .Values.s3.accessKeyId .Values.minio.enabled }}true{{- end }}
{{- end }}

{{/*
Name of the Secret holding the API keys of the router and the shards (chart-made or existing).
*/}}
{{- define "simsearch.apiKeysSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- include "simsearch.component.fullname" (list . "api-keys") }}
{{- end }}
{{- end }}

{{/*
Whether API keys are configured at all (chart-made lists or an existing Secret).
*/}}
{{- define "simsearch.authEnabled" -}}
{{- if or .Values.auth.apiKeys .Values.auth.adminKeys .Values.auth.existingSecret }}true{{- end }}
{{- end }}

{{/*
Key environment of a role from the keys Secret (docs/security.md).
Usage: include "simsearch.authEnv" (list . "router")   (shards: "shard", admin keys only)
With auth.keyFile.enabled: SIMSEARCH_API_KEYS_FILE names the mounted file (re-read on
change: keys rotate without a restart); else the comma-separated keys as variables.
*/}}
{{- define "simsearch.authEnv" -}}
{{- $root := index . 0 }}
{{- $role := index . 1 }}
{{- $auth := $root.Values.auth }}
{{- if include "simsearch.authEnabled" $root }}
{{- if $auth.keyFile.enabled }}
- name: SIMSEARCH_API_KEYS_FILE
  value: /etc/simsearch/keys/keys
{{- else }}
{{- if eq $role "router" }}
- name: SIMSEARCH_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "simsearch.apiKeysSecretName" $root }}
      key: {{ $auth.existingSecretKey }}
{{- end }}
- name: SIMSEARCH_ADMIN_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "simsearch.apiKeysSecretName" $root }}
      key: {{ $auth.existingSecretAdminKey }}
      optional: true
{{- end }}
{{- end }}
{{- end }}

{{/*
The key file's volume and its mount (auth.keyFile.enabled). The whole folder is mounted,
never a subPath: the kubelet updates a Secret volume by swapping a symlink, which a
subPath mount never sees.
*/}}
{{- define "simsearch.authVolume" -}}
{{- if and (include "simsearch.authEnabled" .) .Values.auth.keyFile.enabled }}
- name: api-keys
  secret:
    secretName: {{ include "simsearch.apiKeysSecretName" . }}
    items:
      - key: {{ .Values.auth.keyFile.secretKey }}
        path: keys
{{- end }}
{{- end }}

{{- define "simsearch.authVolumeMount" -}}
{{- if and (include "simsearch.authEnabled" .) .Values.auth.keyFile.enabled }}
- name: api-keys
  mountPath: /etc/simsearch/keys
  readOnly: true
{{- end }}
{{- end }}

{{/*
The S3 endpoint URL: the bundled MinIO's Service when it is on, else s3.endpoint.
*/}}
{{- define "simsearch.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s:9000" (include "simsearch.component.fullname" (list . "minio")) }}
{{- else }}
{{- .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/*
Where the index lives: s3://bucket/prefix (the `--store` of every role).
*/}}
{{- define "simsearch.storeUri" -}}
{{- printf "s3://%s/%s" .Values.s3.bucket (trimSuffix "/" .Values.s3.indexPrefix) | trimSuffix "/" }}
{{- end }}

{{/*
Where the images live: s3://bucket/prefix (what the indexer scans, the router serves).
*/}}
{{- define "simsearch.imagesUri" -}}
{{- printf "s3://%s/%s" .Values.s3.bucket (trimSuffix "/" .Values.s3.imagesPrefix) | trimSuffix "/" }}
{{- end }}

{{/*
What the embedder may read (SIMSEARCH_ALLOWED_ROOTS): the images the indexer sends it
(s3.imagesPrefix, or every collection's images), then embedder.allowedRoots.
*/}}
{{- define "simsearch.embedderRoots" -}}
{{- if .Values.collections }}
{{- $roots := list }}
{{- range .Values.collections }}
{{- $roots = append $roots .images }}
{{- end }}
{{- concat $roots .Values.embedder.allowedRoots | uniq | join "," }}
{{- else }}
{{- prepend .Values.embedder.allowedRoots (include "simsearch.imagesUri" .) | join "," }}
{{- end }}
{{- end }}

{{/*
Environment shared by every role that talks to S3: endpoint, region, addressing and the
credentials (from a Secret, or none for workload identity). Logging settings too.
*/}}
{{- define "simsearch.commonEnv" -}}
- name: SIMSEARCH_HOST
  value: "0.0.0.0"
- name: SIMSEARCH_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: SIMSEARCH_LOG_FORMAT
  value: "json"
{{- with (include "simsearch.s3Endpoint" .) }}
- name: SIMSEARCH_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: SIMSEARCH_S3_REGION
  value: {{ .Values.s3.region | quote }}
- name: SIMSEARCH_S3_PATH_STYLE
  value: {{ .Values.s3.pathStyle | quote }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
{{- if include "simsearch.s3HasSecret" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "simsearch.s3SecretName" . }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "simsearch.s3SecretName" . }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/*
The restricted container securityContext (Pod Security Standard "restricted").
*/}}
{{- define "simsearch.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The pod securityContext: non-root uid/gid from values, fsGroup for writable volumes.
*/}}
{{- define "simsearch.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
HTTP liveness and readiness probes of our services (/health/live, /health/ready).
Usage: include "simsearch.probes" .Values.router.probes
*/}}
{{- define "simsearch.probes" -}}
livenessProbe:
  httpGet:
    path: /health/live
    port: http
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .livenessFailureThreshold }}
readinessProbe:
  httpGet:
    path: /health/ready
    port: http
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .readinessFailureThreshold }}
{{- if .startupFailureThreshold }}
startupProbe:
  httpGet:
    path: /health/live
    port: http
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .startupFailureThreshold }}
{{- end }}
{{- end }}

{{/*
checksum/config: changes of the chart's config and secrets roll the pods that use them.
*/}}
{{- define "simsearch.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- end }}

{{/*
ServiceAccount names of the components.
*/}}
{{- define "simsearch.serviceAccountName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- include "simsearch.component.fullname" (list $root $component) }}
{{- end }}

{{/*
NetworkPolicy peer for Prometheus (its namespace), only when the ServiceMonitor is on.
*/}}
{{- define "simsearch.netpol.metricsPeer" -}}
{{- if .Values.metrics.serviceMonitor.enabled }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Values.networkPolicy.monitoringNamespace }}
{{- end }}
{{- end }}
