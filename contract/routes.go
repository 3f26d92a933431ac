package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/seraihq/serai/internal/names"
)

// The routing table of one endpoint lives in Consul KV at
// RoutesKeyPrefix+<endpoint>. The control plane is its only writer; routers
// only read it. Both sides go through Encode and Decode so that a table the
// control plane can write is a table every router accepts.
//
// Format, version 1 (JSON):
//
//	{
//	  "version": 1,
//	  "endpoint": "churn",
//	  "generations": [
//	    {"generation": 3, "weight": 0.9, "variants": [{"name": "a", "weight": 0.8}, {"name": "b", "weight": 0.2}]},
//	    {"generation": 4, "weight": 0.1, "variants": [{"name": "a", "weight": 1, "scale_from_zero": true}]}
//	  ],
//	  "shadow": [{"variant": "s", "generation": 4, "sampling_percent": 10}],
//	  "timeout": "60s"
//	}
//
//   - version: must be 1. A router refuses versions it does not know and keeps
//     serving the endpoint's previous table.
//   - endpoint: must equal the key's last element; guards against a table
//     copied under the wrong key.
//   - generations: the deployment generations that take traffic. A
//     generation's share is weight/sum(generation weights); inside it a
//     variant's share is weight/sum(variant weights). The effective weight of
//     (generation, variant) is the product. Weights are non-negative and
//     relative; 0 means no traffic unless a request targets the variant.
//   - scale_from_zero (on a variant): the variant autoscales with
//     min_capacity 0, so having no instance is normal for it. A router
//     holds a request that finds no instance for it and writes its wake key
//     (wake.go) instead of answering 503. Absent means false.
//   - shadow: variants that receive a mirrored sample (sampling_percent of
//     requests, 0 < p <= 100) whose answers are discarded.
//   - timeout: model timeout as a Go duration; empty means the router's
//     default (60s). At most 1h.
//
// Instances are matched to entries through their Consul tags: variant=<v>,
// generation=<g>, and shadow=true for shadow variants. Instances of a
// (generation, variant) that the table does not name take no traffic.
// Generation g of the endpoint runs as Nomad job JobID(endpoint, g); the
// table lists that job by listing g, and a router uses an instance only
// when its service meta names that job and generation (TrustedMeta) and
// it has a health check of its own that passes.
//
// Compatibility: fields may be added to version 1 (older routers ignore
// them); any change that an older router would misread bumps the version.

// RoutesVersion is the only routing table version routers understand.
const RoutesVersion = 1

// RoutesKeyPrefix is the Consul KV prefix holding one routing table per
// endpoint.
const RoutesKeyPrefix = "serai/routes/"

// MaxTimeout bounds the per-endpoint model timeout a routing table may ask
// for: a longer one would let a stuck model hold router connections for
// hours.
const MaxTimeout = time.Hour

// DefaultTimeout is SageMaker's real-time invocation timeout.
const DefaultTimeout = 60 * time.Second

// RoutesKey is the Consul KV key of endpoint's routing table.
func RoutesKey(endpoint string) string { return RoutesKeyPrefix + endpoint }

// Routes is the routing table of one endpoint.
type Routes struct {
	Version     int          `json:"version"`
	Endpoint    string       `json:"endpoint"`
	Generations []Generation `json:"generations"`
	Shadow      []Shadow     `json:"shadow,omitempty"`
	Timeout     Duration     `json:"timeout,omitempty"`
}

// Generation is one deployment generation (one Nomad job) and its share of
// the endpoint's traffic.
type Generation struct {
	Generation int       `json:"generation"`
	Weight     float64   `json:"weight"`
	Variants   []Variant `json:"variants"`
}

// Variant is a production variant's share of its generation's traffic.
type Variant struct {
	Name          string  `json:"name"`
	Weight        float64 `json:"weight"`
	ScaleFromZero bool    `json:"scale_from_zero,omitempty"`
}

// Shadow mirrors a sample of the endpoint's requests to a shadow variant.
type Shadow struct {
	Variant         string  `json:"variant"`
	Generation      int     `json:"generation"`
	SamplingPercent float64 `json:"sampling_percent"`
}

