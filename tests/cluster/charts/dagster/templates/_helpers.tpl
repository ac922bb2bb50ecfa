{{/* Names follow the official chart, so Services, ConfigMaps and labels match what users and
skaffold.yaml's port-forward expect (release "dagster": "dagster", "dagster-dagster-webserver"). */}}
{{- define "dagster.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 }}{{ end }}
{{- end -}}

{{- define "dagster.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dagster.serviceAccountName" -}}
{{- .Values.global.serviceAccountName | default .Values.serviceAccount.name | default (include "dagster.fullname" .) -}}
{{- end -}}

{{- define "dagster.postgresqlSecretName" -}}
{{- .Values.global.postgresqlSecretName | default (printf "%s-postgresql-secret" (include "dagster.fullname" .)) -}}
{{- end -}}

{{/* The code servers come from the official chart's subchart "dagster-user-deployments". */}}
{{- define "dagster.userSelectorLabels" -}}
app.kubernetes.io/name: dagster-user-deployments
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dagster.userFullname" -}}
{{ printf "%s-dagster-user-deployments" .Release.Name | trunc 63 }}
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's version as in the official chart. */}}
{{- define "dagster.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.Version | toString) -}}
{{- end -}}

{{/* The environment every Dagster process shares: where the instance lives. */}}
{{- define "dagster.sharedEnv" -}}
DAGSTER_HOME: {{ .Values.global.dagsterHome | quote }}
DAGSTER_K8S_PIPELINE_RUN_NAMESPACE: {{ .Release.Namespace | quote }}
DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP: {{ printf "%s-pipeline-env" (include "dagster.fullname" .) | quote }}
{{- end -}}

{{- define "dagster.postgresqlConfig" -}}
postgres_db:
  username: {{ .Values.postgresql.postgresqlUsername }}
  password: {env: DAGSTER_PG_PASSWORD}
  hostname: {{ .Values.postgresql.postgresqlHost | quote }}
  db_name: {{ .Values.postgresql.postgresqlDatabase }}
  port: {{ .Values.postgresql.service.port }}
  params: {{ .Values.postgresql.postgresqlParams | toJson }}
  {{- with .Values.postgresql.postgresqlScheme }}
  scheme: {{ . }}
  {{- end }}
{{- end -}}

{{/* The password every Dagster process reads its storage with. */}}
{{- define "dagster.postgresqlPasswordEnv" -}}
- name: DAGSTER_PG_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "dagster.postgresqlSecretName" . }}, key: postgresql-password}
{{- end -}}

{{/* What the runs of a code location inherit (dagster api grpc --container-context). */}}
{{- define "dagster.containerContext" -}}
{{- $ := .ctx }}
{{- with .deployment }}
k8s:
  image_pull_policy: {{ .image.pullPolicy }}
  env_config_maps:
    - {{ include "dagster.userFullname" $ }}-{{ .name }}-user-env
    {{- range .envConfigMaps }}
    - {{ .name }}
    {{- end }}
  {{- with .envSecrets }}
  env_secrets:
    {{- range . }}
    - {{ .name }}
    {{- end }}
  {{- end }}
  {{- with .resources }}
  resources: {{ toYaml . | nindent 4 }}
  {{- end }}
  namespace: {{ $.Release.Namespace }}
  service_account_name: {{ include "dagster.serviceAccountName" $ }}
{{- end }}
{{- end -}}
