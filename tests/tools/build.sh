#!/usr/bin/env bash
# Builds a Go-built test tool (helm, kube-apiserver, etcd, ...) from the Go module proxy and prints
# the directory holding its binaries. Each tool is a wrapper module in tests/tools/<tool>/: its
# go.mod and go.sum pin every version (that is the one place for the pin), and `packages` lists the
# Go packages to install, and an optional `ldflags` file adds linker flags (version stamps).
# Binaries are cached in ~/.cache/shopstream/tools/<tool>-<hash of the pins>
# and reused until the pins change.
#
#   tests/tools/build.sh <tool>        e.g.  "$(tests/tools/build.sh helm)/helm" version
set -euo pipefail

tool="${1:-}"
here="$(cd "$(dirname "$0")" && pwd)"
module="$here/$tool"
if [ -z "$tool" ] || [ ! -f "$module/go.mod" ] || [ ! -f "$module/packages" ]; then
  echo "usage: $0 <tool>   (tools: $(cd "$here" && ls -d */ 2>/dev/null | tr -d / | tr '\n' ' '))" >&2
  exit 2
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: building $tool needs Go (1.24 or newer, https://go.dev/dl/); it is not on PATH" >&2
  exit 1
fi

inputs=("$module/go.mod" "$module/go.sum" "$module/packages")
ldflags="-s -w"
if [ -f "$module/ldflags" ]; then
  inputs+=("$module/ldflags")
  ldflags+=" $(grep -v '^#' "$module/ldflags" | tr '\n' ' ')"
fi
pins="$(cat "${inputs[@]}" | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/shopstream/tools"
out="$cache/$tool-$pins"
if [ ! -f "$out/.complete" ]; then
  echo "building $tool from the Go module proxy (once; cached in $out) ..." >&2
  started=$(date +%s)
  rm -rf "$out.partial" && mkdir -p "$out.partial"
  # shellcheck disable=SC2046
  if ! (cd "$module" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$out.partial" \
        go install -trimpath -ldflags="$ldflags" $(grep -v '^#' packages)) >&2; then
    echo "error: building $tool failed (see the Go output above); check network access to the Go module proxy ($(go env GOPROXY))" >&2
    exit 1
  fi
  rm -rf "$out" && mv "$out.partial" "$out" && touch "$out/.complete"
  echo "built $tool in $(( $(date +%s) - started ))s: $(du -sh "$out" | cut -f1)" >&2
fi
echo "$out"
