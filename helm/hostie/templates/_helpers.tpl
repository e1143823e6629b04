{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "hostie.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart, or the release name alone when it already contains the chart name.
*/}}
{{- define "hostie.fullname" -}}
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
Name of the admin Service (metrics), kept within 63 characters.
*/}}
{{- define "hostie.adminName" -}}
{{- printf "%s-admin" (include "hostie.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "hostie.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "hostie.labels" -}}
helm.sh/chart: {{ include "hostie.chart" . }}
{{ include "hostie.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: the pods' identity, never changed after the first install.
*/}}
{{- define "hostie.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hostie.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hostie.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hostie.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "hostie.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Whether hostie runs in cluster mode (a Redis URL is configured one way or the other).
*/}}
{{- define "hostie.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/*
The topology redis.url selects by its scheme: standalone, sentinel or cluster; empty for a
scheme hostie does not know (hostie.validate refuses it). Nothing for redis.existingSecret: the
chart never sees that URL.
*/}}
{{- define "hostie.redisTopology" -}}
{{- $scheme := regexFind "^[a-z+]+://" .Values.redis.url | trimSuffix "://" }}
{{- if has $scheme (list "redis" "rediss") }}standalone
{{- else if has $scheme (list "redis+sentinel" "rediss+sentinel") }}sentinel
{{- else if has $scheme (list "redis+cluster" "rediss+cluster") }}cluster
{{- end }}
{{- end }}

{{/*
The Secret holding the Redis URL: the user's, or the chart's.
*/}}
{{- define "hostie.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else }}
{{- printf "%s-redis" (include "hostie.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "hostie.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecretKey }}
{{- else -}}
redis-url
{{- end }}
{{- end }}

{{/*
Whether more than one node may run (several replicas, or an autoscaler).
*/}}
{{- define "hostie.multiNode" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
Refuses values that would deploy a broken cluster. Included by the Deployment.
*/}}
{{- define "hostie.validate" -}}
{{- if and (include "hostie.multiNode" .) (not (include "hostie.redisEnabled" .)) }}
{{- fail "hostie: replicaCount > 1 or autoscaling needs Redis (redis.url or redis.existingSecret): embedded nodes do not share registrations" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "hostie: set either redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- if .Values.redis.url }}
{{- $topology := include "hostie.redisTopology" . }}
{{- if not $topology }}
{{- $scheme := regexFind "^[^:/@]*://" .Values.redis.url | trimSuffix "://" }}
{{- fail (printf "hostie: redis.url must start with redis:// or rediss:// (one Redis), redis+sentinel:// or rediss+sentinel:// (Sentinel), redis+cluster:// or rediss+cluster:// (Cluster); its scheme is %s" (ternary (quote $scheme) "missing" (ne $scheme ""))) }}
{{- end }}
{{- if and (eq $topology "sentinel") (not (regexMatch "^[^?]*://[^/?]+/[^/?]+|[?&]sentinel_master_name=[^&]" .Values.redis.url)) }}
{{- fail "hostie: a redis+sentinel:// redis.url names the primary: redis+sentinel://host:26379[,host:port...]/<primary-name> (or ?sentinel_master_name=<primary-name>)" }}
{{- end }}
{{- end }}
{{- if or (contains "{" .Values.redis.prefix) (contains "}" .Values.redis.prefix) }}
{{- fail "hostie: redis.prefix must not contain '{' or '}' (they would make it a Redis Cluster hash tag)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "hostie: tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- $need := add (int .Values.drain.preStopSleepSeconds) (int .Values.drain.graceSeconds) 2 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $need) }}
{{- fail (printf "hostie: terminationGracePeriodSeconds (%d) must be at least drain.preStopSleepSeconds + drain.graceSeconds + 2 = %d" (int .Values.terminationGracePeriodSeconds) (int $need)) }}
{{- end }}
{{- if gt (int .Values.drain.spreadSeconds) (int .Values.drain.graceSeconds) }}
{{- fail "hostie: drain.spreadSeconds must not exceed drain.graceSeconds" }}
{{- end }}
{{- if lt (int .Values.drain.graceSeconds) 1 }}
{{- fail "hostie: drain.graceSeconds must be at least 1" }}
{{- end }}
{{- end }}

{{/*
The container's literal environment (settings come from the ConfigMap through envFrom).
*/}}
{{- define "hostie.env" -}}
{{- if include "hostie.redisEnabled" . }}
- name: HOSTIE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hostie.redisSecretName" . }}
      key: {{ include "hostie.redisSecretKey" . }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: HOSTIE_TLS_CERT
  value: /etc/hostie/tls/tls.crt
- name: HOSTIE_TLS_KEY
  value: /etc/hostie/tls/tls.key
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
