{{/* Names, labels and the pieces every pod shares. */}}

{{- define "minnow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "minnow.fullname" -}}
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

{{- define "minnow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "minnow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "minnow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "minnow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: minnow
{{- end }}

{{- define "minnow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "minnow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "minnow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The logical input topic of each worker family (pipeline/models.py; topics/<name>.yaml). */}}
{{- define "minnow.familyInputs" -}}
{{- toJson (dict "feed" "feeds.in" "transcript" "transcripts.in" "iot" "iot.in" "ticket" "tickets.in") }}
{{- end }}

{{/* A family's settings: workerDefaults overlaid with workers.<family>. Args: root, family. JSON. */}}
{{- define "minnow.workerConfig" -}}
{{- $fam := get .root.Values.workers .family }}
{{- toJson (mergeOverwrite (deepCopy .root.Values.workerDefaults) (deepCopy $fam)) }}
{{- end }}

{{/* The consumer group of a family's worker. Args: root, family, cfg. */}}
{{- define "minnow.workerGroup" -}}
{{- default (printf "%s-%s" .root.Values.kafka.groupId .family) .cfg.groupId }}
{{- end }}

{{/* The full names of a family's input topics, as a JSON list: inputTopics, else topics.names, else prefix +
     logical name - the names the worker itself reads (Settings.topic). Args: root, family, cfg. */}}
{{- define "minnow.workerTopics" -}}
{{- if .cfg.inputTopics }}
{{- toJson .cfg.inputTopics }}
{{- else }}
{{- $logical := get (include "minnow.familyInputs" . | fromJson) .family }}
{{- $named := get .root.Values.topics.names (replace "." "_" $logical) }}
{{- toJson (list (default (printf "%s%s" .root.Values.kafka.topicPrefix $logical) $named)) }}
{{- end }}
{{- end }}

{{/* Useful replicas of a family = its input partitions; KEDA's maxReplicaCount is autoscaling.maxReplicas
     capped at that. Args: root, family, cfg. */}}
{{- define "minnow.workerMaxReplicas" -}}
{{- $partitions := int .cfg.partitions }}
{{- if lt $partitions 1 }}
{{- fail (printf "workers.%s.partitions must be the partition count of its input topic(s), at least 1" .family) }}
{{- end }}
{{- $asked := int (default 0 .cfg.autoscaling.maxReplicas) }}
{{- if and (gt $asked 0) (lt $asked $partitions) }}{{ $asked }}{{ else }}{{ $partitions }}{{ end }}
{{- end }}

{{/* Grace period of a worker: deliveryTimeoutS + 30 unless set; never at or below the drain bound. */}}
{{- define "minnow.workerGrace" -}}
{{- $drain := int .cfg.deliveryTimeoutS }}
{{- $grace := int (default (add $drain 30) .cfg.terminationGracePeriodSeconds) }}
{{- if le $grace $drain }}
{{- fail (printf "workers.%s: terminationGracePeriodSeconds (%d) must exceed deliveryTimeoutS (%d), the longest a SIGTERM drain waits for a batch's outputs" .family $grace $drain) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/* Where a credential lives: "secretName key", from its existingSecret or the chart's credentials Secret. */}}
{{- define "minnow.saslSecret" -}}
{{- if .Values.kafka.sasl.existingSecret }}{{ .Values.kafka.sasl.existingSecret }} {{ .Values.kafka.sasl.existingSecretKey }}
{{- else }}{{ include "minnow.fullname" . }}-credentials sasl-password{{ end }}
{{- end }}

{{- define "minnow.keyPasswordSecret" -}}
{{- if .Values.kafka.tls.keyPasswordSecret }}{{ .Values.kafka.tls.keyPasswordSecret }} {{ .Values.kafka.tls.keyPasswordSecretKey }}
{{- else }}{{ include "minnow.fullname" . }}-credentials ssl-key-password{{ end }}
{{- end }}

{{- define "minnow.usesSasl" -}}
{{- if has .Values.kafka.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "minnow.usesTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/* PLAIN/SCRAM: a password is needed; OAUTHBEARER: a token Secret. */}}
{{- define "minnow.usesPassword" -}}
{{- if and (include "minnow.usesSasl" .) (ne .Values.kafka.sasl.mechanism "OAUTHBEARER") }}true{{ end }}
{{- end }}

{{- define "minnow.usesKeyPassword" -}}
{{- if and (include "minnow.usesTls" .) (or .Values.kafka.tls.keyPassword .Values.kafka.tls.keyPasswordSecret) }}true{{ end }}
{{- end }}

{{/* Settings that cannot work fail the render with one line, as the processes would at start-up. */}}
{{- define "minnow.validate" -}}
{{- $k := .Values.kafka }}
{{- if not (has $k.securityProtocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "kafka.securityProtocol %q: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" $k.securityProtocol) }}
{{- end }}
{{- if include "minnow.usesSasl" . }}
{{- if not (has $k.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512" "OAUTHBEARER")) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER" $k.securityProtocol) }}
{{- end }}
{{- if include "minnow.usesPassword" . }}
{{- if not $k.sasl.username }}{{ fail (printf "kafka.sasl.mechanism %s needs kafka.sasl.username" $k.sasl.mechanism) }}{{ end }}
{{- if and (not $k.sasl.password) (not $k.sasl.existingSecret) }}
{{- fail (printf "kafka.sasl.mechanism %s needs kafka.sasl.existingSecret (a Secret holding the password) or kafka.sasl.password" $k.sasl.mechanism) }}
{{- end }}
{{- else if not $k.sasl.oauthTokenSecret }}
{{- fail "kafka.sasl.mechanism OAUTHBEARER needs kafka.sasl.oauthTokenSecret, a Secret holding the bearer token" }}
{{- end }}
{{- else if or $k.sasl.mechanism $k.sasl.username $k.sasl.password $k.sasl.existingSecret $k.sasl.oauthTokenSecret }}
{{- fail (printf "kafka.sasl.* is set but kafka.securityProtocol is %s: use SASL_SSL (or SASL_PLAINTEXT), or unset it" $k.securityProtocol) }}
{{- end }}
{{- if and (not (include "minnow.usesTls" .)) (or $k.tls.caSecret $k.tls.clientSecret $k.tls.keyPassword $k.tls.keyPasswordSecret) }}
{{- fail (printf "kafka.tls.* is set but kafka.securityProtocol is %s: use SSL or SASL_SSL, or unset it" $k.securityProtocol) }}
{{- end }}
{{- if and (include "minnow.usesKeyPassword" .) (not $k.tls.clientSecret) }}
{{- fail "kafka.tls.keyPassword is set without kafka.tls.clientSecret (the client certificate and key)" }}
{{- end }}
{{- end }}

{{/* Kafka settings that are not secret and the file paths of the secret ones: every pod and the topics Job. */}}
{{- define "minnow.kafkaEnv" -}}
- {name: MINNOW_KAFKA__BOOTSTRAP_SERVERS, value: {{ .Values.kafka.bootstrapServers | quote }}}
- {name: MINNOW_KAFKA__TOPIC_PREFIX, value: {{ .Values.kafka.topicPrefix | quote }}}
- {name: MINNOW_KAFKA__SECURITY_PROTOCOL, value: {{ .Values.kafka.securityProtocol | quote }}}
{{- if include "minnow.usesSasl" . }}
- {name: MINNOW_KAFKA__SASL_MECHANISM, value: {{ .Values.kafka.sasl.mechanism | quote }}}
{{- if include "minnow.usesPassword" . }}
- {name: MINNOW_KAFKA__SASL_USERNAME, value: {{ .Values.kafka.sasl.username | quote }}}
- {name: MINNOW_KAFKA__SASL_PASSWORD_FILE, value: /etc/minnow/kafka-sasl/password}
{{- else }}
- {name: MINNOW_KAFKA__SASL_OAUTH_TOKEN_FILE, value: /etc/minnow/kafka-oauth/token}
{{- end }}
{{- end }}
{{- if include "minnow.usesTls" . }}
{{- if .Values.kafka.tls.caSecret }}
- {name: MINNOW_KAFKA__SSL_CAFILE, value: /etc/minnow/kafka-ca/ca.crt}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- {name: MINNOW_KAFKA__SSL_CERTFILE, value: /etc/minnow/kafka-client/tls.crt}
- {name: MINNOW_KAFKA__SSL_KEYFILE, value: /etc/minnow/kafka-client/tls.key}
{{- end }}
{{- if include "minnow.usesKeyPassword" . }}
{{- $ref := include "minnow.keyPasswordSecret" . | splitList " " }}
- name: MINNOW_KAFKA__SSL_KEY_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ index $ref 0 }}, key: {{ index $ref 1 }}}}
{{- end }}
- {name: MINNOW_KAFKA__SSL_CHECK_HOSTNAME, value: {{ .Values.kafka.tls.checkHostname | toString | quote }}}
{{- end }}
{{- range $name, $value := .Values.topics.names }}
- {name: {{ printf "MINNOW_TOPICS__%s" (upper $name) }}, value: {{ $value | quote }}}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom: {secretKeyRef: {name: {{ .secret }}, key: {{ .key }}}}
{{- end }}
{{- end }}

{{/* Volumes for the Kafka credentials and TLS material. Arg: root, and "saslSecret" to override its name. */}}
{{- define "minnow.kafkaVolumes" -}}
{{- $root := .root }}
{{- if include "minnow.usesPassword" $root }}
{{- $ref := default (include "minnow.saslSecret" $root) .saslSecret | splitList " " }}
- name: kafka-sasl
  secret: {secretName: {{ index $ref 0 }}, defaultMode: 0440, items: [{key: {{ index $ref 1 }}, path: password}]}
{{- else if include "minnow.usesSasl" $root }}
- name: kafka-oauth
  secret: {secretName: {{ $root.Values.kafka.sasl.oauthTokenSecret }}, defaultMode: 0440, items: [{key: {{ $root.Values.kafka.sasl.oauthTokenSecretKey }}, path: token}]}
{{- end }}
{{- if include "minnow.usesTls" $root }}
{{- with $root.Values.kafka.tls }}
{{- if .caSecret }}
- name: kafka-ca
  secret: {secretName: {{ .caSecret }}, defaultMode: 0444, items: [{key: {{ .caSecretKey }}, path: ca.crt}]}
{{- end }}
{{- if .clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ .clientSecret }}
    defaultMode: 0440
    items: [{key: {{ .clientSecretCertKey }}, path: tls.crt}, {key: {{ .clientSecretKeyKey }}, path: tls.key}]
{{- end }}
{{- end }}
{{- end }}
- name: tmp
  emptyDir: {sizeLimit: 256Mi}
{{- end }}

{{- define "minnow.kafkaVolumeMounts" -}}
{{- if include "minnow.usesPassword" . }}
- {name: kafka-sasl, mountPath: /etc/minnow/kafka-sasl, readOnly: true}
{{- else if include "minnow.usesSasl" . }}
- {name: kafka-oauth, mountPath: /etc/minnow/kafka-oauth, readOnly: true}
{{- end }}
{{- if include "minnow.usesTls" . }}
{{- if .Values.kafka.tls.caSecret }}
- {name: kafka-ca, mountPath: /etc/minnow/kafka-ca, readOnly: true}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- {name: kafka-client, mountPath: /etc/minnow/kafka-client, readOnly: true}
{{- end }}
{{- end }}
- {name: tmp, mountPath: /tmp}
{{- end }}

{{/* Annotations that roll the pods when their configuration or credentials change. */}}
{{- define "minnow.checksums" -}}
checksum/env: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/credentials: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
