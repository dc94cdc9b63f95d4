#!/usr/bin/env bash
# Install the helm CLI that tests/unit/test_helm.py drives (helm lint, helm template), from its Go module, into
# $GOBIN (default /usr/local/bin). Needs Go >= 1.25 and the Go module proxy; does nothing when that version is
# already installed. Usage: deploy/helm/install-helm.sh [version]
set -euo pipefail
version="${1:-v4.3.2}"
gobin="${GOBIN:-/usr/local/bin}"
# A `go install`ed helm reports only major.minor (v4.3): compare that.
if command -v helm >/dev/null 2>&1 && [ "$(helm version --template '{{.Version}}' 2>/dev/null)" = "${version%.*}" ]; then
  echo "helm ${version%.*} already installed: $(command -v helm)"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-helm.sh: no 'go' on PATH; install Go or helm $version by other means" >&2
  exit 1
fi
GOBIN="$gobin" go install "helm.sh/helm/v4/cmd/helm@${version}"
"$gobin/helm" version
