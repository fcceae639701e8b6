{{/* Names ----------------------------------------------------------------------------------- */}}
{{- define "openflare.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "openflare.fullname" -}}
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

{{/* A name with a suffix, still within 63 characters. */}}
{{- define "openflare.suffixed" -}}
{{- $base := include "openflare.fullname" .root -}}
{{- printf "%s-%s" ($base | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{- define "openflare.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------- */}}
{{- define "openflare.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openflare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "openflare.labels" -}}
helm.sh/chart: {{ include "openflare.chart" . }}
app.kubernetes.io/name: {{ include "openflare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: openflare
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "openflare.originSelectorLabels" -}}
app.kubernetes.io/name: {{ include "openflare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test-origin
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------- */}}
{{- define "openflare.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "openflare.originImage" -}}
{{- printf "%s:%s" .Values.origin.image.repository (default .Chart.AppVersion .Values.origin.image.tag) -}}
{{- end -}}

{{- define "openflare.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "openflare.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "openflare.adminSecretName" -}}
{{- default (include "openflare.suffixed" (dict "root" . "suffix" "admin")) .Values.adminToken.existingSecret -}}
{{- end -}}

{{/* Secrets as files: each Secret a read-only folder (never subPath, so the kubelet's atomic
update of a rotated Secret reaches the pod), its one key projected under a fixed name. The proxy
reads the files on every reload (OPENFLARE_ADMIN_TOKEN_FILE, OPENFLARE_REDIS_URL_FILE). ------ */}}
{{- define "openflare.secretRoot" -}}/var/run/secrets/openflare{{- end -}}
{{- define "openflare.adminTokenFile" -}}{{ include "openflare.secretRoot" . }}/admin-token/token{{- end -}}
{{- define "openflare.redisUrlFile" -}}{{ include "openflare.secretRoot" . }}/redis/url{{- end -}}
{{- define "openflare.redisFromSecret" -}}
{{- if and .Values.redis.enabled .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Config layout: one ConfigMap per file, each mounted as a folder under /etc/openflare. ---- */}}
{{- define "openflare.configRoot" -}}/etc/openflare{{- end -}}
{{- define "openflare.mirrorRoot" -}}/tmp/openflare/config{{- end -}}

{{/* [{key, folder, file, configmap}] of the mounted config files (JSON, for fromJsonArray). */}}
{{- define "openflare.configFiles" -}}
{{- $files := list (dict "key" "config" "folder" "config" "file" "proxy.yaml" "configmap" (include "openflare.suffixed" (dict "root" . "suffix" "config"))) -}}
{{- if .Values.rules.waf.enabled -}}
{{- $files = append $files (dict "key" "waf" "folder" "waf" "file" "rules.waf.yaml" "configmap" (include "openflare.suffixed" (dict "root" . "suffix" "waf"))) -}}
{{- end -}}
{{- if .Values.rules.cache.enabled -}}
{{- $files = append $files (dict "key" "cache" "folder" "cache" "file" "cache-rules.yaml" "configmap" (include "openflare.suffixed" (dict "root" . "suffix" "cache"))) -}}
{{- end -}}
{{- if .Values.rules.rateLimit.enabled -}}
{{- $files = append $files (dict "key" "rate_limit" "folder" "rate-limit" "file" "rate-limit.yaml" "configmap" (include "openflare.suffixed" (dict "root" . "suffix" "rate-limit"))) -}}
{{- end -}}
{{- toJson $files -}}
{{- end -}}

{{/* OPENFLARE_K8S_CONFIGMAPS: NAME=FOLDER,... */}}
{{- define "openflare.k8sTargets" -}}
{{- $pairs := list -}}
{{- range (include "openflare.configFiles" . | fromJsonArray) -}}
{{- $pairs = append $pairs (printf "%s=%s" .configmap .folder) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Where the proxy reads its main file: the mounted folder, or (k8s watch) the mirror. */}}
{{- define "openflare.configPath" -}}
{{- if eq .Values.reload.mode "k8s" -}}
{{- printf "%s/config/proxy.yaml" (include "openflare.mirrorRoot" .) -}}
{{- else -}}
{{- printf "%s/config/proxy.yaml" (include "openflare.configRoot" .) -}}
{{- end -}}
{{- end -}}

{{/* Placeholder the proxy replaces with the URL in $OPENFLARE_REDIS_URL_FILE (redis.existingSecret). */}}
{{- define "openflare.redisUrl" -}}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) -}}
{{- fail "redis.enabled needs redis.url (redis://host:6379/0) or redis.existingSecret (a Secret with the URL)" -}}
{{- end -}}
{{- if .Values.redis.existingSecret -}}
redis://redis-url-from-OPENFLARE_REDIS_URL_FILE.invalid:6379/0
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* The main config file: the user's proxy.config with the keys the chart owns set. ---------- */}}
{{- define "openflare.proxyConfig" -}}
{{- $user := deepCopy (default dict .Values.proxy.config) -}}
{{- $server := dict
    "listen_addr" (printf ":%d" (int .Values.ports.http))
    "admin_listen_addr" (printf ":%d" (int .Values.ports.admin))
    "shutdown_delay_ms" (int .Values.drain.shutdownDelayMs)
    "graceful_shutdown_timeout_ms" (int .Values.drain.gracefulShutdownTimeoutMs) -}}
{{- $_ := set $user "server" (mergeOverwrite (default dict (get $user "server")) $server) -}}
{{- $ruleFiles := dict -}}
{{- range (include "openflare.configFiles" . | fromJsonArray) -}}
{{- if ne .key "config" -}}
{{- $_ := set $ruleFiles .key (printf "../%s/%s" .folder .file) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $user "rule_files" $ruleFiles -}}
{{- $upstreams := list -}}
{{- $originUrl := printf "http://%s:%d" (include "openflare.suffixed" (dict "root" . "suffix" "origin")) (int .Values.origin.port) -}}
{{- $found := false -}}
{{- range (default list (get $user "upstreams")) -}}
{{- $upstream := deepCopy . -}}
{{- $name := toString (get $upstream "name") -}}
{{- if and $.Values.origin.enabled (eq $name "origin") -}}
{{- if get $upstream "targets" -}}
{{- fail (printf "proxy.config.upstreams[origin]: origin.enabled sets its base_url to %s, so it cannot have targets too (the proxy needs base_url == targets[0]); remove targets, or rename the upstream" $originUrl) -}}
{{- end -}}
{{- $_ := set $upstream "base_url" $originUrl -}}
{{- $found = true -}}
{{- end -}}
{{- /* the proxy refuses both set and different: say so at render time, not in a crash loop */ -}}
{{- $targets := get $upstream "targets" -}}
{{- $base := get $upstream "base_url" -}}
{{- if and $base $targets (kindIs "slice" $targets) -}}
{{- if ne (trimSuffix "/" (toString $base)) (trimSuffix "/" (toString (first $targets))) -}}
{{- fail (printf "proxy.config.upstreams[%s]: base_url (%s) must equal targets[0] (%s) when both are set; set only one of them" $name (toString $base) (toString (first $targets))) -}}
{{- end -}}
{{- end -}}
{{- $upstreams = append $upstreams $upstream -}}
{{- end -}}
{{- if and .Values.origin.enabled (not $found) -}}
{{- $upstreams = append $upstreams (dict "name" "origin" "base_url" $originUrl) -}}
{{- end -}}
{{- if not $upstreams -}}
{{- fail "proxy.config.upstreams is empty: name at least one upstream (see values.yaml), or set origin.enabled=true for the demo origin" -}}
{{- end -}}
{{- $_ := set $user "upstreams" $upstreams -}}
{{- if and .Values.redis.enabled .Values.redis.cache -}}
{{- $cache := default dict (get $user "cache") -}}
{{- $_ := set $cache "store" "redis" -}}
{{- $_ := set $cache "redis_url" (include "openflare.redisUrl" .) -}}
{{- $_ := set $user "cache" $cache -}}
{{- end -}}
{{- if get (default dict (get $user "admin_api")) "auth_token" -}}
{{- fail "proxy.config.admin_api.auth_token: do not put the admin token in a ConfigMap; use adminToken.value or adminToken.existingSecret" -}}
{{- end -}}
{{- toYaml $user -}}
{{- end -}}

{{/* A rules file: the user's text, or the shipped file; the Redis backend set when asked. */}}
{{- define "openflare.rulesText" -}}
{{- $text := .spec.content -}}
{{- if not $text -}}{{- $text = .root.Files.Get (printf "files/%s" .file) -}}{{- end -}}
{{- if not $text -}}{{- fail (printf "files/%s is missing from the chart" .file) -}}{{- end -}}
{{- if and (eq .file "rate-limit.yaml") .root.Values.redis.enabled .root.Values.redis.rateLimit -}}
{{- $doc := $text | fromYaml -}}
{{- if hasKey $doc "Error" -}}{{- fail (printf "rules.rateLimit.content is not valid YAML: %s" (get $doc "Error")) -}}{{- end -}}
{{- $backend := default dict (get $doc "backend") -}}
{{- $redis := default dict (get $backend "redis") -}}
{{- $_ := set $redis "url" (include "openflare.redisUrl" .root) -}}
{{- $_ := set $backend "type" "redis" -}}
{{- $_ := set $backend "redis" $redis -}}
{{- $_ := unset $backend "max_keys" -}}
{{- $_ := set $doc "backend" $backend -}}
{{- $text = printf "# rendered by the chart with the Redis backend (redis.enabled, redis.rateLimit)\n%s" (toYaml $doc) -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* Pod-level and container-level security contexts (restricted Pod Security Standard). --- */}}
{{- define "openflare.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "openflare.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Prometheus Operator API check shared by ServiceMonitor and PrometheusRule. --------- */}}
{{- define "openflare.requireMonitoringApi" -}}
{{- $kind := .kind -}}
{{- if not (.root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind)) -}}
{{- fail (printf "%s: the cluster does not serve monitoring.coreos.com/v1 %s (is the Prometheus Operator installed?). Install its CRDs, or set %s.skipApiCheck=true to render it anyway (for helm template: --api-versions monitoring.coreos.com/v1/%s)." .value $kind .value $kind) -}}
{{- end -}}
{{- end -}}
