{{/* Names, labels and the values the templates derive. */}}

{{- define "dify-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dify-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "dify-gateway.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "dify-gateway.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The component label keeps the gateway's selectors off the bundled Redis' pods. */}}
{{- define "dify-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dify-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "dify-gateway.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "dify-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "dify-gateway.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dify-gateway.labels" -}}
{{ include "dify-gateway.commonLabels" . }}
{{ include "dify-gateway.selectorLabels" . }}
{{- end }}

{{- define "dify-gateway.redisLabels" -}}
{{ include "dify-gateway.commonLabels" . }}
{{ include "dify-gateway.redisSelectorLabels" . }}
{{- end }}

{{- define "dify-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dify-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dify-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the inner API key, and the key in it. Fails without one: the gateway
cannot start without the key, and only the operator knows the plugin daemon's value. */}}
{{- define "dify-gateway.innerApiKeySecret" -}}
{{- if .Values.innerApiKey.existingSecret }}
{{- .Values.innerApiKey.existingSecret }}
{{- else if .Values.innerApiKey.value }}
{{- include "dify-gateway.fullname" . }}
{{- else }}
{{- fail "set innerApiKey.value or innerApiKey.existingSecret: the plugin daemon's DIFY_INNER_API_KEY" }}
{{- end }}
{{- end }}

{{- define "dify-gateway.innerApiKeySecretKey" -}}
{{- if .Values.innerApiKey.existingSecret }}
{{- .Values.innerApiKey.existingSecretKey }}
{{- else }}
{{- "inner-api-key" }}
{{- end }}
{{- end }}

{{/* "true" when the gateway gets a REDIS_URL. */}}
{{- define "dify-gateway.hasRedis" -}}
{{- if or .Values.redisUrl .Values.redisUrlSecret.name .Values.redis.enabled }}true{{ end }}
{{- end }}

{{- define "dify-gateway.redisName" -}}
{{- printf "%s-redis" (include "dify-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The bundled Redis' password: the value, else the one stored by an earlier install, else new. */}}
{{- define "dify-gateway.redisPassword" -}}
{{- if .Values.redis.password }}
{{- .Values.redis.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "dify-gateway.fullname" .) }}
{{- if and $existing (hasKey $existing.data "redis-password") }}
{{- index $existing.data "redis-password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The data directory (the image's DIFY_GATEWAY_DATA_DIR): the SQLite ledger and spill files. */}}
{{- define "dify-gateway.dataDir" -}}
/var/lib/dify-gateway
{{- end }}

{{/* "true" when the ledger writes to a PostgreSQL URL the chart passes as DATABASE_URL. */}}
{{- define "dify-gateway.ledgerHasUrl" -}}
{{- if and .Values.ledger.enabled (or .Values.ledger.databaseUrl .Values.ledger.databaseUrlSecret.name) }}true{{ end }}
{{- end }}

{{/* The data directory's volume claim, when persistence is on ("" for an emptyDir). */}}
{{- define "dify-gateway.dataClaim" -}}
{{- if .Values.ledger.persistence.enabled }}
{{- default (printf "%s-data" (include "dify-gateway.fullname" .) | trunc 63 | trimSuffix "-") .Values.ledger.persistence.existingClaim }}
{{- end }}
{{- end }}

{{/* "true" when the data volume can be attached to one node (or pod) only: a rolling update
would start the new pod before the old one lets go of it. */}}
{{- define "dify-gateway.dataSingleAttach" -}}
{{- if and .Values.ledger.enabled (include "dify-gateway.dataClaim" .) }}
{{- $modes := .Values.ledger.persistence.accessModes }}
{{- if or (has "ReadWriteOnce" $modes) (has "ReadWriteOncePod" $modes) }}true{{ end }}
{{- end }}
{{- end }}

{{/* The gateway's configuration file, from .Values.config plus what the chart manages. */}}
{{- define "dify-gateway.config" -}}
{{- $config := deepCopy (default dict .Values.config) }}
{{- $dify := default dict $config.dify }}
{{- if not $dify.api_url }}{{ $_ := unset $dify "api_url" }}{{ end }}
{{- if $dify }}{{ $_ := set $config "dify" $dify }}{{ else }}{{ $_ := unset $config "dify" }}{{ end }}
{{- /* null routes: the key is left out, so the gateway's embedded default routes apply */}}
{{- if kindIs "invalid" $config.routes }}{{ $_ := unset $config "routes" }}{{ end }}
{{- if include "dify-gateway.hasRedis" . }}
{{- $cache := default dict $config.cache }}
{{- $_ := set $cache "redis_url" "os.environ/REDIS_URL" }}
{{- $_ := set $config "cache" $cache }}
{{- end }}
{{- /* the ledger: on/off and the database URL come from .Values.ledger (the URL from a Secret) */}}
{{- range $key := list "enabled" "database_url" }}
{{- if hasKey (default dict $config.ledger) $key }}
{{- fail (printf "config.ledger.%s is set by the chart: use ledger.%s instead" $key (ternary "enabled" "databaseUrl or ledger.databaseUrlSecret (the URL is passed from a Secret)" (eq $key "enabled"))) }}
{{- end }}
{{- end }}
{{- if not .Values.ledger.enabled }}
{{- $ledger := default dict $config.ledger }}
{{- $_ := set $ledger "enabled" false }}
{{- $_ := set $config "ledger" $ledger }}
{{- else if include "dify-gateway.ledgerHasUrl" . }}
{{- $ledger := default dict $config.ledger }}
{{- $_ := set $ledger "database_url" "os.environ/DATABASE_URL" }}
{{- $_ := set $config "ledger" $ledger }}
{{- end }}
{{- if eq .Values.configReload "live" }}
{{- $server := default dict $config.server }}
{{- if not (hasKey $server "watch_config") }}{{ $_ := set $server "watch_config" true }}{{ end }}
{{- $_ := set $config "server" $server }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Shutdown: the gateway's drain settings (its defaults when unset) and the grace period. */}}
{{- define "dify-gateway.terminationGracePeriodSeconds" -}}
{{- $server := default dict .Values.config.server }}
{{- $grace := ternary $server.drain_grace_s 5 (hasKey $server "drain_grace_s") }}
{{- $timeout := ternary $server.drain_timeout_s 120 (hasKey $server "drain_timeout_s") }}
{{- add .Values.lifecycle.preStopSleepSeconds (ceil $grace) (ceil $timeout) .Values.lifecycle.terminationMarginSeconds }}
{{- end }}
