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
{{- define "shopstream.adminSecret" -}}{{ include "shopstream.fullname" . }}-admin-credentials{{- end }}
{{- define "shopstream.credentialsSecret" -}}{{ include "shopstream.fullname" . }}-credentials{{- end }}
{{- define "shopstream.dagsterDatabaseSecret" -}}{{ include "shopstream.fullname" . }}-dagster-postgresql{{- end }}
{{- define "shopstream.lakeConfigMap" -}}{{ include "shopstream.fullname" . }}-lake{{- end }}
{{- define "shopstream.launcherConfigMap" -}}{{ include "shopstream.fullname" . }}-launcher{{- end }}
{{- define "shopstream.minio" -}}{{ include "shopstream.fullname" . }}-minio{{- end }}
{{- define "shopstream.postgres" -}}{{ include "shopstream.fullname" . }}-postgres{{- end }}
{{- define "shopstream.streamingApp" -}}{{ include "shopstream.fullname" . }}-streaming{{- end }}
{{- define "shopstream.setupJob" -}}{{ include "shopstream.fullname" . }}-setup{{- end }}
{{/* The MinIO policy of the lake user: the bucket and its objects, nothing else. */}}
{{- define "shopstream.lakePolicy" -}}{{ .Values.lake.bucket }}-readwrite{{- end }}
{{/* The port the postgres container listens on (the Service's port is postgres.port). */}}
{{- define "shopstream.postgresContainerPort" -}}5432{{- end }}
{{/* The Kafka clients' port: the port of the first bootstrap server. */}}
{{- define "shopstream.kafkaClientPort" -}}
{{- splitList "," .Values.kafka.bootstrapServers | first | splitList ":" | last }}
{{- end }}

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

{{/*
The annotation that records, on each client Secret and on the streaming application's pods, the
credentials.rotation their client credentials belong to.
*/}}
{{- define "shopstream.rotationAnnotation" -}}shopstream.io/credentials-rotation{{- end }}

{{/*
"keep" when a client Secret read back from the cluster was generated for this credentials.rotation
or a later one, so its values stay (an upgrade that leaves the value out never rotates); empty when
there is none, it has no record (written by an older chart, whose client keys were the admin ones)
or a higher credentials.rotation asks for new values. Pass (dict "ctx" $ "existing" <Secret or empty>).
*/}}
{{- define "shopstream.keepClientSecret" -}}
{{- $recorded := dig "metadata" "annotations" (include "shopstream.rotationAnnotation" .ctx) "" .existing }}
{{- if and $recorded (ge (int $recorded) (int .ctx.Values.credentials.rotation)) }}keep{{ end }}
{{- end }}

{{/*
The rotation the client credentials belong to after this install or upgrade: the higher of
credentials.rotation and the one recorded on the client Secret in the cluster.
*/}}
{{- define "shopstream.credentialsGeneration" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "shopstream.credentialsSecret" .) | default dict }}
{{- $recorded := dig "metadata" "annotations" (include "shopstream.rotationAnnotation" .) "0" $existing }}
{{- max (int .Values.credentials.rotation) (int $recorded) }}
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

{{/*
Pod selectors of the network policies (templates/networkpolicies.yaml). Pods of this chart are
picked by their selector labels: pass (dict "ctx" $ "component" "minio").
*/}}
{{- define "shopstream.componentPods" -}}
matchLabels:
  {{- include "shopstream.selectorLabels" . | nindent 2 }}
{{- end }}

{{/* Every driver and executor the Spark operator runs here: the stream and Dagster's jobs. */}}
{{- define "shopstream.sparkPods" -}}
matchExpressions:
  - {key: spark-role, operator: In, values: [driver, executor]}
  - {key: sparkoperator.k8s.io/app-name, operator: Exists}
{{- end }}

{{- define "shopstream.sparkDrivers" -}}
matchLabels: {spark-role: driver}
matchExpressions:
  - {key: sparkoperator.k8s.io/app-name, operator: Exists}
{{- end }}

