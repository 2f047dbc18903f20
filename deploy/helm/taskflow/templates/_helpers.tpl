{{/* The targets of the binary, in a fixed order (src/services/index.ts). */}}
{{- define "taskflow.targetNames" -}}
api relay reminders recurrence notifications audit gateway
{{- end -}}

{{- define "taskflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<target>", for Deployments, Services, HPAs, PDBs. */}}
{{- define "taskflow.targetFullname" -}}
{{- printf "%s-%s" (include "taskflow.fullname" .root) .target | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskflow.labels" -}}
helm.sh/chart: {{ include "taskflow.chart" . }}
{{ include "taskflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskflow
{{- end -}}

{{- define "taskflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one target's objects ({root, target}). */}}
{{- define "taskflow.targetLabels" -}}
{{ include "taskflow.labels" .root }}
app.kubernetes.io/component: {{ .target }}
{{- end -}}

{{- define "taskflow.targetSelectorLabels" -}}
{{ include "taskflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .target }}
{{- end -}}

{{- define "taskflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "taskflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "taskflow.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq (toString $tag) "latest" -}}
{{- fail "image.tag: pin a version (or image.digest), not \"latest\"" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (toString $tag) -}}
{{- end -}}
{{- end -}}

{{- define "taskflow.secretName" -}}
{{- default (include "taskflow.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "taskflow.kafkaSecretName" -}}
{{- default (printf "%s-kafka" (include "taskflow.fullname" .)) .Values.kafka.existingSecret -}}
{{- end -}}

{{- define "taskflow.kafkaCaSecretName" -}}
{{- default (printf "%s-kafka-ca" (include "taskflow.fullname" .)) .Values.kafka.tls.caSecret -}}
{{- end -}}

{{- define "taskflow.kafkaCaEnabled" -}}
{{- if and (include "taskflow.kafkaTls" .) (or .Values.kafka.tls.caSecret .Values.kafka.tls.ca) -}}true{{- end -}}
{{- end -}}

{{/*
Whether the clients use TLS to Kafka: kafka.tls.enabled when set, else the process's own default (KAFKA_SSL
unset: on with a SASL mechanism or a CA). Only a mechanism in the values is known here; one only in
kafka.existingSecret turns TLS on in the process, not in the Dapr component (set sasl.mechanism for Dapr).
*/}}
{{- define "taskflow.kafkaTls" -}}
{{- $tls := .Values.kafka.tls -}}
{{- if kindIs "bool" $tls.enabled -}}
{{- if $tls.enabled -}}true{{- end -}}
{{- else if or .Values.kafka.sasl.mechanism $tls.caSecret $tls.ca -}}true{{- end -}}
{{- end -}}

{{/*
INTERNAL_URL of the api pods: each target's own Service (`{target}` stands for its name, mcp-rest.ts), so the
MCP tools and the chat reach the reminders, recurrence and notifications routes without an ingress. Empty when
one of them is disabled or runs without a Service (PUBLIC_URL then, if set), or the names would be cut at 63
characters.
*/}}
{{- define "taskflow.internalUrl" -}}
{{- $root := . -}}
{{- $ok := le (len (printf "%s-notifications" (include "taskflow.fullname" .))) 63 -}}
{{- range $name := list "reminders" "recurrence" "notifications" -}}
{{- $t := include "taskflow.target" (dict "root" $root "target" $name) | fromYaml -}}
{{- if not (and $t.enabled $t.service) -}}{{- $ok = false -}}{{- end -}}
{{- end -}}
{{- if $ok -}}
{{- printf "http://%s-{target}.%s.svc:%v" (include "taskflow.fullname" .) .Release.Namespace .Values.service.port -}}
{{- end -}}
{{- end -}}

{{/* The gateway's WebSocket tickets need one key on every replica: GATEWAY_TICKET_SECRET when there is no JWT_SECRET. */}}
{{- define "taskflow.ticketSecret" -}}
{{- if and .Values.auth.jwksUrl (not .Values.secrets.jwtSecret) (not (hasKey .Values.secrets.extra "GATEWAY_TICKET_SECRET")) (not (has "GATEWAY_TICKET_SECRET" .Values.secrets.extraKeys)) -}}true{{- end -}}
{{- end -}}

{{- define "taskflow.saslEnabled" -}}
{{- if or .Values.kafka.existingSecret .Values.kafka.sasl.mechanism -}}true{{- end -}}
{{- end -}}

{{- define "taskflow.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl -}}
{{- else if .Values.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{/* The workload of a target: the gateway is a StatefulSet (templates/deployments.yaml), the others Deployments. */}}
{{- define "taskflow.workloadKind" -}}
{{- ternary "StatefulSet" "Deployment" (eq . "gateway") -}}
{{- end -}}

{{/*
A generated secret value kept across upgrades ({root, secret, key}): the key's value in the Secret as it is in
the cluster, else 48 random characters (lookup is empty in `helm template` / `--dry-run`).
*/}}
{{- define "taskflow.keptRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}

{{- define "taskflow.daprTokenSecret" -}}
{{- default (printf "%s-dapr-token" (include "taskflow.fullname" .)) .Values.dapr.apiTokenSecret -}}
{{- end -}}

{{- define "taskflow.daprAppId" -}}
{{- printf "taskflow-%s" . -}}
{{- end -}}

{{/* A target's values with the defaults applied: {root, target} -> YAML (read back with fromYaml). */}}
{{- define "taskflow.target" -}}
{{- $v := .root.Values -}}
{{- $t := index $v.targets .target | default dict -}}
{{- $as := $t.autoscaling | default dict -}}
enabled: {{ ternary $t.enabled true (hasKey $t "enabled") }}
replicas: {{ ternary $t.replicas $v.defaults.replicas (hasKey $t "replicas") }}
service: {{ $t.service | default false }}
pdb: {{ $t.pdb | default false }}
resources:
  {{- toYaml ($t.resources | default $v.defaults.resources) | nindent 2 }}
autoscaling:
  enabled: {{ $as.enabled | default false }}
  minReplicas: {{ ternary $as.minReplicas $v.defaults.autoscaling.minReplicas (hasKey $as "minReplicas") }}
  maxReplicas: {{ ternary $as.maxReplicas $v.defaults.autoscaling.maxReplicas (hasKey $as "maxReplicas") }}
  targetCPUUtilizationPercentage: {{ ternary $as.targetCPUUtilizationPercentage $v.defaults.autoscaling.targetCPUUtilizationPercentage (hasKey $as "targetCPUUtilizationPercentage") }}
env:
  {{- toYaml ($t.env | default dict) | nindent 2 }}
{{- end -}}

{{/*
Environment shared by the targets and the migrate Job ({root, target, job, env}); env: the target's own
variables, which win over .Values.env. The Job gets only what
`taskflow migrate` needs (no Kafka: its Secret is not a hook and does not exist yet on install).
*/}}
{{- define "taskflow.env" -}}
{{- $v := .root.Values -}}
{{- $secret := include "taskflow.secretName" .root -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.databaseUrl }}
{{- if or $v.secrets.existingSecret $v.secrets.jwtSecret (not $v.auth.jwksUrl) }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.jwtSecret }}
      {{- if and $v.secrets.existingSecret $v.auth.jwksUrl }}
      optional: true
      {{- end }}
{{- end }}
{{- if include "taskflow.ticketSecret" .root }}
- name: GATEWAY_TICKET_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: GATEWAY_TICKET_SECRET
      {{- if $v.secrets.existingSecret }}
      optional: true
      {{- end }}
{{- end }}
{{- range $key := concat (keys $v.secrets.extra | sortAlpha) $v.secrets.extraKeys }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- with $v.auth.jwksUrl }}
- name: JWT_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.auth.issuer }}
- name: JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with $v.auth.audience }}
- name: JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- $env := merge (deepCopy (.env | default dict)) $v.env }}
{{- range $k, $val := $env }}
- name: {{ $k }}
  value: {{ $val | toString | quote }}
{{- end }}
{{- if not .job }}
- name: HOST
  value: 0.0.0.0
- name: PORT
  value: {{ $v.port | quote }}
{{- with include "taskflow.publicUrl" .root }}
- name: PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- if and (eq .target "api") (not (hasKey $env "INTERNAL_URL")) }}
{{- with include "taskflow.internalUrl" .root }}
- name: INTERNAL_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- $trustProxy := ternary (ternary "1" "" $v.ingress.enabled) $v.trustProxy (eq $v.trustProxy "auto") }}
{{- with $trustProxy }}
- name: TRUST_PROXY
  value: {{ . | quote }}
{{- end }}
- name: BUS
  value: {{ ternary "dapr" "kafka" $v.dapr.enabled }}
{{- $kafkaSecret := include "taskflow.kafkaSecretName" .root }}
- name: KAFKA_BROKERS
  valueFrom:
    secretKeyRef:
      name: {{ $kafkaSecret }}
      key: KAFKA_BROKERS
{{- if $v.kafka.sasl.mechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ upper $v.kafka.sasl.mechanism | quote }}
{{- else if $v.kafka.existingSecret }}
- name: KAFKA_SASL_MECHANISM
  valueFrom:
    secretKeyRef:
      name: {{ $kafkaSecret }}
      key: KAFKA_SASL_MECHANISM
      optional: true
{{- end }}
{{- if include "taskflow.saslEnabled" .root }}
{{- range $key := list "KAFKA_SASL_USERNAME" "KAFKA_SASL_PASSWORD" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $kafkaSecret }}
      key: {{ $key }}
      optional: {{ ne $v.kafka.existingSecret "" }}
{{- end }}
{{- end }}
{{- if kindIs "bool" $v.kafka.tls.enabled }}
- name: KAFKA_SSL
  value: {{ $v.kafka.tls.enabled | toString | quote }}
{{- end }}
{{- if include "taskflow.kafkaCaEnabled" .root }}
- name: KAFKA_SSL_CA_FILE
  value: /etc/taskflow/kafka-ca/ca.crt
{{- end }}
- name: KAFKA_CLIENT_ID
  value: {{ printf "%s-%s" $v.kafka.clientId .target | quote }}
- name: KAFKA_ENSURE_TOPICS
  value: {{ $v.kafka.ensureTopics | toString | quote }}
{{- with $v.kafka.topicPrefix }}
{{- if $v.dapr.enabled }}
{{- fail "kafka.topicPrefix is for the Kafka transport: with dapr.enabled the topics and consumer groups are the Dapr component's (set them there), and a prefix would be ignored" }}
{{- end }}
- name: KAFKA_TOPIC_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with $v.kafka.topicPartitions }}
- name: KAFKA_TOPIC_PARTITIONS
  value: {{ . | toString | quote }}
{{- end }}
- name: KAFKA_REPLICATION_FACTOR
  value: {{ $v.kafka.replicationFactor | toString | quote }}
{{- with $v.schemaRegistry }}
{{- if .url }}
- name: SCHEMA_REGISTRY_URL
  value: {{ .url | quote }}
- name: SCHEMA_REGISTRY_COMPATIBILITY
  value: {{ .compatibility | quote }}
{{- if eq (.eventEncoding | default "json") "avro" }}
{{- if $v.dapr.enabled }}
{{- fail "schemaRegistry.eventEncoding=avro is for the Kafka transport (dapr.enabled carries JSON)" }}
{{- end }}
- name: EVENT_ENCODING
  value: avro
{{- end }}
{{- $registrySecret := .existingSecret }}
{{- if $registrySecret }}
{{- range $key := list "SCHEMA_REGISTRY_USERNAME" "SCHEMA_REGISTRY_PASSWORD" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $registrySecret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.dapr.enabled }}
{{- range $key := list "APP_API_TOKEN" "DAPR_API_TOKEN" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "taskflow.daprTokenSecret" $.root }}
      key: token
{{- end }}
- name: DAPR_PUBSUB_NAME
  value: {{ ternary (printf "%s-gateway" $v.dapr.pubsubName) $v.dapr.pubsubName (and (eq .target "gateway") $v.dapr.pubsub.gatewayFanout) | quote }}
{{- end }}
{{- end }}
{{- end -}}
