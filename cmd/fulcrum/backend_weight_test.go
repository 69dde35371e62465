package main

import "testing"

func TestBackendWeight(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "backend", "weight", "tcp/203.0.113.10:80", "198.18.0.12", "4").expect(t, 0, []string{"set weight of backend 198.18.0.12 of tcp/203.0.113.10:80 to 4\n"})
	if got, want := d.fake.lastCall(), "SetWeight tcp/203.0.113.10:80 198.18.0.12 4"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
}

func TestBackendWeightArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"tcp/203.0.113.10:80", "198.18.0.12"}, "fulcrum: backend weight: missing N: want the weight, a whole number from 0 to 65535 (0 drains)"},
		{[]string{"tcp/203.0.113.10:80", "198.18.0.12", "-1"}, `fulcrum: backend weight: weight "-1": want a whole number from 0 to 65535 (0 drains)`},
		{[]string{"tcp/203.0.113.10:80", "198.18.0.12", "65536"}, `weight "65536"`},
		{[]string{"tcp/203.0.113.10:80", "198.18.0.12", "heavy"}, `weight "heavy"`},
	}
	for _, tt := range tests {
		runCLI(t, append([]string{"backend", "weight"}, tt.args...)...).expect(t, 2, nil, tt.want)
	}
}
