package contract

import (
	"os"
	"reflect"
	"testing"
)

// FuzzDecodeRoutes: any bytes in Consul KV decode to a valid table or an
// error, never a panic; a table that decodes survives a round trip.
// Run: go test ./contract -run '^$' -fuzz FuzzDecodeRoutes -fuzzminimizetime 1s
func FuzzDecodeRoutes(f *testing.F) {
	if b, err := os.ReadFile("testdata/routes-v1.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":0}]}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"endpoint":"e","generations":[],"timeout":"-1s"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRoutes(b)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded table does not validate: %v", err)
		}
		enc, err := EncodeRoutes(r)
		if err != nil {
			t.Fatalf("decoded table does not encode: %v", err)
		}
		r2, err := DecodeRoutes(enc)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the table: %+v -> %+v (%v)", r, r2, err)
		}
	})
}
