{{/* The chart's full name: the release name, plus the chart name unless it already contains it. */}}
{{- define "informer-example.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "informer-example.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "informer-example.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "informer-example.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.controller }}
{{- end -}}

{{/* The ServiceAccount's name. */}}
{{- define "informer-example.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "informer-example.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The container's command and arguments for the chosen controller. */}}
{{- define "informer-example.command" -}}
{{- $listen := printf "0.0.0.0:%d" (int .Values.probePort) -}}
{{- if eq .Values.controller "configmap-sync" -}}
{{- with .Values.configmapSync }}
- {{ $.Values.binaries.configmapSync | quote }}
- --listen
- {{ $listen | quote }}
- --workers
- {{ .workers | quote }}
- --resync
- {{ .resyncSeconds | quote }}
- --retry-after
- {{ .retryAfterSeconds | quote }}
{{- range .extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- else if eq .Values.controller "etcd-config-watcher" -}}
{{- with .Values.etcdConfigWatcher }}
- {{ $.Values.binaries.etcdConfigWatcher | quote }}
- --listen
- {{ $listen | quote }}
- --endpoints
- {{ join "," .endpoints | quote }}
- --prefix
- {{ .prefix | quote }}
- --decode
- {{ .decode | quote }}
- --workers
- {{ .workers | quote }}
- --resync
- {{ .resyncSeconds | quote }}
{{- range .extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- else -}}
{{- fail (printf "controller must be configmap-sync or etcd-config-watcher, not %q" .Values.controller) -}}
{{- end -}}
{{- end -}}
