package main

import "testing"

func TestVIPGroup(t *testing.T) {
	runCLI(t, "vip").expect(t, 0, []string{"fulcrum vip", "add", "remove", "list"})
	runCLI(t, "vip", "show").expect(t, 2, nil, `fulcrum: vip: unknown command "show", want one of: add, remove, list`)
}
