{{/* The chart name, overridable with nameOverride. */}}
{{- define "puppet-conductor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the namespaced objects: the release name, with the chart name added
unless the release name already contains it. 63 characters: label values and
Service names allow no more.
*/}}
{{- define "puppet-conductor.fullname" -}}
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
Name of the cluster-scoped objects (ClusterRoles and their bindings): prefixed
with the release namespace, so sharded releases of the same name in different
namespaces do not fight over one ClusterRole.
*/}}
{{- define "puppet-conductor.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "puppet-conductor.fullname" .) }}
{{- end }}

{{- define "puppet-conductor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "puppet-conductor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "puppet-conductor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "puppet-conductor.labels" -}}
helm.sh/chart: {{ include "puppet-conductor.chart" . }}
{{ include "puppet-conductor.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | trunc 63 | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "puppet-conductor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "puppet-conductor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "puppet-conductor.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "puppet-conductor.fullname" .) }}
{{- end }}

{{- define "puppet-conductor.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The RoleBinding/ClusterRoleBinding subject: the operator's ServiceAccount. */}}
{{- define "puppet-conductor.subject" -}}
- kind: ServiceAccount
  name: {{ include "puppet-conductor.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
What the reconcilers do to their own kinds and around them, in the watched
namespaces: a ClusterRole's or a Role's rules, by watchNamespace.
*/}}
{{- define "puppet-conductor.operatorRules" -}}
- apiGroups: [puppet-conductor.dev]
  resources: [puppetmasters, puppetnodes]
  verbs: [get, list, watch, patch, update]
# A PuppetNodePool makes its nodes (<pool>-<n>: create cannot be narrowed by
# name) and deletes them on scale down and in a roll, each with a UID
# precondition; it rewrites them in place with the patch above.
- apiGroups: [puppet-conductor.dev]
  resources: [puppetnodes]
  verbs: [create, delete]
# Pools are only read; the operator writes nothing but their status. Their
# /scale is for kubectl scale and autoscalers, not for the operator.
- apiGroups: [puppet-conductor.dev]
  resources: [puppetnodepools]
  verbs: [get, list, watch]
- apiGroups: [puppet-conductor.dev]
  resources: [puppetmasters/status, puppetnodes/status, puppetnodepools/status]
  verbs: [patch, update]
# Setting blockOwnerDeletion on owned objects (the challenge-key Secret, a
# pool's nodes) needs update on the owner's finalizers where
# OwnerReferencesPermissionEnforcement is on.
- apiGroups: [puppet-conductor.dev]
  resources: [puppetmasters/finalizers, puppetnodes/finalizers, puppetnodepools/finalizers]
  verbs: [update]
# Names of the CA client and credentials Secrets come from the spec, so get
# cannot be narrowed by name; create is for <master>-challenge-key; patch adds
# and removes the puppet-conductor.dev/in-use finalizer that holds a master's
# Secrets until its nodes are cleaned up. list and watch serve a metadata-only
# watch (Secret changes wake the masters naming them; stale holds are found):
# the operator reads the data only of the Secrets a master names. No delete.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
