package main

import "testing"

func TestBackendGroup(t *testing.T) {
	runCLI(t, "backend").expect(t, 0, []string{"fulcrum backend", "add", "remove", "drain", "weight", "list"})
	runCLI(t, "backend", "undrain").expect(t, 2, nil, `fulcrum: backend: unknown command "undrain", want one of: add, remove, drain, weight, list`)
}
