{{- define "batchctl.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "batchctl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "batchctl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "batchctl.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "batchctl.serviceAccountName" -}}
{{- default (include "batchctl.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "batchctl.jobServiceAccountName" -}}
{{- default (printf "%s-jobs" (include "batchctl.fullname" .)) .Values.jobServiceAccount.name -}}
{{- end -}}

{{- define "batchctl.jobsNamespace" -}}
{{- default .Release.Namespace .Values.computeEnvironment.namespace -}}
{{- end -}}

{{- define "batchctl.databaseSecret" -}}
{{- default (printf "%s-database" (include "batchctl.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "batchctl.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "batchctl.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