{{/*
Dagster's webserver, daemon or code server (pass (dict "ctx" $ "component" "dagster-webserver")):
by release and component, not app.kubernetes.io/name, which is dagster-user-deployments on the
code server (a subchart).
*/}}
{{- define "shopstream.dagsterPods" -}}
matchLabels:
  app.kubernetes.io/instance: {{ .ctx.Values.dagster.releaseName }}
  component: {{ .component }}
  {{- if eq .component "user-deployments" }}
  deployment: {{ .ctx.Values.dagster.codeLocation }}
  {{- end }}
{{- end }}

{{/* Dagster's run pods: dagster-k8s labels them itself, instance "dagster" whatever the release's name. */}}
{{- define "shopstream.dagsterRunPods" -}}
matchLabels:
  app.kubernetes.io/name: dagster
  app.kubernetes.io/instance: dagster
  app.kubernetes.io/component: run_worker
{{- end }}

{{/* Strimzi's Kafka nodes (brokers and controllers): every pod of the cluster but its entity operator. */}}
{{- define "shopstream.kafkaNodes" -}}
matchLabels:
  strimzi.io/cluster: {{ .Values.kafka.clusterName }}
  strimzi.io/kind: Kafka
matchExpressions:
  - {key: strimzi.io/name, operator: NotIn, values: [{{ .Values.kafka.clusterName }}-entity-operator]}
{{- end }}

{{- define "shopstream.kafkaEntityOperator" -}}
matchLabels:
  strimzi.io/cluster: {{ .Values.kafka.clusterName }}
  strimzi.io/name: {{ .Values.kafka.clusterName }}-entity-operator
{{- end }}

{{/* A host address as a CIDR. */}}
{{- define "shopstream.hostCidr" -}}
{{- if contains ":" . }}{{ . }}/128{{ else }}{{ . }}/32{{ end }}
{{- end }}

{{/*
An egress rule to the Kubernetes API: networkPolicy.apiServer.cidrs, else the `kubernetes`
Service's cluster IPs and its EndpointSlice's addresses read at install (implementations match
either the Service address or the endpoint it is translated to), else any address; on the API
ports only.
*/}}
{{- define "shopstream.apiServerEgress" -}}
{{- $cidrs := list }}
{{- range .Values.networkPolicy.apiServer.cidrs }}{{ $cidrs = append $cidrs . }}{{ end }}
{{- if not $cidrs }}
{{- with lookup "v1" "Service" "default" "kubernetes" }}
{{- range (.spec.clusterIPs | default (list .spec.clusterIP)) }}{{ $cidrs = append $cidrs (include "shopstream.hostCidr" .) }}{{ end }}
{{- end }}
{{- with lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" }}
{{- range .endpoints }}{{ range .addresses }}{{ $cidrs = append $cidrs (include "shopstream.hostCidr" .) }}{{ end }}{{ end }}
{{- end }}
{{- end }}
to:
{{- range ($cidrs | default (list "0.0.0.0/0" "::/0") | uniq) }}
  - ipBlock: {cidr: {{ . | quote }}}
{{- end }}
ports:
{{- range .Values.networkPolicy.apiServer.ports }}
  - {protocol: TCP, port: {{ . }}}
{{- end }}
{{- end }}

{{/*
Egress of Dagster's code (code server and run pods): PostgreSQL, MinIO's API, Kafka's client port,
the Kubernetes API. Pass (dict "ctx" $ "postgres" <selector> "minio" <selector> "kafka" <selector>
"kafkaPort" N "api" <the "shopstream.apiServerEgress" rule>).
*/}}
{{- define "shopstream.dagsterCodeEgress" -}}
- to:
    - podSelector:
        {{- .postgres | nindent 8 }}
  ports:
    - {protocol: TCP, port: {{ include "shopstream.postgresContainerPort" .ctx }}}
- to:
    - podSelector:
        {{- .minio | nindent 8 }}
  ports:
    - {protocol: TCP, port: {{ .ctx.Values.minio.apiPort }}}
- to:
    - podSelector:
        {{- .kafka | nindent 8 }}
  ports:
    - {protocol: TCP, port: {{ .kafkaPort }}}
- {{- .api | nindent 2 }}
{{- end }}
