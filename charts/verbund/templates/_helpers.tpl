{{/* The name of every object of the release (the operator's ServiceAccount, Deployment, ...). */}}
{{- define "verbund.fullname" -}}
{{- if eq .Release.Name "verbund" -}}verbund-operator{{- else -}}{{ printf "%s-verbund-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "verbund.selectorLabels" -}}
app.kubernetes.io/name: verbund-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "verbund.labels" -}}
{{ include "verbund.selectorLabels" . }}
app.kubernetes.io/part-of: verbund
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "verbund.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
