package connsync

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		// WriteFile's mode passes through the umask; set it exactly.
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hex := strings.Repeat("ab", 32)
	good := write("good", hex+"\n", 0o600)
	key, err := LoadKey(good)
	if err != nil || string(key) != hex {
		t.Fatalf("LoadKey(0600 hex key) = %q, %v; want the key without its newline", key, err)
	}
	if key, err := LoadKey(write("readonly", hex, 0o400)); err != nil || string(key) != hex {
		t.Fatalf("LoadKey(0400) = %q, %v; want it accepted", key, err)
	}

	for _, c := range []struct {
		name string
		path string
		want []string // substrings of the error
	}{
		{"mode 0644", write("wide", hex, 0o644), []string{"wide", "mode 0644", "must be 0600"}},
		{"mode 0640", write("group", hex, 0o640), []string{"group", "mode 0640", "must be 0600"}},
		{"mode 0602", write("other", hex, 0o602), []string{"other", "mode 0602"}},
		{"missing", filepath.Join(dir, "absent"), []string{"absent", "does not exist"}},
		{"empty", write("empty", "", 0o600), []string{"empty", "is empty"}},
		{"only a newline", write("newline", "\n", 0o600), []string{"newline", "is empty"}},
		{"short", write("short", "secret\n", 0o600), []string{"short", "6 bytes", "minimum 16"}},
		{"long", write("long", strings.Repeat("k", MaxKeyLen+1), 0o600), []string{"long", "over 4096 bytes"}},
		{"directory", dir, []string{dir, "not a regular file"}},
	} {
		key, err := LoadKey(c.path)
		if err == nil {
			t.Errorf("%s: LoadKey accepted it (%d bytes)", c.name, len(key))
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", c.name, err, w)
			}
		}
	}
}
