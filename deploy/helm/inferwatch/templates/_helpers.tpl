{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "inferwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already holds the chart name. */}}
{{- define "inferwatch.fullname" -}}
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

{{- define "inferwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "inferwatch.labels" -}}
helm.sh/chart: {{ include "inferwatch.chart" . }}
{{ include "inferwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inferwatch
{{- end }}

{{/* Labels that select the pods (immutable after install). */}}
{{- define "inferwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "inferwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inferwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the pods read: the operator's, or the one this chart generates. */}}
{{- define "inferwatch.secretName" -}}
{{- default (printf "%s-secrets" (include "inferwatch.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "inferwatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The daemon's HTTP port (config.http.port, 9108 by default). */}}
{{- define "inferwatch.httpPort" -}}
{{- $http := .Values.config.http | default dict }}
{{- $http.port | default 9108 }}
{{- end }}

{{/* Kafka bootstrap servers as one comma-separated string (list or string in values). */}}
{{- define "inferwatch.bootstrap" -}}
{{- $b := .Values.config.kafka.bootstrap_servers }}
{{- if kindIs "string" $b }}{{ $b }}{{ else }}{{ join "," $b }}{{ end }}
{{- end }}

{{/* Secret entries the pods read: key in the Secret, environment variable, value. */}}
{{- define "inferwatch.secretFiles" -}}
{{- $s := .Values.secrets }}
{{- $files := list }}
{{- if eq .Values.store.type "postgresql" }}
{{- $files = append $files (dict "key" $s.databaseUrl.key "env" "INFERWATCH_STORE__URL_FILE" "value" $s.databaseUrl.value "what" "secrets.databaseUrl.value") }}
{{- end }}
{{- if $s.kafkaSaslPassword.enabled }}
{{- $files = append $files (dict "key" $s.kafkaSaslPassword.key "env" "INFERWATCH_KAFKA__SASL_PASSWORD_FILE" "value" $s.kafkaSaslPassword.value "what" "secrets.kafkaSaslPassword.value") }}
{{- end }}
{{- if $s.slackToken.enabled }}
{{- $files = append $files (dict "key" $s.slackToken.key "env" $s.slackToken.env "value" $s.slackToken.value "what" "secrets.slackToken.value") }}
{{- end }}
{{- range $s.extraKeys }}
{{- $files = append $files (dict "key" . "env" "" "value" (get $s.extraValues .) "what" (printf "secrets.extraValues.%s" .)) }}
{{- end }}
{{- toJson $files }}
{{- end }}
