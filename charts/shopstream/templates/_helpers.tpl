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

{{/*
A full image reference, [registry/]repository:tag[@digest]; images.registry, when set, replaces
the image's own registry. Pass (dict "ctx" $ "image" .Values.images.NAME).
*/}}
{{- define "shopstream.image" -}}
{{- $registry := .ctx.Values.images.registry | default .image.registry }}
{{- $ref := printf "%s:%s" .image.repository (toString .image.tag) }}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end }}
{{- if .image.digest }}{{ $ref = printf "%s@%s" $ref .image.digest }}{{ end }}
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

{{/*
What every SparkApplication of the release shares: the chart's streaming application and, through
the launcher ConfigMap (SHOPSTREAM_SPARK_APP_DEFAULTS), every one Dagster launches. Spark itself
runs as uid 185 (the Spark image's user); executors get an account without an API token.
*/}}
{{- define "shopstream.sparkApplicationDefaults" -}}
image: {{ include "shopstream.image" (dict "ctx" . "image" .Values.images.spark) }}
imagePullPolicy: {{ .Values.images.pullPolicy }}
sparkVersion: {{ .Values.spark.version | quote }}
{{- with .Values.spark.sparkConf }}
sparkConf:
  {{- toYaml . | nindent 2 }}
{{- end }}
driver:
  serviceAccount: {{ .Values.spark.serviceAccountName }}
  {{- with .Values.spark.driverCoreRequest }}
  coreRequest: {{ . | quote }}
  {{- end }}
  {{- include "shopstream.sparkPod" . | nindent 2 }}
executor:
  serviceAccount: {{ .Values.spark.executorServiceAccountName }}
  {{- with .Values.spark.executorCoreRequest }}
  coreRequest: {{ . | quote }}
  {{- end }}
  {{- include "shopstream.sparkPod" . | nindent 2 }}
{{- end }}

{{- define "shopstream.sparkPod" -}}
envFrom:
  - configMapRef: {name: {{ include "shopstream.lakeConfigMap" . }}}
  - secretRef: {name: {{ include "shopstream.credentialsSecret" . }}}
podSecurityContext:
  {{- include "shopstream.podSecurityContext" . | nindent 2 }}
  runAsUser: 185
  runAsGroup: 185
  fsGroup: 185
securityContext:
  {{- include "shopstream.containerSecurityContext" . | nindent 2 }}
  runAsNonRoot: true
  runAsUser: 185
{{- end }}
