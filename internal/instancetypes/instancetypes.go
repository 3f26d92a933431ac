// Package instancetypes is the table that maps SageMaker instance types
// (ml.m5.large, …) to Nomad resources. The spec validator uses it to reject
// unknown types and the compiler to size task groups; it knows nothing else.
package instancetypes

import "sort"

// MHzPerVCPU converts vCPUs into Nomad CPU shares. Nomad schedules CPU in
// MHz; 1,000 MHz per vCPU keeps the numbers readable and is conservative on
// modern cores (2.5–3.5 GHz), so a node is not over-packed.
const MHzPerVCPU = 1000

// Type is one instance type.
type Type struct {
	Name     string
	Family   string // "general", "compute", "memory", "accelerated"
	VCPU     int
	MemoryMB int
	GPUs     int
	GPUModel string // as Nomad's nvidia device plugin reports ${device.model}
}

// CPUMHz is the Nomad CPU reservation for the type.
func (t Type) CPUMHz() int { return t.VCPU * MHzPerVCPU }

func gib(n int) int { return n * 1024 }

var table = []Type{
	// General purpose.
	{"ml.t3.medium", "general", 2, gib(4), 0, ""},
	{"ml.t3.large", "general", 2, gib(8), 0, ""},
	{"ml.t3.xlarge", "general", 4, gib(16), 0, ""},
	{"ml.t3.2xlarge", "general", 8, gib(32), 0, ""},
	{"ml.m5.large", "general", 2, gib(8), 0, ""},
	{"ml.m5.xlarge", "general", 4, gib(16), 0, ""},
	{"ml.m5.2xlarge", "general", 8, gib(32), 0, ""},
	{"ml.m5.4xlarge", "general", 16, gib(64), 0, ""},
	{"ml.m5.12xlarge", "general", 48, gib(192), 0, ""},
	{"ml.m5.24xlarge", "general", 96, gib(384), 0, ""},
	{"ml.m6i.large", "general", 2, gib(8), 0, ""},
	{"ml.m6i.xlarge", "general", 4, gib(16), 0, ""},
	{"ml.m6i.2xlarge", "general", 8, gib(32), 0, ""},
	{"ml.m6i.4xlarge", "general", 16, gib(64), 0, ""},
	// Compute optimised.
	{"ml.c5.large", "compute", 2, gib(4), 0, ""},
	{"ml.c5.xlarge", "compute", 4, gib(8), 0, ""},
	{"ml.c5.2xlarge", "compute", 8, gib(16), 0, ""},
	{"ml.c5.4xlarge", "compute", 16, gib(32), 0, ""},
	{"ml.c5.9xlarge", "compute", 36, gib(72), 0, ""},
	{"ml.c5.18xlarge", "compute", 72, gib(144), 0, ""},
	{"ml.c6i.large", "compute", 2, gib(4), 0, ""},
	{"ml.c6i.xlarge", "compute", 4, gib(8), 0, ""},
	{"ml.c6i.2xlarge", "compute", 8, gib(16), 0, ""},
	{"ml.c6i.4xlarge", "compute", 16, gib(32), 0, ""},
	// Memory optimised.
	{"ml.r5.large", "memory", 2, gib(16), 0, ""},
	{"ml.r5.xlarge", "memory", 4, gib(32), 0, ""},
	{"ml.r5.2xlarge", "memory", 8, gib(64), 0, ""},
	{"ml.r5.4xlarge", "memory", 16, gib(128), 0, ""},
	{"ml.r5.12xlarge", "memory", 48, gib(384), 0, ""},
	{"ml.r5.24xlarge", "memory", 96, gib(768), 0, ""},
	// Accelerated (NVIDIA).
	{"ml.g4dn.xlarge", "accelerated", 4, gib(16), 1, "Tesla T4"},
	{"ml.g4dn.2xlarge", "accelerated", 8, gib(32), 1, "Tesla T4"},
	{"ml.g4dn.4xlarge", "accelerated", 16, gib(64), 1, "Tesla T4"},
	{"ml.g4dn.8xlarge", "accelerated", 32, gib(128), 1, "Tesla T4"},
	{"ml.g4dn.12xlarge", "accelerated", 48, gib(192), 4, "Tesla T4"},
	{"ml.g4dn.16xlarge", "accelerated", 64, gib(256), 1, "Tesla T4"},
	{"ml.g5.xlarge", "accelerated", 4, gib(16), 1, "NVIDIA A10G"},
	{"ml.g5.2xlarge", "accelerated", 8, gib(32), 1, "NVIDIA A10G"},
	{"ml.g5.4xlarge", "accelerated", 16, gib(64), 1, "NVIDIA A10G"},
	{"ml.g5.8xlarge", "accelerated", 32, gib(128), 1, "NVIDIA A10G"},
	{"ml.g5.12xlarge", "accelerated", 48, gib(192), 4, "NVIDIA A10G"},
	{"ml.g5.24xlarge", "accelerated", 96, gib(384), 4, "NVIDIA A10G"},
	{"ml.g5.48xlarge", "accelerated", 192, gib(768), 8, "NVIDIA A10G"},
	{"ml.p3.2xlarge", "accelerated", 8, gib(61), 1, "Tesla V100-SXM2-16GB"},
	{"ml.p3.8xlarge", "accelerated", 32, gib(244), 4, "Tesla V100-SXM2-16GB"},
	{"ml.p3.16xlarge", "accelerated", 64, gib(488), 8, "Tesla V100-SXM2-16GB"},
	{"ml.p4d.24xlarge", "accelerated", 96, gib(1152), 8, "NVIDIA A100-SXM4-40GB"},
}

// Lookup returns the type with that name.
func Lookup(name string) (Type, bool) {
	for _, t := range table {
		if t.Name == name {
			return t, true
		}
	}
	return Type{}, false
}

// All returns every type, sorted by family then size.
func All() []Type {
	out := append([]Type(nil), table...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Family < out[j].Family })
	return out
}

// Names returns every type name in table order, for suggestions.
func Names() []string {
	out := make([]string, len(table))
	for i, t := range table {
		out[i] = t.Name
	}
	return out
}