// Duration is a time.Duration written as a Go duration string ("60s").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a Go duration string; "" means zero.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"60s\": %w", err)
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Validate checks everything a router relies on. It returns all problems
// found, joined, so the control plane can report them at once.
func (r *Routes) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if r.Version != RoutesVersion {
		bad("version %d is not supported (want %d)", r.Version, RoutesVersion)
	}
	if !names.Valid(r.Endpoint) {
		bad("endpoint %q is not a valid name", r.Endpoint)
	}
	if len(r.Generations) == 0 {
		bad("at least one generation is required")
	}
	type gv struct {
		gen     int
		variant string
	}
	production := map[gv]bool{}
	all := map[string]bool{}
	gens := map[int]bool{}
	for i, g := range r.Generations {
		if g.Generation <= 0 {
			bad("generations[%d]: generation must be a positive integer", i)
		}
		if gens[g.Generation] {
			bad("generations[%d]: generation %d listed twice", i, g.Generation)
		}
		gens[g.Generation] = true
		if !validWeight(g.Weight) {
			bad("generations[%d]: weight must be a finite number >= 0", i)
		}
		if len(g.Variants) == 0 {
			bad("generations[%d]: at least one variant is required", i)
		}
		seen := map[string]bool{}
		for j, v := range g.Variants {
			if !names.Valid(v.Name) {
				bad("generations[%d].variants[%d]: %q is not a valid variant name", i, j, v.Name)
			}
			if seen[v.Name] {
				bad("generations[%d].variants[%d]: variant %q listed twice", i, j, v.Name)
			}
			seen[v.Name] = true
			all[v.Name] = true
			production[gv{g.Generation, v.Name}] = true
			if !validWeight(v.Weight) {
				bad("generations[%d].variants[%d]: weight must be a finite number >= 0", i, j)
			}
		}
	}
	shadows := map[gv]bool{}
	for i, s := range r.Shadow {
		if !names.Valid(s.Variant) {
			bad("shadow[%d]: %q is not a valid variant name", i, s.Variant)
		}
		if s.Generation <= 0 {
			bad("shadow[%d]: generation must be a positive integer", i)
		}
		if all[s.Variant] {
			bad("shadow[%d]: %q is also a production variant", i, s.Variant)
		}
		if shadows[gv{s.Generation, s.Variant}] {
			bad("shadow[%d]: variant %q of generation %d listed twice", i, s.Variant, s.Generation)
		}
		shadows[gv{s.Generation, s.Variant}] = true
		if !(s.SamplingPercent > 0 && s.SamplingPercent <= 100) {
			bad("shadow[%d]: sampling_percent must be in (0, 100]", i)
		}
	}
	if r.Timeout < 0 || time.Duration(r.Timeout) > MaxTimeout {
		bad("timeout must be between 0 (router default) and %s", MaxTimeout)
	}
	return errors.Join(errs...)
}

func validWeight(w float64) bool { return w >= 0 && !math.IsInf(w, 0) && !math.IsNaN(w) }

// EncodeRoutes validates r and returns its canonical JSON.
func EncodeRoutes(r *Routes) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("invalid routing table: %w", err)
	}
	return json.MarshalIndent(r, "", "  ")
}

// DecodeRoutes parses and validates a routing table. Unknown fields are
// ignored so a newer control plane can add optional ones within a version.
func DecodeRoutes(b []byte) (*Routes, error) {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("routing table is not valid JSON: %w", err)
	}
	if probe.Version == nil {
		return nil, errors.New("routing table has no version")
	}
	if *probe.Version != RoutesVersion {
		return nil, fmt.Errorf("routing table version %d is not supported (this router reads version %d)", *probe.Version, RoutesVersion)
	}
	var r Routes
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("routing table: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("invalid routing table: %w", err)
	}
	if len(r.Shadow) == 0 {
		// "shadow": [] and no shadow are one table; the encoder omits both.
		r.Shadow = nil
	}
	return &r, nil
}

// EffectiveWeight is the share of untargeted traffic one production variant
// of one generation receives when every variant has healthy instances.
type EffectiveWeight struct {
	Generation int
	Variant    string
	Weight     float64 // in [0, 1]; all entries sum to 1, or all are 0
}

// EffectiveWeights multiplies generation and variant shares out, in table
// order. It assumes a valid table.
func (r *Routes) EffectiveWeights() []EffectiveWeight {
	var out []EffectiveWeight
	var gsum float64
	for _, g := range r.Generations {
		gsum += g.Weight
	}
	for _, g := range r.Generations {
		var vsum float64
		for _, v := range g.Variants {
			vsum += v.Weight
		}
		for _, v := range g.Variants {
			w := 0.0
			if gsum > 0 && vsum > 0 {
				w = g.Weight / gsum * v.Weight / vsum
			}
			out = append(out, EffectiveWeight{Generation: g.Generation, Variant: v.Name, Weight: w})
		}
	}
	return out
}

// VariantNames lists the production variant names of all generations,
// sorted and without duplicates.
func (r *Routes) VariantNames() []string {
	set := map[string]bool{}
	for _, g := range r.Generations {
		for _, v := range g.Variants {
			set[v.Name] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
