{{/* The chart's name. */}}
{{- define "shopstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource: the release name, unless it already contains the chart name. */}}
{{- define "shopstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "shopstream.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "shopstream.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels of every resource; pass (dict "ctx" $ "component" "minio"). */}}
{{- define "shopstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: shopstream
{{ include "shopstream.selectorLabels" . }}
{{- end }}

{{/* The labels a Service or workload selects its pods by. */}}
{{- define "shopstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shopstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A full image reference from {repository, tag, digest}: repository:tag@digest. */}}
{{- define "shopstream.image" -}}
{{- $ref := printf "%s:%s" .repository (toString .tag) }}
{{- if .digest }}{{ $ref = printf "%s@%s" $ref .digest }}{{ end }}
{{- $ref }}
{{- end }}

{{/* Names shared between templates (and with charts/values/dagster.yaml). */}}
{{- define "shopstream.credentialsSecret" -}}{{ include "shopstream.fullname" . }}-credentials{{- end }}
{{- define "shopstream.dagsterDatabaseSecret" -}}{{ include "shopstream.fullname" . }}-dagster-postgresql{{- end }}
{{- define "shopstream.lakeConfigMap" -}}{{ include "shopstream.fullname" . }}-lake{{- end }}
{{- define "shopstream.launcherConfigMap" -}}{{ include "shopstream.fullname" . }}-launcher{{- end }}
{{- define "shopstream.minio" -}}{{ include "shopstream.fullname" . }}-minio{{- end }}
{{- define "shopstream.postgres" -}}{{ include "shopstream.fullname" . }}-postgres{{- end }}
{{- define "shopstream.streamingApp" -}}{{ include "shopstream.fullname" . }}-streaming{{- end }}

{{/*
A generated secret value that survives upgrades: the value already in the cluster's Secret if
there is one (base64, as stored), otherwise a new random one. Never a literal default.
Pass (dict "existing" <Secret or nil> "key" "NAME" "length" 32).
*/}}
{{- define "shopstream.generatedSecret" -}}
{{- if and .existing .existing.data (hasKey .existing.data .key) }}
{{- index .existing.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/* Security contexts every pod and container of the chart uses (values podSecurityContext, containerSecurityContext). */}}
{{- define "shopstream.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "shopstream.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* What the streaming application's driver and executor pods share: identity, settings, security. */}}
{{- define "shopstream.sparkPod" -}}
serviceAccount: {{ .Values.spark.serviceAccountName }}
labels:
  {{- include "shopstream.labels" (dict "ctx" . "component" "streaming") | nindent 2 }}
envFrom:
  - configMapRef: {name: {{ include "shopstream.lakeConfigMap" . }}}
  - secretRef: {name: {{ include "shopstream.credentialsSecret" . }}}
securityContext:
  runAsNonRoot: true
  runAsUser: 185
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL]}
{{- end }}
