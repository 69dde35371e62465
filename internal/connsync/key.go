package connsync

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Key file bounds.
const (
	// MinKeyLen is the shortest key accepted, in bytes (128 bits). A key
	// made by `openssl rand -hex 32` is 64.
	MinKeyLen = 16
	// MaxKeyLen bounds what LoadKey reads: a longer file is not a key.
	MaxKeyLen = 4096
)

// LoadKey reads the shared sync key from path. The file must be a regular
// file that only its owner may read or write (mode 0600 or 0400): a key
// others can read authenticates their datagrams too, so a wider mode is
// refused, not warned about. Trailing newlines and carriage returns are
// not part of the key (so that `openssl rand -hex 32 > key` works); what
// remains must be MinKeyLen to MaxKeyLen bytes. A missing file is an error:
// sync never runs without authentication.
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sync key file %s does not exist; create it with: (umask 077; openssl rand -hex 32 > %s), and the same key on every peer", path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("sync key file %s: %w", path, err)
	}
	defer f.Close()
	// Stat the open file, not the path, so that what is checked is what
	// is read.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sync key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("sync key file %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("sync key file %s has mode %04o, which lets others read or change it; it must be 0600: chmod 600 %s", path, uint32(perm), path)
	}
	key, err := io.ReadAll(io.LimitReader(f, MaxKeyLen+2))
	if err != nil {
		return nil, fmt.Errorf("sync key file %s: %w", path, err)
	}
	key = bytes.TrimRight(key, "\r\n")
	switch {
	case len(key) == 0:
		return nil, fmt.Errorf("sync key file %s is empty; write a key of at least %d bytes, e.g. openssl rand -hex 32 > %s", path, MinKeyLen, path)
	case len(key) < MinKeyLen:
		return nil, fmt.Errorf("sync key file %s holds %d bytes, under the minimum %d; write a longer key, e.g. openssl rand -hex 32 > %s", path, len(key), MinKeyLen, path)
	case len(key) > MaxKeyLen:
		return nil, fmt.Errorf("sync key file %s is over %d bytes; it does not look like a key", path, MaxKeyLen)
	}
	return key, nil
}
