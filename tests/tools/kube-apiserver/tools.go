//go:build tools

// Package tools keeps kube-apiserver in this module's dependency graph for `go mod tidy`.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
