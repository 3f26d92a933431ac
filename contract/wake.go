package contract

import (
	"encoding/json"
	"fmt"
	"time"
)

// Scale from zero (issue 13). A router holding requests for a variant with
// no instance writes a wake key; the leading server reads it and scales the
// variant's group from 0 to 1. Routers never talk to Nomad: this key is
// the only Consul KV key a router writes.
const (
	// WakePrefix holds one key per (endpoint, generation, variant) a
	// router wants started: serai/wake/<endpoint>/g<generation>/<variant>.
	WakePrefix = KVPrefix + "wake/"
)

// WakeKey is the wake key of one variant of one generation.
func WakeKey(endpoint string, generation int, variant string) string {
	return fmt.Sprintf("%s%s/g%d/%s", WakePrefix, endpoint, generation, variant)
}

// Wake is the wake key's value: who asked and when. The server acts on any
// write newer than its last scale-up of the variant and deletes the key
// once the variant has a passing instance.
type Wake struct {
	Endpoint   string    `json:"Endpoint"`
	Generation int       `json:"Generation"`
	Variant    string    `json:"Variant"`
	Router     string    `json:"Router"`
	Time       time.Time `json:"Time"`
}

// EncodeWake and DecodeWake are the only way either side reads or writes
// a wake value.
func EncodeWake(w Wake) ([]byte, error) { return json.Marshal(w) }

// DecodeWake parses a wake value.
func DecodeWake(b []byte) (Wake, error) {
	var w Wake
	if err := json.Unmarshal(b, &w); err != nil {
		return w, fmt.Errorf("wake value: %w", err)
	}
	if w.Endpoint == "" || w.Variant == "" || w.Generation <= 0 {
		return w, fmt.Errorf("wake value names no variant: %q", b)
	}
	return w, nil
}
