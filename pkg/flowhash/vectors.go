package flowhash

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
)

// Vector is one shared test vector: a flow and the hashes both
// implementations must produce for it.
type Vector struct {
	Src    netip.Addr `json:"src"`
	Dst    netip.Addr `json:"dst"`
	Sport  uint16     `json:"sport"`
	Dport  uint16     `json:"dport"`
	Proto  uint8      `json:"proto"`
	Hash   uint32     `json:"hash"`
	Source uint32     `json:"source_hash"`
}

// LoadVectors reads the shared vectors from a JSON file.
func LoadVectors(path string) ([]Vector, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var vs []Vector
	if err := json.Unmarshal(b, &vs); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("%s holds no vectors", path)
	}
	return vs, nil
}
