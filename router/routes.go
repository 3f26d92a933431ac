package router

import "github.com/seraihq/serai/contract"

// The routing table's format and codec belong to package contract, which
// the control plane writes with and routers read with. These aliases keep
// the router's API (and router/client's callers) unchanged.
type (
	Routes          = contract.Routes
	Generation      = contract.Generation
	Variant         = contract.Variant
	Shadow          = contract.Shadow
	Duration        = contract.Duration
	EffectiveWeight = contract.EffectiveWeight
)

// Names and limits from the contract, re-exported for router users.
const (
	RoutesVersion     = contract.RoutesVersion
	RoutesKeyPrefix   = contract.RoutesKeyPrefix
	RouterServiceName = contract.RouterServiceName
	MaxTimeout        = contract.MaxTimeout
	DefaultTimeout    = contract.DefaultTimeout
)

// EncodeRoutes validates r and returns its canonical JSON.
func EncodeRoutes(r *Routes) ([]byte, error) { return contract.EncodeRoutes(r) }

// DecodeRoutes parses and validates a routing table.
func DecodeRoutes(b []byte) (*Routes, error) { return contract.DecodeRoutes(b) }

// ServiceName is the Consul service of endpoint's model instances.
func ServiceName(endpoint string) string { return contract.ServiceName(endpoint) }
