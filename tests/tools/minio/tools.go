//go:build tools

// Package tools keeps the MinIO server and the mc client in this module's dependency graph for `go mod tidy`.
package tools

import (
	_ "github.com/minio/mc"
	_ "github.com/minio/minio"
)
