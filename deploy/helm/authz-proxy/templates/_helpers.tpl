{{/* The release's name for every object. */}}
{{- define "authz-proxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "authz-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "authz-proxy.labels" -}}
{{ include "authz-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The proxy's image as the kubelet pulls it: by digest when one is given. */}}
{{- define "authz-proxy.image" -}}
{{- $i := .Values.image -}}
{{- if $i.digest -}}
{{- printf "%s/%s@%s" $i.registry $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $i.registry $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end -}}

{{- define "authz-proxy.tlsSecret" -}}
{{- default (printf "%s-tls" (include "authz-proxy.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{/* The proxy's URL as the nodes reach it. */}}
{{- define "authz-proxy.nodeServer" -}}
{{- if .Values.nodes.server -}}
{{- .Values.nodes.server -}}
{{- else if .Values.service.clusterIP -}}
{{- printf "%s://%s:%v" (ternary "https" "http" .Values.tls.enabled) .Values.service.clusterIP .Values.service.port -}}
{{- else -}}
{{- fail "nodes.enabled: set nodes.server (the proxy's URL as the nodes reach it: their runtimes do not use cluster DNS) or service.clusterIP" -}}
{{- end -}}
{{- end -}}

{{- define "authz-proxy.nodeHostDir" -}}
{{- if .Values.nodes.hostDir -}}{{ .Values.nodes.hostDir }}
{{- else if eq .Values.nodes.runtime "cri-o" -}}/etc/containers
{{- else -}}/etc/containerd/certs.d
{{- end -}}
{{- end -}}

{{- define "authz-proxy.criSocket" -}}
{{- if .Values.nodes.criSocket -}}{{ .Values.nodes.criSocket }}
{{- else if eq .Values.nodes.runtime "cri-o" -}}/var/run/crio/crio.sock
{{- else -}}/run/containerd/containerd.sock
{{- end -}}
{{- end -}}

{{- define "authz-proxy.canaryAllowed" -}}
{{- default (include "authz-proxy.image" .) .Values.nodes.canary.allowedImage -}}
{{- end -}}

{{- define "authz-proxy.canaryOn" -}}
{{- if and (eq .Values.mode "service") .Values.nodes.enabled .Values.nodes.canary.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The proxy's configuration: config as given, with what the chart owns set:
the listeners, TLS, the audit file, its own image allowlisted, and the
canary's rule first.
*/}}
{{- define "authz-proxy.config" -}}
{{- $c := deepCopy .Values.config -}}
{{- $sidecar := eq .Values.mode "sidecar" -}}
{{- $listen := dict "addr" (ternary "127.0.0.1:5000" "0.0.0.0:5000" $sidecar) -}}
{{- if and .Values.tls.enabled (not $sidecar) -}}
{{- $tls := dict "certFile" "tls/tls.crt" "keyFile" "tls/tls.key" -}}
{{- if .Values.tls.clientCA.secretName -}}{{- $_ := set $tls "clientCAFile" "clients/ca.crt" -}}{{- end -}}
{{- $_ := set $listen "tls" $tls -}}
{{- end -}}
{{- $_ := set $c "listen" $listen -}}
{{- $_ := set $c "metrics" (dict "addr" "0.0.0.0:9090") -}}
{{- if .Values.auditLog.volume.type -}}
{{- $audit := default dict $c.audit -}}
{{- $_ := set $audit "file" "/var/log/authz-proxy/decisions.jsonl" -}}
{{- $_ := set $c "audit" $audit -}}
{{- end -}}
{{- $policy := default dict $c.policy -}}
{{- $ups := list -}}
{{- range $c.upstreams }}{{ $ups = append $ups .name }}{{ end -}}
{{- $allow := default list $policy.allowlist -}}
{{- if and (has .Values.image.registry $ups) (not $sidecar) -}}
{{- $own := include "authz-proxy.image" . -}}
{{- if not (has $own $allow) }}{{ $allow = append $allow $own }}{{ end -}}
{{- end -}}
{{- $_ := set $policy "allowlist" $allow -}}
{{- if include "authz-proxy.canaryOn" . -}}
{{- $denied := .Values.nodes.canary.deniedImage -}}
{{- if not (has (first (splitList "/" $denied)) $ups) -}}
{{- fail (printf "nodes.canary.deniedImage %s: its registry is not one of config.upstreams, so the nodes would not pull it through the proxy" $denied) -}}
{{- end -}}
{{- $rule := dict "name" "authz-proxy-canary" "images" (list $denied) "action" "deny" -}}
{{- $_ := set $policy "rules" (prepend (default list $policy.rules) $rule) -}}
{{- end -}}
{{- $_ := set $c "policy" $policy -}}
{{- toYaml $c -}}
{{- end -}}

{{/* The configuration folder: the ConfigMap, the TLS Secrets and secretFiles. */}}
{{- define "authz-proxy.etcVolume" -}}
- name: etc
  projected:
    sources:
      - configMap:
          name: {{ include "authz-proxy.fullname" . }}
          items:
            - {key: config.yaml, path: config.yaml}
            {{- range $i, $path := keys .Values.files | sortAlpha }}
            - {key: {{ printf "file-%d" $i | quote }}, path: {{ $path | quote }}}
            {{- end }}
      {{- if and .Values.tls.enabled (eq .Values.mode "service") }}
      - secret:
          name: {{ include "authz-proxy.tlsSecret" . }}
          items:
            - {key: tls.crt, path: tls/tls.crt}
            - {key: tls.key, path: tls/tls.key}
      {{- if .Values.tls.clientCA.secretName }}
      - secret:
          name: {{ .Values.tls.clientCA.secretName }}
          items:
            - {key: ca.crt, path: clients/ca.crt}
      {{- end }}
      {{- end }}
      {{- range .Values.secretFiles }}
      - secret:
          name: {{ .secretName }}
          items:
            {{- toYaml .items | nindent 12 }}
      {{- end }}
{{- end -}}

{{/* The proxy's container. */}}
{{- define "authz-proxy.container" -}}
name: authz-proxy
image: {{ include "authz-proxy.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["serve", "--config", "/etc/authz-proxy/config.yaml"]
ports:
  - {name: registry, containerPort: 5000}
  - {name: metrics, containerPort: 9090}
{{- with .Values.env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 5
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
volumeMounts:
  # One folder, not files with subPath: only a whole volume receives the
  # updates that the proxy reloads.
  - {name: etc, mountPath: /etc/authz-proxy, readOnly: true}
  {{- if .Values.auditLog.volume.type }}
  - {name: audit, mountPath: /var/log/authz-proxy}
  {{- end }}
  {{- if .Values.persistence.enabled }}
  - {name: store, mountPath: /var/lib/authz-proxy}
  {{- end }}
  {{- if .Values.trustCache.enabled }}
  - {name: trust-cache, mountPath: /var/cache/authz-proxy}
  {{- end }}
{{- end -}}
