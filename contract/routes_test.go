package contract

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRoutesGoldenRoundTrip(t *testing.T) {
	r := &Routes{
		Version:  1,
		Endpoint: "churn",
		Generations: []Generation{
			{Generation: 3, Weight: 0.9, Variants: []Variant{{Name: "a", Weight: 0.8}, {Name: "b", Weight: 0.2}}},
			{Generation: 4, Weight: 0.1, Variants: []Variant{{Name: "a", Weight: 1, ScaleFromZero: true}}},
		},
		Shadow:  []Shadow{{Variant: "s", Generation: 4, SamplingPercent: 10}},
		Timeout: Duration(time.Minute),
	}
	b, err := EncodeRoutes(r)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("testdata/routes-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(b), bytes.TrimSpace(golden)) {
		t.Errorf("encoding changed; the control plane and deployed routers depend on it:\n%s", b)
	}
	back, err := DecodeRoutes(golden)
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(back.Timeout) != time.Minute || len(back.Generations) != 2 || back.Shadow[0].SamplingPercent != 10 ||
		back.Generations[0].Variants[0].ScaleFromZero || !back.Generations[1].Variants[0].ScaleFromZero {
		t.Errorf("decoded %+v", back)
	}
	ew := back.EffectiveWeights()
	want := []EffectiveWeight{{3, "a", 0.72}, {3, "b", 0.18}, {4, "a", 0.1}}
	for i := range want {
		if ew[i].Generation != want[i].Generation || ew[i].Variant != want[i].Variant || abs(ew[i].Weight-want[i].Weight) > 1e-12 {
			t.Errorf("effective weight %d: %+v, want %+v", i, ew[i], want[i])
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestDecodeRoutesRejects(t *testing.T) {
	cases := map[string]string{
		"not json":           `{`,
		"no version":         `{"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}]}`,
		"future version":     `{"version":2,"endpoint":"e"}`,
		"bad endpoint":       `{"version":1,"endpoint":"e_1","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}]}`,
		"no generations":     `{"version":1,"endpoint":"e","generations":[]}`,
		"generation 0":       `{"version":1,"endpoint":"e","generations":[{"generation":0,"weight":1,"variants":[{"name":"a","weight":1}]}]}`,
		"duplicate gen":      `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]},{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}]}`,
		"negative weight":    `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":-1,"variants":[{"name":"a","weight":1}]}]}`,
		"no variants":        `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[]}]}`,
		"duplicate variant":  `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1},{"name":"a","weight":1}]}]}`,
		"bad variant name":   `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"-a","weight":1}]}]}`,
		"shadow collides":    `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}],"shadow":[{"variant":"a","generation":1,"sampling_percent":5}]}`,
		"shadow sampling 0":  `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}],"shadow":[{"variant":"s","generation":1,"sampling_percent":0}]}`,
		"shadow over 100":    `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}],"shadow":[{"variant":"s","generation":1,"sampling_percent":101}]}`,
		"bad timeout":        `{"version":1,"endpoint":"e","timeout":"soon","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}]}`,
		"timeout too long":   `{"version":1,"endpoint":"e","timeout":"2h","generations":[{"generation":1,"weight":1,"variants":[{"name":"a","weight":1}]}]}`,
		"weight not numeric": `{"version":1,"endpoint":"e","generations":[{"generation":1,"weight":"1","variants":[{"name":"a","weight":1}]}]}`,
	}
	for name, in := range cases {
		if _, err := DecodeRoutes([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Unknown fields are allowed within a version.
	ok := `{"version":1,"endpoint":"e","note":"x","generations":[{"generation":1,"weight":0,"variants":[{"name":"a","weight":0,"future":true}]}]}`
	if _, err := DecodeRoutes([]byte(ok)); err != nil {
		t.Errorf("unknown fields: %v", err)
	}
	// Validate reports every problem at once.
	err := (&Routes{Version: 1, Endpoint: "-", Generations: []Generation{{Generation: 0, Weight: -1}}}).Validate()
	if err == nil || strings.Count(err.Error(), "\n") < 3 {
		t.Errorf("want several problems joined, got %v", err)
	}
}

func TestParseTags(t *testing.T) {
	got, ok := ParseTags([]string{"model=m1", "variant=a", "generation=12", "other"})
	if !ok || got != (InstanceTags{Variant: "a", Generation: 12, Model: "m1"}) {
		t.Errorf("got %+v %v", got, ok)
	}
	if got, ok := ParseTags([]string{"variant=s", "generation=1", "shadow=true"}); !ok || !got.Shadow {
		t.Error("shadow tag not read")
	}
	for _, tags := range [][]string{{"variant=a"}, {"generation=1"}, {"variant=a", "generation=x"}, {"variant=a", "generation=0"}, {"variant=_", "generation=1"}, {"variant=a", "generation=+1"}} {
		if _, ok := ParseTags(tags); ok {
			t.Errorf("%v accepted", tags)
		}
	}
}

// The compiler formats, routers parse: every instance the compiler can
// describe reads back unchanged.
func TestTagsRoundTrip(t *testing.T) {
	for _, in := range []InstanceTags{
		{Variant: "a", Generation: 1, Model: "m"},
		{Variant: "shadow-b", Generation: 123456789, Model: "m-2", Shadow: true},
	} {
		got, ok := ParseTags(in.Format())
		if !ok || got != in {
			t.Errorf("%+v -> %v -> %+v (%v)", in, in.Format(), got, ok)
		}
	}
}

func TestJobIDRoundTrip(t *testing.T) {
	for _, c := range []struct {
		ep  string
		gen int
	}{{"churn", 1}, {"churn-gold", 12}, {"a", 999999999}, {"g1", 3}} {
		id := JobID(c.ep, c.gen)
		ep, gen, ok := ParseJobID(id)
		if !ok || ep != c.ep || gen != c.gen {
			t.Errorf("%s -> %q %d %v", id, ep, gen, ok)
		}
		if !globMatch(JobIDGlob(c.ep), id) {
			t.Errorf("glob %s does not match %s", JobIDGlob(c.ep), id)
		}
	}
	// One endpoint's glob never admits another's jobs.
	if globMatch(JobIDGlob("churn"), JobID("churn-gold", 1)) {
		t.Error("churn's glob admits churn-gold")
	}
	for _, bad := range []string{"serai-churn", "serai-.g1", "serai-churn.g0", "serai-churn.gx", "other-churn.g1", "serai-churn.g1x", "serai-churn.g01x"} {
		if _, _, ok := ParseJobID(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// globMatch is Vault's glob: "*" only, at the end here.
func globMatch(glob, s string) bool {
	prefix, star := strings.CutSuffix(glob, "*")
	if !star {
		return glob == s
	}
	return strings.HasPrefix(s, prefix)
}

// TestServiceMetaTrust: the meta the compiler writes is the meta routers
// trust, and nothing else is: meta of another job, generation or endpoint,
// or none at all.
func TestServiceMetaTrust(t *testing.T) {
	if ok, why := TrustedMeta("churn", 3, ServiceMeta("churn", 3)); !ok {
		t.Fatalf("compiled meta not trusted: %s", why)
	}
	other := ServiceMeta("churn", 3)
	other[ServiceMetaJobID] = JobID("churn", 4)
	for name, meta := range map[string]map[string]string{
		"none":             nil,
		"other generation": ServiceMeta("churn", 4),
		"other endpoint":   ServiceMeta("churn-x", 3),
		"other job":        other,
		"only job ID":      {ServiceMetaJobID: JobID("churn", 3)},
	} {
		if ok, _ := TrustedMeta("churn", 3, meta); ok {
			t.Errorf("%s: trusted", name)
		}
	}
	for k := range ServiceMeta("e", 1) {
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				t.Errorf("meta key %q: Consul allows only letters, digits, _ and -", k)
			}
		}
	}
}

// TestTrustInstance: an instance is trusted only with valid tags, the
// meta of the generation they name, and a check of its own.
func TestTrustInstance(t *testing.T) {
	tags := InstanceTags{Variant: "a", Generation: 2, Model: "m"}.Format()
	if got, why, ok := TrustInstance("e", tags, ServiceMeta("e", 2), 1); !ok || got.Variant != "a" || got.Generation != 2 {
		t.Fatalf("genuine instance: %+v %q %v", got, why, ok)
	}
	for name, c := range map[string]struct {
		tags   []string
		meta   map[string]string
		checks int
	}{
		"no checks":        {tags, ServiceMeta("e", 2), 0},
		"no meta":          {tags, nil, 1},
		"other generation": {tags, ServiceMeta("e", 1), 1},
		"no tags":          {nil, ServiceMeta("e", 2), 1},
	} {
		if _, why, ok := TrustInstance("e", c.tags, c.meta, c.checks); ok || why == "" {
			t.Errorf("%s: trusted (%q)", name, why)
		}
	}
}
