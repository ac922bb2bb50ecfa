//go:build tools

// Package tools keeps the Spark operator's command in this module's dependency graph for `go mod tidy`.
package tools

import _ "github.com/kubeflow/spark-operator/v2/cmd/operator"
