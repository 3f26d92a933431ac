package router

import (
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

// table is the immutable routing state the hot path reads through one
// atomic pointer load. Every change (discovery update, ejection,
// re-admission) builds a new endpoint and a new top-level map; nothing
// reachable from a published table is ever written again, except the
// per-instance atomic counters.
type table struct {
	endpoints map[string]*endpoint
}

type endpoint struct {
	name    string
	timeout time.Duration

	// slots is what untargeted requests choose from, with pick over their
	// effective weights.
	slots []*slot
	pick  alias

	// byVariant serves X-Amzn-SageMaker-Target-Variant. A known variant
	// with no available instance maps to an empty choice (503), an unknown
	// one is absent (400).
	byVariant map[string]*variantChoice

	shadows []*shadowSlot

	// wake lists, per targeted variant, the scale-from-zero slots that have
	// no instance now; wake[""] those with weight, for untargeted requests.
	// A request that finds no instance is held while they are woken
	// (scalezero.go). sleeping is wake[""] when untargeted requests still
	// have somewhere to go: those slots are woken without holding anyone,
	// so they get their share back.
	wake     map[string][]*slot
	sleeping []*slot

	// sessions finds the instance a session ID names: every instance of a
	// production variant Consul reports healthy, ejected ones included
	// (a session lives on one instance only).
	sessions map[instanceRef]sessionTarget

	em *variantMetrics // errors before a variant is chosen (variant="")
}

type variantChoice struct {
	slots []*slot
	pick  alias
}

// slot is one (generation, production variant) with its available
// instances.
type slot struct {
	variant    string
	generation int
	weight     float64 // effective weight, for tests and debugging
	// scaleFromZero: the routing table says the variant may be at zero
	// instances and is to be woken, not refused.
	scaleFromZero bool
	header        []string
	insts         []*instance
	vm            *variantMetrics
}

type shadowSlot struct {
	variant    string
	generation int
	threshold  uint64 // mirror when rand.Uint64() < threshold
	always     bool
	insts      []*instance
	sm         *shadowMetrics
	vm         *variantMetrics // instance gauges and ejections only
}

// instance is the router's live state for one discovered instance. It
// survives table rebuilds so in-flight counts, outlier state and idle
// connections carry over.
type instance struct {
	key        string
	endpoint   string
	id         string
	addr       string
	variant    string
	generation int
	shadow     bool
	pool       *connPool
	ref        instanceRef // what session IDs name (sessions.go)

	inflight atomic.Int64
	fails    atomic.Int32
	ejected  atomic.Bool

	// Guarded by Router.mu.
	ejections  int
	readmitted time.Time
	timer      *time.Timer
	retired    bool
}

func instanceKey(in Instance) string {
	s := "0"
	if in.Shadow {
		s = "1"
	}
	return in.ID + "|" + in.Address + "|" + in.Variant + "|" + strconv.Itoa(in.Generation) + "|" + s
}

type pickError int

const (
	pickOK pickError = iota
	pickNoInstance
	pickUnknownVariant
)

// choose picks a slot and an instance: a variant in proportion to its
// effective weight, then the less loaded of two random instances. It does
// not allocate.
func (e *endpoint) choose(target string) (*slot, *instance, pickError) {
	var s *slot
	if target == "" {
		if len(e.slots) == 0 {
			return nil, nil, pickNoInstance
		}
		s = e.slots[e.pick.pick()]
	} else {
		vc, ok := e.byVariant[target]
		if !ok {
			return nil, nil, pickUnknownVariant
		}
		if len(vc.slots) == 0 {
			return nil, nil, pickNoInstance
		}
		s = vc.slots[vc.pick.pick()]
	}
	return s, s.pickInstance(), pickOK
}

// chooseExcept is choose for a retry: any instance but not.
func (e *endpoint) chooseExcept(target string, not *instance) (*slot, *instance) {
	for range 4 {
		s, in, perr := e.choose(target)
		if perr != pickOK {
			return nil, nil
		}
		if in != not {
			return s, in
		}
	}
	// Few instances: scan for any other.
	slots := e.slots
	if target != "" {
		if vc := e.byVariant[target]; vc != nil {
			slots = vc.slots
		}
	}
	for _, s := range slots {
		for _, in := range s.insts {
			if in != not {
				return s, in
			}
		}
	}
	return nil, nil
}

// pickInstance is "power of two choices" on outstanding requests.
func (s *slot) pickInstance() *instance {
	n := uint64(len(s.insts))
	if n == 1 {
		return s.insts[0]
	}
	u := rand.Uint64()
	i := ((u >> 32) * n) >> 32
	j := (uint64(uint32(u)) * (n - 1)) >> 32
	if j >= i {
		j++
	}
	a, b := s.insts[i], s.insts[j]
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

func (s *shadowSlot) sampled() bool {
	return s.always || rand.Uint64() < s.threshold
}

// buildEndpoint compiles routes and live instances into an endpoint. It runs
// under Router.mu.
func (rt *Router) buildEndpoint(name string, routes *Routes, live map[string]*instance) *endpoint {
	timeout := time.Duration(routes.Timeout)
	if timeout <= 0 {
		timeout = rt.cfg.Timeout
	}
	e := &endpoint{
		name:      name,
		timeout:   timeout,
		byVariant: map[string]*variantChoice{},
		sessions:  map[instanceRef]sessionTarget{},
		em:        rt.m.endpointLevel(name),
	}

	type gv struct {
		gen     int
		variant string
		shadow  bool
	}
	byGV := map[gv][]*instance{}
	for _, in := range live {
		k := gv{in.generation, in.variant, in.shadow}
		byGV[k] = append(byGV[k], in)
	}
	for _, l := range byGV {
		// Deterministic order makes tests and debugging output stable.
		sort.Slice(l, func(i, j int) bool { return l[i].key < l[j].key })
	}

	// Instance counts and live series, per (endpoint, variant, generation).
	healthy := map[[3]string]int{}
	ejected := map[[3]string]int{}
	keep := map[[3]string]bool{seriesKey(name, "", 0): true}
	keepShadow := map[[3]string]bool{}

	var gsum float64
	for _, g := range routes.Generations {
		gsum += g.Weight
	}
	type cand struct {
		s         *slot
		genShare  float64
		degraded  bool // every instance ejected: only used when nothing else is left
		available bool
	}
	var all []cand
	for _, g := range routes.Generations {
		var vsum float64
		for _, v := range g.Variants {
			vsum += v.Weight
		}
		genShare := 0.0
		if gsum > 0 {
			genShare = g.Weight / gsum
		}
		for _, v := range g.Variants {
			sk := seriesKey(name, v.Name, g.Generation)
			keep[sk] = true
			s := &slot{
				variant:       v.Name,
				generation:    g.Generation,
				scaleFromZero: v.ScaleFromZero,
				header:        []string{v.Name},
				vm:            rt.m.variant(name, v.Name, g.Generation),
			}
			if vsum > 0 {
				s.weight = genShare * v.Weight / vsum
			}
			insts := byGV[gv{g.Generation, v.Name, false}]
			healthy[sk] += len(insts)
			for _, in := range insts {
				e.sessions[in.ref] = sessionTarget{s, in}
			}
			var up []*instance
			for _, in := range insts {
				if in.ejected.Load() {
					ejected[sk]++
				} else {
					up = append(up, in)
				}
			}
			c := cand{s: s, genShare: genShare, available: len(insts) > 0}
			if len(up) > 0 {
				s.insts = up
			} else if len(insts) > 0 {
				// All ejected: keep them for "panic" routing rather than
				// answering 503 when nothing better exists.
				s.insts = insts
				c.degraded = true
			}
			all = append(all, c)
			if _, ok := e.byVariant[v.Name]; !ok {
				e.byVariant[v.Name] = &variantChoice{}
			}
		}
	}

	for _, c := range all {
		if !c.s.scaleFromZero || c.available {
			continue
		}
		if e.wake == nil {
			e.wake = map[string][]*slot{}
		}
		e.wake[c.s.variant] = append(e.wake[c.s.variant], c.s)
		if c.s.weight > 0 {
			e.wake[""] = append(e.wake[""], c.s)
		}
	}

	// Untargeted: weighted over available, non-degraded slots with weight;
	// degraded ones only if nothing else is left.
	for _, degradedOK := range []bool{false, true} {
		var w []float64
		for _, c := range all {
			if c.available && c.s.weight > 0 && (degradedOK || !c.degraded) {
				e.slots = append(e.slots, c.s)
				w = append(w, c.s.weight)
			}
		}
		if len(e.slots) > 0 {
			e.pick = newAlias(w)
			break
		}
	}

	if len(e.slots) > 0 {
		e.sleeping = e.wake[""]
	}

	// Targeted: a target wins over weights, so weight-0 variants are
	// reachable; generations split by their weight, evenly if all are 0.
	for vname, vc := range e.byVariant {
		for _, degradedOK := range []bool{false, true} {
			var w []float64
			for _, c := range all {
				if c.s.variant == vname && c.available && (degradedOK || !c.degraded) {
					vc.slots = append(vc.slots, c.s)
					w = append(w, c.genShare)
				}
			}
			if len(vc.slots) > 0 {
				vc.pick = newAlias(w)
				break
			}
		}
	}

	for _, sh := range routes.Shadow {
		sk := seriesKey(name, sh.Variant, sh.Generation)
		keepShadow[sk] = true
		keep[sk] = true
		ss := &shadowSlot{
			variant:    sh.Variant,
			generation: sh.Generation,
			sm:         rt.m.shadow(name, sh.Variant, sh.Generation),
			vm:         rt.m.shadowInstances(name, sh.Variant, sh.Generation),
		}
		if sh.SamplingPercent >= 100 {
			ss.always = true
		} else {
			ss.threshold = uint64(sh.SamplingPercent / 100 * math.MaxUint64)
		}
		insts := byGV[gv{sh.Generation, sh.Variant, true}]
		healthy[sk] += len(insts)
		for _, in := range insts {
			if in.ejected.Load() {
				ejected[sk]++
			} else {
				ss.insts = append(ss.insts, in)
			}
		}
		if len(ss.insts) == 0 {
			ss.insts = insts
		}
		e.shadows = append(e.shadows, ss)
	}

	for k := range keep {
		if k[1] == "" {
			continue
		}
		gen, _ := strconv.Atoi(k[2])
		var vm *variantMetrics
		if keepShadow[k] {
			vm = rt.m.shadowInstances(name, k[1], gen)
		} else {
			vm = rt.m.variant(name, k[1], gen)
		}
		vm.healthy.Set(float64(healthy[k]))
		vm.ejected.Set(float64(ejected[k]))
	}
	rt.m.forget(name, keep, keepShadow)
	return e
}
