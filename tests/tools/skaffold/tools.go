//go:build tools

// Package tools keeps skaffold's command in this module's dependency graph for `go mod tidy`.
package tools

import _ "github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold"
